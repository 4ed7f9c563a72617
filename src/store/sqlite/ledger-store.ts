import type Database from 'better-sqlite3';
import type { LedgerBatch, LedgerBatchStatus, LedgerLeaf, LedgerPosition, LedgerStore } from '../types.js';

interface BatchRow {
  id: number; first_seq: number; last_seq: number; audit_first: number | null; audit_last: number | null; size: number; root: Buffer; status: LedgerBatchStatus;
  chain_id: number; contract: string; tx_hash: string | null; block_number: number | null; block_time: number | null; created_at: number;
}

function toBatch(r: BatchRow): LedgerBatch {
  return {
    id: r.id, firstSeq: r.first_seq, lastSeq: r.last_seq, ...(r.audit_first !== null && r.audit_last !== null ? { auditFirst: r.audit_first, auditLast: r.audit_last } : {}), size: r.size, root: r.root, status: r.status, chainId: r.chain_id, contract: r.contract,
    ...(r.tx_hash ? { txHash: r.tx_hash } : {}), ...(r.block_number !== null ? { blockNumber: r.block_number } : {}),
    ...(r.block_time !== null ? { blockTime: r.block_time } : {}), createdAt: r.created_at,
  };
}

const leaf = (r: { seq: number; content_hash: string }): LedgerLeaf => ({ seq: r.seq, hash: Buffer.from(r.content_hash, 'hex') });
const auditLeaf = (r: { seq: number; content_hash: string }): LedgerLeaf => ({ seq: r.seq, hash: Buffer.from(r.content_hash, 'hex'), audit: true });

/**
 * Ledger batches on their own connection: the anchoring worker's small writes take the
 * database write lock briefly between group commits (busy_timeout), never inside one.
 * Reads of versions see committed rows only, so a batch never includes a version that could
 * still roll back.
 */
export class SqliteLedgerStore implements LedgerStore {
  private readonly q;

  constructor(private readonly db: Database.Database) {
    this.q = {
      last: db.prepare('SELECT * FROM ledger_batch ORDER BY id DESC LIMIT 1'),
      lastSeq: db.prepare('SELECT coalesce(max(last_seq), 0) FROM ledger_batch').pluck(),
      lastAudit: db.prepare('SELECT coalesce(max(audit_last), 0) FROM ledger_batch WHERE audit_last IS NOT NULL').pluck(),
      unbatched: db.prepare('SELECT seq, content_hash FROM resource_version WHERE seq > ? ORDER BY seq LIMIT ?'),
      unbatchedAudit: db.prepare('SELECT seq, content_hash FROM audit_event WHERE seq > ? ORDER BY seq LIMIT ?'),
      backlog: db.prepare('SELECT count(*) FROM resource_version WHERE seq > ?').pluck(),
      backlogAudit: db.prepare('SELECT count(*) FROM audit_event WHERE seq > ?').pluck(),
      range: db.prepare('SELECT seq, content_hash FROM resource_version WHERE seq BETWEEN ? AND ? ORDER BY seq'),
      auditRange: db.prepare('SELECT seq, content_hash FROM audit_event WHERE seq BETWEEN ? AND ? ORDER BY seq'),
      insert: db.prepare(`INSERT INTO ledger_batch (first_seq, last_seq, audit_first, audit_last, size, root, status, chain_id, contract, created_at)
        VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?)`),
      byId: db.prepare('SELECT * FROM ledger_batch WHERE id = ?'),
      submitted: db.prepare("UPDATE ledger_batch SET status = 'submitted', tx_hash = ? WHERE id = ? AND status <> 'confirmed'"),
      confirmed: db.prepare("UPDATE ledger_batch SET status = 'confirmed', tx_hash = ?, block_number = ?, block_time = ?, chain_id = ?, contract = ? WHERE id = ?"),
      pending: db.prepare("UPDATE ledger_batch SET status = 'pending', tx_hash = NULL, block_number = NULL, block_time = NULL WHERE id = ?"),
      open: db.prepare("SELECT * FROM ledger_batch WHERE status IN ('pending', 'submitted') ORDER BY id"),
      confirmedPage: db.prepare("SELECT * FROM ledger_batch WHERE status = 'confirmed' AND id < ? ORDER BY id DESC LIMIT ?"),
      version: db.prepare('SELECT seq, content_hash FROM resource_version WHERE type = ? AND id = ? AND version = ?'),
      batchOf: db.prepare('SELECT * FROM ledger_batch WHERE last_seq >= ? AND first_seq <= last_seq ORDER BY last_seq LIMIT 1'),
      auditEntry: db.prepare('SELECT seq, content_hash FROM audit_event WHERE seq = ?'),
      auditBatchOf: db.prepare('SELECT * FROM ledger_batch WHERE audit_last >= ? AND audit_last IS NOT NULL ORDER BY audit_last LIMIT 1'),
      current: db.prepare('SELECT version FROM resource_current WHERE type = ? AND id = ?').pluck(),
      rank: db.prepare('SELECT count(*) FROM resource_version WHERE seq >= ? AND seq < ?').pluck(),
      after: db.prepare('SELECT * FROM ledger_batch WHERE id > ? ORDER BY id LIMIT ?'),
    };
  }

