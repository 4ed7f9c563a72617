import { hkdfSync, randomUUID } from 'node:crypto';
import type Database from 'better-sqlite3';
import { openSealed, seal } from '../store/index.js';
import type { BreakGlassGrant, BreakGlassGrants } from './types.js';

/** Longest accepted reason, in characters (code points), after trimming. */
export const MAX_REASON_CHARS = 1000;

const PATIENT_ID = /^[A-Za-z0-9\-.]{1,64}$/;
const PRACTITIONER = /^Practitioner\/[A-Za-z0-9\-.]{1,64}$/;
// Control characters other than tab, line feed and carriage return.
const CONTROL = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/;

/** A rejected break-the-glass input (reason, patient id, user); the HTTP operation answers 400. */
export class BreakGlassInputError extends Error {
  override name = 'BreakGlassInputError';
}

/** The reason as stored: trimmed, 1..1000 characters, no control characters but tab and newlines. */
export function normalizeReason(reason: unknown): string {
  if (typeof reason !== 'string') throw new BreakGlassInputError('a reason (string) is required to break the glass');
  const r = reason.trim();
  if (r === '') throw new BreakGlassInputError('the reason must not be empty: say why emergency access is needed');
  if ([...r].length > MAX_REASON_CHARS) throw new BreakGlassInputError(`the reason must be at most ${MAX_REASON_CHARS} characters`);
  if (CONTROL.test(r)) throw new BreakGlassInputError('the reason must not contain control characters');
  return r;
}

/** What was read under a grant, as BreakGlassGrants.recordAccess receives it. */
export interface BreakGlassAccessWhat {
  resources?: string[];
  query?: string;
}

/** One recorded use of a grant. */
export interface BreakGlassAccess {
  /** Epoch ms. */
  at: number;
  interaction: string;
  what: BreakGlassAccessWhat;
}

/** A grant with everything read under it (newest first), as the patient sees it. */
export interface BreakGlassRecord extends BreakGlassGrant {
  accesses: BreakGlassAccess[];
}

interface GrantRow {
  id: string;
  account_id: string;
  practitioner: string;
  patient_id: string;
  reason: string;
  granted_at: number;
  expires_at: number;
}

interface AccessRow {
  grant_id: string;
  at: number;
  interaction: string;
  what: string;
}

const GRANT_COLS = 'g.id, g.account_id, g.practitioner, g.patient_id, g.reason, g.granted_at, g.expires_at';

/**
 * The free text of break-the-glass records (the reason, what was searched) is sealed at rest
 * (AES-256-GCM under a key derived from the master key, bound to its grant), as patient data is:
 * a reason names the emergency. Rows written before they were sealed are read as they are and
 * sealed when the store opens.
 */
const SEALED = 'sealed:v1:';

/** The key that seals break-the-glass records, derived from the key-encryption key. */
export function breakGlassSealKey(kek: Buffer): Buffer {
  return Buffer.from(hkdfSync('sha256', kek, Buffer.alloc(0), 'custos/break-glass-records/v1', 32));
}

class RecordSeal {
  constructor(private readonly key: Buffer | undefined) {}

  seal(text: string, grantId: string): string {
    return this.key ? SEALED + seal(this.key, Buffer.from(text, 'utf8'), `break-glass/${grantId}`).toString('base64') : text;
  }

  open(stored: string, grantId: string): string {
    if (!stored.startsWith(SEALED) || !this.key) return stored;
    return openSealed(this.key, Buffer.from(stored.slice(SEALED.length), 'base64'), `break-glass/${grantId}`).toString('utf8');
  }
}

function parseWhat(json: string): BreakGlassAccessWhat {
  try {
    const v = JSON.parse(json) as BreakGlassAccessWhat;
    return v && typeof v === 'object' ? v : {};
  } catch {
    return {};
  }
}

/**
 * Break-the-glass grants and what was read under them, in the SMART auth DB (tables
 * break_glass_grant and break_glass_access, created by openAuthDb). Until the audit-trail issue
 * turns them into anchored AuditEvents, these tables are the record the patient sees.
 *
 * `activeFor` reads the table on every call (one prepared statement, no cache), so a grant that
 * runs out, or a user who is disabled or loses the break-glass flag, stops counting on the next
 * request.
 */
export class BreakGlassStore implements BreakGlassGrants {
  /** Grant duration in milliseconds. */
  readonly durationMs: number;
  private readonly insertGrant: Database.Statement;
  private readonly selectActive: Database.Statement;
  private readonly insertAccess: Database.Statement;
  private readonly selectForPatient: Database.Statement;
  private readonly selectAccessesForPatient: Database.Statement;

  /**
   * @param db the SMART auth DB (openAuthDb), which holds the tables
   * @param minutes how long a grant lasts (BREAK_GLASS_MINUTES)
   * @param now the clock (epoch ms) for grants and access records; Date.now by default
   */
  private readonly sealer: RecordSeal;

