import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { Resource } from '@medplum/fhirtypes';
import { loadDefinitions } from '../src/fhir/definitions.js';
import { randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';
import { SqliteStore } from '../src/store/index.js';
import { SCHEMA_VERSION } from '../src/store/sqlite/schema.js';
import { storeContract } from './store-contract.js';
import { tempDir } from './helpers.js';

storeContract('sqlite', async () => SqliteStore.open({
  file: path.join(tempDir(), 'custos.db'),
  keys: { kek: randomBytes(32), indexKey: randomBytes(32) },
}));

describe('sqlite adapter', () => {
  it('keeps the WAL bounded under steady writes with concurrent reads, and checkpoints it away on close', async () => {
    loadDefinitions();
    const dir = tempDir();
    const file = path.join(dir, 'custos.db');
    const store = SqliteStore.open({ file, keys: { kek: randomBytes(32), indexKey: randomBytes(32) } });
    let writing = true;
    const reads = (async () => {
      let n = 0;
      while (writing) {
        await store.search({ resourceType: 'Observation', filters: [], sort: [], count: 5, offset: 0, total: 'none' });
        n++;
        await new Promise((r) => setImmediate(r));
      }
      return n;
    })();
    for (let b = 0; b < 40; b++) {
      await store.transaction(async (tx) => {
        for (let i = 0; i < 200; i++) {
          const id = `w${b}-${i}`;
          await tx.write({ resourceType: 'Observation', id, resource: { resourceType: 'Observation', id, status: 'final', code: { text: `obs ${'x'.repeat(4000)}` }, valueQuantity: { value: i } } as Resource });
        }
      });
    }
    writing = false;
    assert.ok((await reads) > 0);
    // 8,000 versions of ~4 KB each (over 32 MB of bodies): more than a bounded WAL holds.
    const walMb = fs.statSync(`${file}-wal`).size / 1e6;
    assert.ok(walMb < 40, `WAL is ${walMb.toFixed(1)} MB`);
    await store.close();
    assert.equal(fs.existsSync(`${file}-wal`) ? fs.statSync(`${file}-wal`).size : 0, 0);
  });

  it('refuses a database of another schema version with a clear message, and leaves it untouched', async () => {
    const file = path.join(tempDir(), 'custos.db');
    const keys = { kek: randomBytes(32), indexKey: randomBytes(32) };
    const store = SqliteStore.open({ file, keys });
    await store.close();
    const old = new Database(file);
    old.prepare("UPDATE meta SET value = '1' WHERE key = 'schema_version'").run();
    old.exec('DROP INDEX idx_token_q');
    old.close();
    assert.throws(() => SqliteStore.open({ file, keys }), (e: Error) => e.message.includes('schema version 1') && e.message.includes(`version ${SCHEMA_VERSION} only`));
    const after = new Database(file, { readonly: true });
    assert.equal(after.prepare("SELECT count(*) FROM sqlite_schema WHERE name = 'idx_token_q'").pluck().get(), 0);
    after.close();
    // A file that has tables but no version at all is refused too.
    const bare = path.join(tempDir(), 'bare.db');
    const b = new Database(bare);
    b.exec('CREATE TABLE resource_version (seq INTEGER PRIMARY KEY)');
    b.close();
    assert.throws(() => SqliteStore.open({ file: bare, keys }), /schema version unknown/);
  });
});