  private lastSeq(): number {
    return this.q.lastSeq.get() as number;
  }

  private lastAudit(): number {
    return this.q.lastAudit.get() as number;
  }

  /** Versions first, then audit journal entries, up to `limit` in all. */
  unbatched(limit: number): LedgerLeaf[] {
    const versions = (this.q.unbatched.all(this.lastSeq(), limit) as Array<{ seq: number; content_hash: string }>).map(leaf);
    if (versions.length >= limit) return versions;
    const audit = (this.q.unbatchedAudit.all(this.lastAudit(), limit - versions.length) as Array<{ seq: number; content_hash: string }>).map(auditLeaf);
    return [...versions, ...audit];
  }

  backlog(): number {
    return (this.q.backlog.get(this.lastSeq()) as number) + (this.q.backlogAudit.get(this.lastAudit()) as number);
  }

  leaves(batch: LedgerBatch): LedgerLeaf[] {
    const versions = batch.firstSeq <= batch.lastSeq ? (this.q.range.all(batch.firstSeq, batch.lastSeq) as Array<{ seq: number; content_hash: string }>).map(leaf) : [];
    const audit = batch.auditFirst !== undefined ? (this.q.auditRange.all(batch.auditFirst, batch.auditLast) as Array<{ seq: number; content_hash: string }>).map(auditLeaf) : [];
    return [...versions, ...audit];
  }

  createBatch(b: { firstSeq: number; lastSeq: number; auditFirst?: number; auditLast?: number; size: number; root: Buffer; chainId: number; contract: string }): LedgerBatch {
    const create = this.db.transaction(() => {
      if (b.firstSeq <= b.lastSeq && b.firstSeq <= this.lastSeq()) throw new Error(`ledger batch would overlap the previous one (first seq ${b.firstSeq})`);
      if (b.auditFirst !== undefined && b.auditFirst <= this.lastAudit()) throw new Error(`ledger batch would overlap the previous one (first audit entry ${b.auditFirst})`);
      const id = Number(this.q.insert.run(b.firstSeq, b.lastSeq, b.auditFirst ?? null, b.auditLast ?? null, b.size, b.root, b.chainId, b.contract, Date.now()).lastInsertRowid);
      return toBatch(this.q.byId.get(id) as BatchRow);
    });
    return create.immediate();
  }

  markSubmitted(id: number, txHash: string): void {
    this.q.submitted.run(txHash, id);
  }

  markConfirmed(id: number, r: { txHash: string; blockNumber: number; blockTime: number; chainId: number; contract: string }): void {
    this.q.confirmed.run(r.txHash, r.blockNumber, r.blockTime, r.chainId, r.contract, id);
  }

  markPending(id: number): void {
    this.q.pending.run(id);
  }

  openBatches(): LedgerBatch[] {
    return (this.q.open.all() as BatchRow[]).map(toBatch);
  }

  confirmedBatches(limit: number, beforeId?: number): LedgerBatch[] {
    return (this.q.confirmedPage.all(beforeId ?? Number.MAX_SAFE_INTEGER, limit) as BatchRow[]).map(toBatch);
  }

  lastBatch(): LedgerBatch | undefined {
    const r = this.q.last.get() as BatchRow | undefined;
    return r ? toBatch(r) : undefined;
  }

  currentVersion(resourceType: string, id: string): number | undefined {
    return this.q.current.get(resourceType, id) as number | undefined;
  }

  position(resourceType: string, id: string, version: number): LedgerPosition | undefined {
    if (resourceType === 'AuditEvent') return this.auditPosition(id, version);
    const v = this.q.version.get(resourceType, id, version) as { seq: number; content_hash: string } | undefined;
    if (!v) return undefined;
    const r = this.q.batchOf.get(v.seq) as BatchRow | undefined;
    if (!r || r.first_seq > v.seq) return { seq: v.seq, contentHash: v.content_hash };
    return { seq: v.seq, contentHash: v.content_hash, batch: toBatch(r), leafIndex: this.q.rank.get(r.first_seq, v.seq) as number };
  }

  /** An audit journal entry: after its batch's versions, at its rank among the batch's entries (they are gapless). */
  private auditPosition(id: string, version: number): LedgerPosition | undefined {
    if (version !== 1 || !/^[1-9]\d{0,15}$/.test(id)) return undefined;
    const e = this.q.auditEntry.get(Number(id)) as { seq: number; content_hash: string } | undefined;
    if (!e) return undefined;
    const r = this.q.auditBatchOf.get(e.seq) as BatchRow | undefined;
    if (!r || r.audit_first === null || r.audit_first > e.seq) return { seq: e.seq, contentHash: e.content_hash };
    const versions = r.first_seq <= r.last_seq ? (this.q.rank.get(r.first_seq, r.last_seq + 1) as number) : 0;
    return { seq: e.seq, contentHash: e.content_hash, batch: toBatch(r), leafIndex: versions + (e.seq - r.audit_first) };
  }

  batchesAfter(afterId: number, limit: number): LedgerBatch[] {
    return (this.q.after.all(afterId, limit) as BatchRow[]).map(toBatch);
  }
}