  constructor(db: Database.Database, readonly minutes: number, readonly now: () => number = Date.now, sealKey?: Buffer) {
    this.sealer = new RecordSeal(sealKey);
    if (typeof minutes !== 'number' || !Number.isFinite(minutes) || minutes <= 0) {
      throw new RangeError(`break-the-glass minutes must be a positive number, got ${String(minutes)}`);
    }
    this.durationMs = Math.round(minutes * 60_000);
    this.insertGrant = db.prepare(
      'INSERT INTO break_glass_grant (id, account_id, practitioner, patient_id, reason, granted_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
    );
    // Only while the user account is still enabled and still flagged for break-the-glass.
    this.selectActive = db.prepare(
      `SELECT ${GRANT_COLS} FROM break_glass_grant g JOIN user_account u ON u.account_id = g.account_id
       WHERE g.account_id = ? AND g.expires_at > ? AND u.break_glass = 1 AND u.disabled_at IS NULL
       ORDER BY g.granted_at DESC, g.id`,
    );
    this.insertAccess = db.prepare('INSERT INTO break_glass_access (grant_id, at, interaction, what) VALUES (?, ?, ?, ?)');
    this.selectForPatient = db.prepare(`SELECT ${GRANT_COLS} FROM break_glass_grant g WHERE g.patient_id = ? ORDER BY g.granted_at DESC, g.rowid DESC`);
    this.selectAccessesForPatient = db.prepare(
      `SELECT a.grant_id, a.at, a.interaction, a.what FROM break_glass_access a JOIN break_glass_grant g ON g.id = a.grant_id
       WHERE g.patient_id = ? ORDER BY a.at DESC, a.rowid DESC`,
    );
    if (sealKey) this.sealOldRows(db);
  }

  /** Seals the records written in the clear by earlier versions, then vacuums so no clear copy is left in free pages. */
  private sealOldRows(db: Database.Database): void {
    const like = `${SEALED}%`;
    const grants = db.prepare('SELECT id, reason FROM break_glass_grant WHERE reason NOT LIKE ?').all(like) as Array<{ id: string; reason: string }>;
    const accesses = db.prepare('SELECT rowid, grant_id, what FROM break_glass_access WHERE what NOT LIKE ?').all(like) as Array<{ rowid: number; grant_id: string; what: string }>;
    if (grants.length === 0 && accesses.length === 0) return;
    db.transaction(() => {
      const g = db.prepare('UPDATE break_glass_grant SET reason = ? WHERE id = ?');
      for (const r of grants) g.run(this.sealer.seal(r.reason, r.id), r.id);
      const a = db.prepare('UPDATE break_glass_access SET what = ? WHERE rowid = ?');
      for (const r of accesses) a.run(this.sealer.seal(r.what, r.grant_id), r.rowid);
    })();
    db.exec('VACUUM');
  }

  private toGrant(r: GrantRow): BreakGlassGrant {
    return {
      id: r.id, userId: r.account_id, practitioner: r.practitioner, patientId: r.patient_id,
      reason: this.sealer.open(r.reason, r.id), grantedAt: r.granted_at, expiresAt: r.expires_at,
    };
  }

  /**
   * Grants `user` (a practitioner user) read access to Patient/`patientId` for `minutes` from now.
   * The caller checks that the user may break the glass and that the patient exists.
   * Throws BreakGlassInputError for a bad reason, patient id or user.
   */
  grant(user: { accountId: string; fhirUser: string }, patientId: string, reason: unknown): BreakGlassGrant {
    if (!user || typeof user.accountId !== 'string' || user.accountId === '') throw new BreakGlassInputError('a user account is required');
    if (typeof user.fhirUser !== 'string' || !PRACTITIONER.test(user.fhirUser)) {
      throw new BreakGlassInputError(`only a practitioner user can break the glass, not ${JSON.stringify(user.fhirUser)}`);
    }
    if (typeof patientId !== 'string' || !PATIENT_ID.test(patientId)) throw new BreakGlassInputError(`invalid patient id ${JSON.stringify(patientId)}`);
    const text = normalizeReason(reason);
    const grantedAt = this.now();
    const g: BreakGlassGrant = {
      id: randomUUID(), userId: user.accountId, practitioner: user.fhirUser, patientId,
      reason: text, grantedAt, expiresAt: grantedAt + this.durationMs,
    };
    this.insertGrant.run(g.id, g.userId, g.practitioner, g.patientId, this.sealer.seal(g.reason, g.id), g.grantedAt, g.expiresAt);
    return g;
  }

  activeFor(userId: string, now: number): BreakGlassGrant[] {
    return (this.selectActive.all(userId, now) as GrantRow[]).map((r) => this.toGrant(r));
  }

  /** Throws when `grantId` is not a grant (foreign key): a read under break-the-glass must not go unrecorded. */
  recordAccess(grantId: string, what: { interaction: string; resources?: string[]; query?: string }): void {
    const stored: BreakGlassAccessWhat = {};
    if (what.resources !== undefined) stored.resources = [...what.resources];
    if (what.query !== undefined) stored.query = what.query;
    this.insertAccess.run(grantId, this.now(), what.interaction, this.sealer.seal(JSON.stringify(stored), grantId));
  }

  /** Every grant for Patient/`patientId` (expired ones too) with what was read under it, newest first. */
  forPatient(patientId: string): BreakGlassRecord[] {
    const records = (this.selectForPatient.all(patientId) as GrantRow[]).map((r): BreakGlassRecord => ({ ...this.toGrant(r), accesses: [] }));
    const byId = new Map(records.map((r) => [r.id, r]));
    for (const a of this.selectAccessesForPatient.all(patientId) as AccessRow[]) {
      byId.get(a.grant_id)?.accesses.push({ at: a.at, interaction: a.interaction, what: parseWhat(this.sealer.open(a.what, a.grant_id)) });
    }
    return records;
  }
}
