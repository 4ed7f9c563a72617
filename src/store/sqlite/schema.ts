import { AUDIT_JOURNAL_SCHEMA } from './audit-journal.js';

/**
 * SQLite schema (the audit trail's journal: audit-journal.ts). Versions are immutable rows; resource_current points at the latest one and
 * owns the search-index rows (index rows always describe the current, non-deleted version).
 */
// 8: the `:text` rows of patient data are blinded (migrate.ts upgrades a version 7 database).
// 9: search_stats (migrate.ts counts it from the index of a version 7 or 8 database).
export const SCHEMA_VERSION = 9;

export const SCHEMA = AUDIT_JOURNAL_SCHEMA + `
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS data_key (
  scope TEXT PRIMARY KEY,          -- 'patient:<id>' or 'shared'
  key_id INTEGER NOT NULL UNIQUE,
  wrapped BLOB NOT NULL            -- data key, AES-256-GCM under the KEK (nonce || tag || ct)
);

CREATE TABLE IF NOT EXISTS resource_current (
  pk INTEGER PRIMARY KEY,
  type TEXT NOT NULL,
  id TEXT NOT NULL,
  version INTEGER NOT NULL,
  last_updated INTEGER NOT NULL,   -- epoch ms
  deleted INTEGER NOT NULL DEFAULT 0,
  UNIQUE (type, id)
);
-- (type, deleted) alone would be a prefix of this one: one index less to write per resource.
DROP INDEX IF EXISTS resource_current_type;
CREATE INDEX IF NOT EXISTS resource_current_type_lu ON resource_current (type, deleted, last_updated);

CREATE TABLE IF NOT EXISTS resource_version (
  seq INTEGER PRIMARY KEY,         -- global write order (system history)
  pk INTEGER NOT NULL,             -- resource_current.pk
  type TEXT NOT NULL,
  id TEXT NOT NULL,
  version INTEGER NOT NULL,
  last_updated INTEGER NOT NULL,
  deleted INTEGER NOT NULL DEFAULT 0,
  key_id INTEGER,                  -- data_key.key_id the body is encrypted under
  body BLOB,                       -- nonce(12) || tag(16) || ciphertext; NULL for deletes
  content_hash TEXT NOT NULL,
  -- By pk rather than (type, id): new resources get increasing pks, so this index is appended to.
  UNIQUE (pk, version)
);
CREATE INDEX IF NOT EXISTS resource_version_lu ON resource_version (last_updated);
CREATE INDEX IF NOT EXISTS resource_version_type_lu ON resource_version (type, last_updated);

-- Index tables are clustered on (res, n) (n numbers a resource's rows in the table): that B-tree
-- serves EXISTS filters, sorting and deletes by resource, so no separate (res, ...) index is kept.
-- dlo (also in idx_reference): the resource's own 'date' (lo) when it has exactly one narrow
-- one, so that code + date and subject + date searches (device data) are one index range. Only
-- exact keys (system|code, Type/id) lead such a search, so the _qd indexes hold only rows that
-- can match one.
CREATE TABLE IF NOT EXISTS idx_token (res INTEGER NOT NULL, n INTEGER NOT NULL, param TEXT NOT NULL, system TEXT, code TEXT, dlo INTEGER, PRIMARY KEY (res, n)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_token_q ON idx_token (param, code, system, res);
CREATE INDEX IF NOT EXISTS idx_token_qd ON idx_token (param, code, system, dlo, res) WHERE system IS NOT NULL;

CREATE TABLE IF NOT EXISTS idx_string (res INTEGER NOT NULL, n INTEGER NOT NULL, param TEXT NOT NULL, value TEXT NOT NULL, exact TEXT, PRIMARY KEY (res, n)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_string_q ON idx_string (param, value, res);
-- The prefixes of the blinded free texts that idx_string's ':text' rows of patient data hold
-- ('t:' values; store/types.ts TextEntry): one row per prefix of each distinct text, shared by all
-- resources and parameters, so repeated displays cost no more rows than clear ones. HMACs only;
-- rows are not removed when the last resource with the text goes.
CREATE TABLE IF NOT EXISTS text_prefix (prefix TEXT NOT NULL, text TEXT NOT NULL, PRIMARY KEY (prefix, text)) WITHOUT ROWID;

-- wide = 1 when hi - lo > NARROW_SPAN (2 days): narrow rows are found by seeking on lo.
CREATE TABLE IF NOT EXISTS idx_date (res INTEGER NOT NULL, n INTEGER NOT NULL, param TEXT NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL, wide INTEGER NOT NULL, PRIMARY KEY (res, n)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_date_q ON idx_date (param, wide, lo, hi, res);

CREATE TABLE IF NOT EXISTS idx_number (res INTEGER NOT NULL, n INTEGER NOT NULL, param TEXT NOT NULL, value REAL NOT NULL, lo REAL NOT NULL, hi REAL NOT NULL, PRIMARY KEY (res, n)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_number_q ON idx_number (param, value, res);

CREATE TABLE IF NOT EXISTS idx_quantity (res INTEGER NOT NULL, n INTEGER NOT NULL, param TEXT NOT NULL, system TEXT, code TEXT, unit TEXT, value REAL NOT NULL, lo REAL NOT NULL, hi REAL NOT NULL, PRIMARY KEY (res, n)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_quantity_q ON idx_quantity (param, value, res);

-- flags: which of param and its alias (Observation.patient of subject) the row belongs to, see
-- store/reference-aliases.ts; 3 for rows of parameters without an alias.
CREATE TABLE IF NOT EXISTS idx_reference (res INTEGER NOT NULL, n INTEGER NOT NULL, param TEXT NOT NULL, target_type TEXT, target_id TEXT, url TEXT, dlo INTEGER, flags INTEGER NOT NULL, PRIMARY KEY (res, n)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_reference_qd ON idx_reference (param, target_id, target_type, dlo, res, flags) WHERE target_type IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_reference_q ON idx_reference (param, target_id, target_type, res, flags);

-- Row counts kept by the writer (index-rows.ts): of each exact token key (param, system, code) and
-- reference key (param, target_type, target_id), the keys a page walks, and ('type', type) of
-- each type's current resources. _total=estimate scales a sample by them.
CREATE TABLE IF NOT EXISTS search_stats (kind TEXT NOT NULL, a TEXT NOT NULL, b TEXT NOT NULL, c TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (kind, a, b, c)) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS idx_uri (res INTEGER NOT NULL, n INTEGER NOT NULL, param TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (res, n)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idx_uri_q ON idx_uri (param, value, res);


-- Ledger batches: each covers the versions with seq in [first_seq, last_seq] (the version table is
-- the outbox), then the audit journal's entries in [audit_first, audit_last]; root = RFC 9162 Merkle tree hash of their content hashes, anchored on chain.
CREATE TABLE IF NOT EXISTS ledger_batch (
  id INTEGER PRIMARY KEY,
  first_seq INTEGER NOT NULL,       -- versions: [first_seq, last_seq], none when first_seq > last_seq
  last_seq INTEGER NOT NULL,
  audit_first INTEGER,               -- audit journal entries: [audit_first, audit_last], or NULL
  audit_last INTEGER,
  size INTEGER NOT NULL,
  root BLOB NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pending', 'submitted', 'confirmed')),
  chain_id INTEGER NOT NULL,
  contract TEXT NOT NULL,
  tx_hash TEXT,
  block_number INTEGER,
  block_time INTEGER,
  created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_batch_status ON ledger_batch (status, id);
CREATE INDEX IF NOT EXISTS ledger_batch_last_seq ON ledger_batch (last_seq);
CREATE INDEX IF NOT EXISTS ledger_batch_audit_last ON ledger_batch (audit_last) WHERE audit_last IS NOT NULL;

-- Named gapless counters, taken inside write transactions (e.g. the audit trail's sequence).
CREATE TABLE IF NOT EXISTS sequence (name TEXT PRIMARY KEY, n INTEGER NOT NULL);

-- Consent decisions are cached until their inputs change: these triggers count every change to
-- the rows of the watched types, also edits made directly in the database file.
CREATE TABLE IF NOT EXISTS change_counter (type TEXT PRIMARY KEY, n INTEGER NOT NULL);
INSERT OR IGNORE INTO change_counter (type, n) VALUES ('Consent', 0), ('PractitionerRole', 0), ('CareTeam', 0);
CREATE TRIGGER IF NOT EXISTS watch_version_insert AFTER INSERT ON resource_version WHEN NEW.type IN ('Consent', 'PractitionerRole', 'CareTeam')
BEGIN UPDATE change_counter SET n = n + 1 WHERE type = NEW.type; END;
CREATE TRIGGER IF NOT EXISTS watch_version_update AFTER UPDATE ON resource_version WHEN NEW.type IN ('Consent', 'PractitionerRole', 'CareTeam') OR OLD.type IN ('Consent', 'PractitionerRole', 'CareTeam')
BEGIN UPDATE change_counter SET n = n + 1 WHERE type IN (NEW.type, OLD.type); END;
CREATE TRIGGER IF NOT EXISTS watch_version_delete AFTER DELETE ON resource_version WHEN OLD.type IN ('Consent', 'PractitionerRole', 'CareTeam')
BEGIN UPDATE change_counter SET n = n + 1 WHERE type = OLD.type; END;
CREATE TRIGGER IF NOT EXISTS watch_current_update AFTER UPDATE ON resource_current WHEN NEW.type IN ('Consent', 'PractitionerRole', 'CareTeam') OR OLD.type IN ('Consent', 'PractitionerRole', 'CareTeam')
BEGIN UPDATE change_counter SET n = n + 1 WHERE type IN (NEW.type, OLD.type); END;
CREATE TRIGGER IF NOT EXISTS watch_current_delete AFTER DELETE ON resource_current WHEN OLD.type IN ('Consent', 'PractitionerRole', 'CareTeam')
BEGIN UPDATE change_counter SET n = n + 1 WHERE type = OLD.type; END;
`;
