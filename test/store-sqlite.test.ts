import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { SqliteStore } from '../src/store/index.js';
import { storeContract } from './store-contract.js';
import { tempDir } from './helpers.js';

storeContract('sqlite', async () => SqliteStore.open({
  file: path.join(tempDir(), 'custos.db'),
  keys: { kek: randomBytes(32), indexKey: randomBytes(32) },
}));
