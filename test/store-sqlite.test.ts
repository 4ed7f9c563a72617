import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { Resource } from '@medplum/fhirtypes';
import { loadDefinitions } from '../src/fhir/definitions.js';
import { randomBytes } from 'node:crypto';
import Database from 'better-sqlite3';
import { Blinder, createIndexer, openSqliteReader, SqliteStore } from '../src/store/index.js';
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

  it('upgrades a version 7 database: its clear :text rows of patient data become the blinded rows, and no clear text is left in the files', async () => {
    loadDefinitions();
    const file = path.join(tempDir(), 'custos.db');
    const keys = { kek: randomBytes(32), indexKey: randomBytes(32) };
    const condition = {
      resourceType: 'Condition', id: 'c1', subject: { reference: 'Patient/p1' },
      code: { coding: [{ system: 'http://snomed.info/sct', code: '35489007', display: 'Depressive disorder' }], text: 'Bob depression' },
    } as Resource;
    const store = SqliteStore.open({ file, keys });
    await store.transaction(async (tx) => {
      await tx.write({ resourceType: 'Condition', id: 'c1', resource: condition });
      await tx.write({ resourceType: 'Medication', id: 'm1', resource: { resourceType: 'Medication', id: 'm1', code: { text: 'Aspirin Zyxolin' } } as Resource });
    });
    await store.close();

    // What version 7 stored: the Condition's :text rows in the clear (normalized, and as written),
    // and clear text left in free pages by rows an update had deleted.
    const old = new Database(file);
    const res = old.prepare("SELECT pk FROM resource_current WHERE type = 'Condition' AND id = 'c1'").pluck().get() as number;
    old.prepare("DELETE FROM idx_string WHERE res = ? AND param = 'code:text'").run(res);
    const n = (old.prepare('SELECT coalesce(max(n), -1) FROM idx_string WHERE res = ?').pluck().get(res) as number) + 1;
    const insert = old.prepare('INSERT INTO idx_string (res, n, param, value, exact) VALUES (?, ?, ?, ?, ?)');
    insert.run(res, n, 'code:text', 'depressive disorder', 'Depressive disorder');
    insert.run(res, n + 1, 'code:text', 'bob depression', 'Bob depression');
    // Version 7 kept one clear row per text as written: this one is the same blinded text.
    insert.run(res, n + 2, 'code:text', 'bob depression', 'BOB  depression');
    for (let i = 0; i < 200; i++) insert.run(res, n + 3 + i, 'code:text', `quokkafoo ${i}`, `Quokkafoo ${i}`);
    old.prepare("DELETE FROM idx_string WHERE res = ? AND value LIKE 'quokkafoo %'").run(res);
    old.exec('DROP TABLE text_prefix');
    old.prepare("UPDATE meta SET value = '7' WHERE key = 'schema_version'").run();
    old.close();
    const raw = () => Buffer.concat(fs.readdirSync(path.dirname(file)).filter((f) => f.startsWith('custos.db')).map((f) => fs.readFileSync(path.join(path.dirname(file), f))));
    for (const word of ['Bob depression', 'Depressive disorder', 'Quokkafoo']) assert.ok(raw().includes(Buffer.from(word)), `the old file holds '${word}' (else this test proves nothing)`);

    // A read-only opener cannot upgrade it, and says what to do.
    assert.throws(() => openSqliteReader({ file, keys }), /schema version 7.*start the server/);

    const upgraded = SqliteStore.open({ file, keys });
    assert.deepEqual(upgraded.upgraded, { from: 7, resources: 1, clearRows: 3 });
    const db = new Database(file, { readonly: true });
    assert.equal(db.prepare("SELECT value FROM meta WHERE key = 'schema_version'").pluck().get(), String(SCHEMA_VERSION));
    // The rows are those the indexer writes today (so the integrity scan finds no mismatch).
    const stored = (db.prepare('SELECT param, value, exact FROM idx_string WHERE res = ?').all(res) as Array<{ param: string; value: string; exact: string | null }>)
      .map((r) => `${r.param} ${r.value} ${r.exact}`).sort();
    const derived = createIndexer(new Blinder(keys.indexKey)).extract(condition);
    assert.deepEqual(stored, derived.string.map((r) => `${r.param} ${r.value} ${r.exact}`).sort());
    const prefixes = (db.prepare('SELECT prefix, text FROM text_prefix').all() as Array<{ prefix: string; text: string }>).map((r) => `${r.prefix} ${r.text}`).sort();
    assert.deepEqual(prefixes, (derived.texts ?? []).flatMap((t) => t.prefixes.map((p) => `${p} ${t.value}`)).sort());
    db.close();
    const found = await upgraded.search({
      resourceType: 'Condition', sort: [], count: 10, offset: 0, total: 'none',
      filters: [{ param: 'code', type: 'token', modifier: 'text', values: [{ prefix: 'eq', value: 'BOB dep' }], blinded: true }],
    });
    assert.deepEqual(found.matches.map((m) => m.id), ['c1']);
    await upgraded.close();

    const after = raw();
    for (const word of ['Bob depression', 'bob depression', 'BOB  depression', 'Depressive disorder', 'depressive disorder', 'Quokkafoo', 'quokkafoo']) {
      assert.equal(after.includes(Buffer.from(word)), false, `'${word}' is still in the files`);
    }
    assert.ok(after.includes(Buffer.from('Aspirin Zyxolin')), 'a Medication (not patient data) keeps its clear text row');
    // Opening it again upgrades nothing.
    const again = SqliteStore.open({ file, keys });
    assert.equal(again.upgraded, undefined);
    await again.close();
  });
});
