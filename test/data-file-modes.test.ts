import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import request from 'supertest';
import { FHIR_JSON, tempDir, testApp } from './helpers.js';

/** Every file and directory under `dir`, with its permission bits. */
function modes(dir: string): Array<{ rel: string; dir: boolean; mode: number }> {
  const out: Array<{ rel: string; dir: boolean; mode: number }> = [];
  for (const e of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    const full = path.join(e.parentPath, e.name);
    out.push({ rel: path.relative(dir, full), dir: e.isDirectory(), mode: fs.statSync(full).mode & 0o777 });
  }
  return out;
}

function assertPrivate(dataDir: string, when: string): string[] {
  const found = modes(dataDir);
  for (const f of found) assert.equal(f.mode.toString(8), f.dir ? '700' : '600', `${when}: ${f.rel} has mode ${f.mode.toString(8)}`);
  return found.map((f) => f.rel);
}

describe('data files are owner-only', () => {
  it('the database with its -wal and -shm, auth.db, keys and the chain state are 0600, their directories 0700', async () => {
    const root = tempDir();
    const dataDir = path.join(root, 'data');
    const t = await testApp({ DATA_DIR: dataDir, LEDGER: 'embedded', LEDGER_BATCH_SIZE: '1' });
    try {
      assert.equal((fs.statSync(dataDir).mode & 0o777).toString(8), '700', 'DATA_DIR made by the server');
      const res = await request(t.app).post('/fhir/Patient').set('Content-Type', FHIR_JSON).send({ resourceType: 'Patient', name: [{ family: 'Mode' }] });
      assert.equal(res.status, 201, res.text);
      await t.ledger.flush();
      await t.audit?.flush();
      const running = assertPrivate(dataDir, 'while running');
      for (const f of ['custos.db', 'custos.db-wal', 'custos.db-shm', 'auth.db', 'auth.db-wal', 'keys/master.key']) assert.ok(running.includes(f), `${f} exists: ${running.join(', ')}`);
    } finally {
      await t.close();
    }
    // anvil has written its state on the way out.
    const stopped = assertPrivate(dataDir, 'after stop');
    assert.ok(stopped.includes(path.join('chain', 'anvil-state.json')), stopped.join(', '));

    // A database an earlier version left 0644 is tightened at start.
    fs.chmodSync(path.join(dataDir, 'custos.db'), 0o644);
    const again = await testApp({ DATA_DIR: dataDir });
    try {
      assert.equal((await request(again.app).get('/fhir/Patient?family=Mode')).body.entry?.length, 1);
      assertPrivate(dataDir, 'after a restart');
    } finally {
      await again.close();
    }
  });
});
