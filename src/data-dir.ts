import fs from 'node:fs';
import path from 'node:path';
import type { Config } from './config.js';
import { loadMasterKeys, type MasterKeys } from './store/index.js';

/**
 * The database and master keys of a data directory, for commands that read it beside (or without)
 * the server: never creates anything, and says what is missing.
 */
export function openDataDir(config: Config): { file: string; keys: MasterKeys } {
  const file = path.join(config.dataDir, 'custos.db');
  if (!fs.existsSync(file)) throw new Error(`there is no database at ${file} (is DATA_DIR right?)`);
  if (!config.masterKey && !fs.existsSync(path.join(config.dataDir, 'keys', 'master.key'))) {
    throw new Error(`no master key: set CUSTOS_MASTER_KEY or restore ${path.join(config.dataDir, 'keys', 'master.key')}`);
  }
  return { file, keys: loadMasterKeys(config.dataDir, config.masterKey) };
}
