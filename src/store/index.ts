export type * from './types.js';
export { VersionConflictError } from './errors.js';
export { SqliteStore, openSqliteReader, type SqliteStoreOptions } from './sqlite/adapter.js';
export { WriterTurns } from './sqlite/writer-turns.js';
export { loadMasterKeys, type MasterKeys } from './crypto.js';
export { contentHash, canonicalJson } from './content-hash.js';
export { isParamBlinded, isParamTextBlinded } from './blinding-policy.js';
export { createIndexer, type Indexer } from './indexer.js';
export { Blinder } from './blind.js';
