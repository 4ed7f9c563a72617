import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';

export type AuthDb = Database.Database;

export const AUTH_SCHEMA_VERSION = 1;

/**
 * The SMART auth database (DATA_DIR/auth.db): OAuth clients, user accounts, oidc-provider state,
 * revoked tokens and launch contexts. Kept apart from the FHIR store so that the server and the
 * `custos client|user` CLI can use it at the same time (WAL + busy_timeout).
 *
 * client.created_at/revoked_at, user_account.created_at/disabled_at and the break_glass_* times are
 * Unix epoch milliseconds; the time units of the other tables are those of the modules that write them.
 * New tables are added with CREATE TABLE IF NOT EXISTS, so an older auth.db gains them when opened.
 */
const SCHEMA = `
CREATE TABLE IF NOT EXISTS meta (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS client (
  client_id TEXT PRIMARY KEY,
  type TEXT NOT NULL CHECK (type IN ('public','confidential','backend')),
  name TEXT,
  redirect_uris TEXT NOT NULL DEFAULT '[]',  -- JSON array of strings
  scope TEXT NOT NULL,                       -- allowed scopes, space-separated
  jwks TEXT,                                 -- inline public JWKS (JSON)
  jwks_uri TEXT,
  secret BLOB,                               -- sealed with the KEK, AAD 'client-secret/<client_id>'
  actor TEXT,
  trusted INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  revoked_at INTEGER
);

CREATE TABLE IF NOT EXISTS user_account (
  account_id TEXT PRIMARY KEY,
  username TEXT NOT NULL UNIQUE,
  password_hash TEXT NOT NULL,
  fhir_user TEXT NOT NULL,                   -- 'Patient/<id>' or 'Practitioner/<id>'
  break_glass INTEGER NOT NULL DEFAULT 0,
  created_at INTEGER NOT NULL,
  disabled_at INTEGER
);

CREATE TABLE IF NOT EXISTS oidc_payload (
  model TEXT NOT NULL,
  id TEXT NOT NULL,
  payload TEXT NOT NULL,
  grant_id TEXT,
  user_code TEXT,
  uid TEXT,
  expires_at INTEGER,
  consumed_at INTEGER,
  PRIMARY KEY (model, id)
);
CREATE INDEX IF NOT EXISTS oidc_payload_grant_id ON oidc_payload (grant_id);
CREATE INDEX IF NOT EXISTS oidc_payload_uid ON oidc_payload (uid);
CREATE INDEX IF NOT EXISTS oidc_payload_user_code ON oidc_payload (user_code);
CREATE INDEX IF NOT EXISTS oidc_payload_expires_at ON oidc_payload (expires_at);

CREATE TABLE IF NOT EXISTS revoked_token (
  jti TEXT PRIMARY KEY,
  expires_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS launch_context (
  id TEXT PRIMARY KEY,
  patient TEXT,
  encounter TEXT,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
);

-- Break-the-glass (src/consent/break-glass.ts): a user's time-boxed read access to one patient,
-- and what was read under it. Shown to the patient; the audit-trail issue takes these over.
CREATE TABLE IF NOT EXISTS break_glass_grant (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL,                  -- user_account.account_id of the practitioner user
  practitioner TEXT NOT NULL,                -- 'Practitioner/<id>': the user's fhirUser when granted
  patient_id TEXT NOT NULL,
  reason TEXT NOT NULL,
  granted_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS break_glass_grant_account ON break_glass_grant (account_id, expires_at);
CREATE INDEX IF NOT EXISTS break_glass_grant_patient ON break_glass_grant (patient_id);

CREATE TABLE IF NOT EXISTS break_glass_access (
  grant_id TEXT NOT NULL REFERENCES break_glass_grant (id),
  at INTEGER NOT NULL,
  interaction TEXT NOT NULL,                 -- read, vread, search, history, ...
  what TEXT NOT NULL                         -- JSON: {"resources": ["Type/id", ...]} and/or {"query": "..."}
);
CREATE INDEX IF NOT EXISTS break_glass_access_grant ON break_glass_access (grant_id, at);
`;

/** Open (creating if needed) DATA_DIR/auth.db with its schema. Safe to call from several processes at once. */
export function openAuthDb(dataDir: string): AuthDb {
  fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const file = path.join(dataDir, 'auth.db');
  // Create the file owner-only before SQLite does (it would use the umask); SQLite gives the
  // -wal and -shm files the same permissions as the database file. An empty file is a valid empty database.
  fs.closeSync(fs.openSync(file, 'a', 0o600));
  const db = new Database(file);
  try {
    db.pragma('busy_timeout = 5000');
    db.pragma('journal_mode = WAL');
    // Few, small writes whose loss would matter (a revocation must survive a power cut).
    db.pragma('synchronous = FULL');
    db.pragma('foreign_keys = ON');
    db.transaction(() => {
      db.exec(SCHEMA);
      db.prepare("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)").run(String(AUTH_SCHEMA_VERSION));
    }).immediate();
    const row = db.prepare("SELECT value FROM meta WHERE key = 'schema_version'").get() as { value: string };
    if (row.value !== String(AUTH_SCHEMA_VERSION)) {
      throw new Error(`${file} has schema version ${row.value}; this custos understands version ${AUTH_SCHEMA_VERSION}`);
    }
    return db;
  } catch (err) {
    db.close();
    throw err;
  }
}
