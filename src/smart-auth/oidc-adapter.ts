import { createHash } from 'node:crypto';
import type Database from 'better-sqlite3';
import type { Adapter, AdapterPayload, ClientMetadata } from 'oidc-provider';
import type { ClientRecord, Registry } from './registry.js';

/** How ids are stored (for opaque tokens the id is the token itself). */
export function grantRowId(id: string): string {
  return createHash('sha256').update(id).digest('base64url');
}

/**
 * oidc-provider persistence in auth.db. Clients come from the registry (so `custos client add`
 * and `revoke` take effect in a running server); everything else is one row per model/id.
 * Ids are stored hashed: for opaque tokens the id is the token itself.
 */
export function createAdapterFactory(db: Database.Database, registry: Registry, clientMetadata: (c: ClientRecord & { clientSecret?: string }) => ClientMetadata) {
  const upsert = db.prepare(`INSERT INTO oidc_payload (model, id, payload, grant_id, user_code, uid, expires_at, consumed_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, NULL)
    ON CONFLICT (model, id) DO UPDATE SET payload = excluded.payload, grant_id = excluded.grant_id, user_code = excluded.user_code, uid = excluded.uid, expires_at = excluded.expires_at`);
  const byId = db.prepare('SELECT payload, expires_at, consumed_at FROM oidc_payload WHERE model = ? AND id = ?');
  const byUid = db.prepare('SELECT payload, expires_at, consumed_at FROM oidc_payload WHERE model = ? AND uid = ?');
  const byUserCode = db.prepare('SELECT payload, expires_at, consumed_at FROM oidc_payload WHERE model = ? AND user_code = ?');
  const consume = db.prepare('UPDATE oidc_payload SET consumed_at = ? WHERE model = ? AND id = ?');
  const destroy = db.prepare('DELETE FROM oidc_payload WHERE model = ? AND id = ?');
  const revokeGrant = db.prepare('DELETE FROM oidc_payload WHERE grant_id = ?');
  const purge = db.prepare('DELETE FROM oidc_payload WHERE expires_at IS NOT NULL AND expires_at < ?');
  let lastPurge = 0;

  const hash = grantRowId;
  const nowS = () => Math.floor(Date.now() / 1000);

  function row(r: { payload: string; expires_at: number | null; consumed_at: number | null } | undefined): AdapterPayload | undefined {
    if (!r) return undefined;
    if (r.expires_at !== null && r.expires_at <= nowS()) return undefined;
    const payload = JSON.parse(r.payload) as AdapterPayload;
    if (r.consumed_at !== null) payload.consumed = r.consumed_at;
    return payload;
  }

  class ClientAdapter implements Adapter {
    async upsert(): Promise<void> { throw new Error('clients are managed with `custos client add`'); }
    async find(id: string): Promise<AdapterPayload | undefined> {
      const c = registry.getClient(id);
      if (!c || c.revokedAt) return undefined;
      return clientMetadata(c) as AdapterPayload;
    }
    async findByUserCode(): Promise<undefined> { return undefined; }
    async findByUid(): Promise<undefined> { return undefined; }
    async consume(): Promise<void> {}
    async destroy(): Promise<void> {}
    async revokeByGrantId(): Promise<void> {}
  }

  class SqliteAdapter implements Adapter {
    constructor(private readonly model: string) {}
    async upsert(id: string, payload: AdapterPayload, expiresIn: number): Promise<void> {
      const now = nowS();
      upsert.run(this.model, hash(id), JSON.stringify(payload), payload.grantId ?? null, payload.userCode ?? null, payload.uid ?? null, expiresIn ? now + expiresIn : null);
      if (now - lastPurge > 60) {
        lastPurge = now;
        purge.run(now);
      }
    }
    async find(id: string): Promise<AdapterPayload | undefined> {
      return row(byId.get(this.model, hash(id)) as never);
    }
    async findByUid(uid: string): Promise<AdapterPayload | undefined> {
      return row(byUid.get(this.model, uid) as never);
    }
    async findByUserCode(userCode: string): Promise<AdapterPayload | undefined> {
      return row(byUserCode.get(this.model, userCode) as never);
    }
    async consume(id: string): Promise<void> {
      consume.run(nowS(), this.model, hash(id));
    }
    async destroy(id: string): Promise<void> {
      destroy.run(this.model, hash(id));
    }
    async revokeByGrantId(grantId: string): Promise<void> {
      revokeGrant.run(grantId);
    }
  }

  return (model: string): Adapter => (model === 'Client' ? new ClientAdapter() : new SqliteAdapter(model));
}
