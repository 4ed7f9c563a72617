import { randomBytes } from 'node:crypto';
import type Database from 'better-sqlite3';

export interface LaunchContext { patient?: string; encounter?: string; fhirUser?: string }

/**
 * SMART launch context: EHR launches (an opaque `launch` id the server mints for a patient)
 * and, per authorization grant, the context the tokens of that grant carry.
 */
export class LaunchContexts {
  private readonly insertLaunch;
  private readonly getLaunch;
  private readonly upsertGrant;
  private readonly getGrant;

  constructor(db: Database.Database) {
    db.exec(`CREATE TABLE IF NOT EXISTS grant_context (grant_id TEXT PRIMARY KEY, patient TEXT, encounter TEXT, fhir_user TEXT, expires_at INTEGER NOT NULL)`);
    this.insertLaunch = db.prepare('INSERT INTO launch_context (id, patient, encounter, created_at, expires_at) VALUES (?, ?, ?, ?, ?)');
    this.getLaunch = db.prepare('SELECT patient, encounter FROM launch_context WHERE id = ? AND expires_at > ?');
    this.upsertGrant = db.prepare(`INSERT INTO grant_context (grant_id, patient, encounter, fhir_user, expires_at) VALUES (?, ?, ?, ?, ?)
      ON CONFLICT (grant_id) DO UPDATE SET patient = excluded.patient, encounter = excluded.encounter, fhir_user = excluded.fhir_user, expires_at = excluded.expires_at`);
    this.getGrant = db.prepare('SELECT patient, encounter, fhir_user FROM grant_context WHERE grant_id = ? AND expires_at > ?');
  }

  /** Mints an EHR launch id for a patient (valid `ttlSeconds`). */
  mint(ctx: { patient: string; encounter?: string }, ttlSeconds = 3600): string {
    const id = randomBytes(18).toString('base64url');
    const now = Date.now();
    this.insertLaunch.run(id, ctx.patient, ctx.encounter ?? null, now, now + ttlSeconds * 1000);
    return id;
  }

  find(id: string): LaunchContext | undefined {
    const r = this.getLaunch.get(id, Date.now()) as { patient: string | null; encounter: string | null } | undefined;
    return r ? { patient: r.patient ?? undefined, encounter: r.encounter ?? undefined } : undefined;
  }

  setForGrant(grantId: string, ctx: LaunchContext, ttlSeconds: number): void {
    this.upsertGrant.run(grantId, ctx.patient ?? null, ctx.encounter ?? null, ctx.fhirUser ?? null, Date.now() + ttlSeconds * 1000);
  }

  forGrant(grantId: string): LaunchContext | undefined {
    const r = this.getGrant.get(grantId, Date.now()) as { patient: string | null; encounter: string | null; fhir_user: string | null } | undefined;
    return r ? { patient: r.patient ?? undefined, encounter: r.encounter ?? undefined, fhirUser: r.fhir_user ?? undefined } : undefined;
  }
}
