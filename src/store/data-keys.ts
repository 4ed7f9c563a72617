import { keyAad, newDataKey, open, seal } from './crypto.js';

/** Row access the key cache needs from an adapter (synchronous for SQLite). */
export interface DataKeyRows {
  byScope(scope: string): { keyId: number; wrapped: Buffer } | undefined;
  byId(keyId: number): { scope: string; wrapped: Buffer } | undefined;
  nextId(): number;
  insert(scope: string, keyId: number, wrapped: Buffer): void;
}

/**
 * Per-compartment data keys, wrapped by the KEK in the database and cached unwrapped in memory.
 * Keys created inside a write transaction stay "pending" until it commits, so a rolled-back
 * write can never leave a cached key whose row does not exist.
 */
export class DataKeyCache {
  private readonly byId = new Map<number, Buffer>();
  private readonly scopeToId = new Map<string, number>();
  private pending: Array<{ scope: string; keyId: number; key: Buffer }> = [];

  constructor(private readonly kek: Buffer) {}

  /** The key to encrypt a new version of `scope` with, creating it (inside the open write tx) if needed. */
  forWrite(scope: string, rows: DataKeyRows): { keyId: number; key: Buffer } {
    const cachedId = this.scopeToId.get(scope);
    if (cachedId !== undefined) return { keyId: cachedId, key: this.byId.get(cachedId)! };
    const p = this.pending.find((k) => k.scope === scope);
    if (p) return p;
    const row = rows.byScope(scope);
    if (row) {
      // The row may be uncommitted (made earlier in this group), so cache it only on commit.
      const found = { scope, keyId: row.keyId, key: open(this.kek, row.wrapped, keyAad(scope, row.keyId)) };
      this.pending.push(found);
      return found;
    }
    const key = newDataKey();
    const keyId = rows.nextId();
    rows.insert(scope, keyId, seal(this.kek, key, keyAad(scope, keyId)));
    const created = { scope, keyId, key };
    this.pending.push(created);
    return created;
  }

  private remember(scope: string, keyId: number, key: Buffer): void {
    this.byId.set(keyId, key);
    this.scopeToId.set(scope, keyId);
  }

  forRead(keyId: number, rows: DataKeyRows): Buffer | undefined {
    const k = this.byId.get(keyId) ?? this.pending.find((p) => p.keyId === keyId)?.key;
    if (k) return k;
    const row = rows.byId(keyId);
    if (!row) return undefined;
    const key = open(this.kek, row.wrapped, keyAad(row.scope, keyId));
    this.remember(row.scope, keyId, key);
    return key;
  }

  committed(): void {
    for (const p of this.pending) this.remember(p.scope, p.keyId, p.key);
    this.pending = [];
  }

  /** Dropping all pending keys is always safe: a committed one is found again in its row. */
  aborted(): void {
    this.pending = [];
  }
}
