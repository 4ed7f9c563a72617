import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { fetchSystemToken, freePort, tempDir } from './helpers.js';

const CLI = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
const children: ChildProcess[] = [];

async function serve(env: Record<string, string>): Promise<{ child: ChildProcess; base: string; logs: () => string }> {
  const child = spawn(process.execPath, [CLI, 'serve'], { env: { ...process.env, LOG_LEVEL: 'info', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (d) => { out += d; });
  child.stderr!.on('data', (d) => { out += d; });
  const base = `http://127.0.0.1:${env.PORT}/fhir`;
  // A generous limit: on a loaded machine a first start (keys, anvil, contracts, worker threads) can take many seconds.
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    try {
      const r = await fetch(`${base}/metadata`);
      if (r.ok) return { child, base, logs: () => out };
    } catch { /* not up yet */ }
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`server did not start: ${out}`);
}

after(() => { for (const c of children) c.kill('SIGKILL'); });

/** Registers a backend client with `custos client add` (as an operator would) and returns a fetch that sends its token. */
async function authorizedFetch(base: string, dataDir: string): Promise<typeof fetch> {
  const tokenEndpoint = `${new URL(base).origin}/auth/token`;
  const token = await fetchSystemToken(tokenEndpoint, async (jwks) => {
    const file = path.join(tempDir(), 'jwks.json');
    fs.writeFileSync(file, JSON.stringify(jwks));
    // Asynchronous (not spawnSync), so that two servers can be set up at once.
    const r = await new Promise<{ status: number | null; stdout: string; stderr: string }>((resolve) => {
      execFile(process.execPath, [CLI, 'client', 'add', '--type', 'backend', '--jwks', file, '--scope', 'system/*.*', '--trusted', '--json'], { encoding: 'utf8', env: { ...process.env, DATA_DIR: dataDir } },
        (err, stdout, stderr) => resolve({ status: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr: err && !stderr ? String(err) : stderr }));
    });
    assert.equal(r.status, 0, r.stderr);
    return (JSON.parse(r.stdout) as { client_id: string }).client_id;
  });
  return (url, init) => fetch(url, { ...init, headers: { ...(init?.headers as Record<string, string> | undefined), authorization: `Bearer ${token}` } });
}


describe('custos CLI', () => {
  it('prints help with the commands and settings', () => {
    const r = spawnSync(process.execPath, [CLI, '--help'], { encoding: 'utf8' });
    assert.equal(r.status, 0);
    assert.match(r.stdout, /custos serve|serve\s+Start/);
    for (const v of ['PORT', 'HOST', 'DATA_DIR', 'BASE_URL', 'LOG_LEVEL']) assert.match(r.stdout, new RegExp(v));
    const bad = spawnSync(process.execPath, [CLI, 'frobnicate'], { encoding: 'utf8' });
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /unknown command/);
  });

  it('runs two servers side by side on their own PORT and DATA_DIR, creating the data dir and key', async () => {
    const root = tempDir();
    const dirA = path.join(root, 'a', 'nested');
    const dirB = path.join(root, 'b');
    const [portA, portB] = [await freePort(), await freePort()];
    // Independent servers: start them at once.
    const [a, b] = await Promise.all([serve({ PORT: String(portA), DATA_DIR: dirA }), serve({ PORT: String(portB), DATA_DIR: dirB })]);
    assert.ok(fs.existsSync(path.join(dirA, 'keys', 'master.key')));
    assert.ok(fs.existsSync(path.join(dirB, 'custos.db')));
    assert.notEqual(fs.readFileSync(path.join(dirA, 'keys', 'master.key'), 'utf8'), fs.readFileSync(path.join(dirB, 'keys', 'master.key'), 'utf8'));
    const [fetchA, fetchB] = await Promise.all([authorizedFetch(a.base, dirA), authorizedFetch(b.base, dirB)]);
    assert.equal((await fetch(`${a.base}/Patient`)).status, 401, 'no token, no data');
    const created = await fetchA(`${a.base}/Patient`, { method: 'POST', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify({ resourceType: 'Patient', gender: 'female' }) });
    assert.equal(created.status, 201);
    assert.equal(created.headers.get('location')?.startsWith(`${a.base}/Patient/`), true, 'Location uses the default BASE_URL of its own port');
    const id = ((await created.json()) as { id: string }).id;
    assert.equal((await fetchA(`${a.base}/Patient/${id}`)).status, 200);
    assert.equal((await fetchB(`${b.base}/Patient/${id}`)).status, 404);
    // Structured logs: JSON lines from pino.
    const line = a.logs().split('\n').find((l) => l.includes('custos listening'));
    assert.ok(line, a.logs());
    assert.equal(JSON.parse(line!).url, a.base);

    // A clean stop keeps the data: restart on the same DATA_DIR and read it back.
    a.child.kill('SIGTERM');
    await new Promise((r) => a.child.once('exit', r));
    assert.equal(a.child.exitCode, 0);
    const again = await serve({ PORT: String(portA), DATA_DIR: dirA });
    // The token, its client and the signing key survive the restart.
    const back = await fetchA(`${again.base}/Patient/${id}`);
    assert.equal(back.status, 200);
    assert.equal(((await back.json()) as { gender: string }).gender, 'female');
  });

  it('keeps every acknowledged write across a SIGKILL (acknowledged means durable)', async () => {
    const dir = path.join(tempDir(), 'data');
    const port = await freePort();
    const first = await serve({ PORT: String(port), DATA_DIR: dir });
    const authed = await authorizedFetch(first.base, dir);
    const acknowledged: string[] = [];
    // Kill while writes are in flight: every write answered 201 before the kill must survive.
    const writers = Array.from({ length: 8 }, async () => {
      for (;;) {
        try {
          const r = await authed(`${first.base}/Observation`, {
            method: 'POST',
            headers: { 'content-type': 'application/fhir+json', prefer: 'return=minimal' },
            body: JSON.stringify({ resourceType: 'Observation', status: 'final', code: { text: 'spo2' }, valueQuantity: { value: 97 } }),
          });
          if (r.status !== 201) return;
          acknowledged.push(r.headers.get('location')!.split('/fhir/')[1]!.split('/_history')[0]!);
          if (acknowledged.length === 150) first.child.kill('SIGKILL');
        } catch {
          return; // the server is gone
        }
      }
    });
    await Promise.all(writers);
    await new Promise((r) => (first.child.exitCode !== null || first.child.signalCode !== null ? r(undefined) : first.child.once('exit', r)));
    assert.ok(acknowledged.length >= 150);
    const again = await serve({ PORT: String(port), DATA_DIR: dir });
    const count = await (await authed(`${again.base}/Observation?_summary=count`)).json() as { total: number };
    assert.ok(count.total >= acknowledged.length, `${count.total} stored, ${acknowledged.length} acknowledged`);
    for (const ref of acknowledged) assert.equal((await authed(`${again.base}/${ref}`)).status, 200, ref);
  });

  it('audit trail durability: AuditEvents flushed before a SIGKILL survive it; a clean stop (SIGTERM) writes all that are queued', async () => {
    const dir = path.join(tempDir(), 'data');
    // The trail has its own writer thread; what this checks does not depend on the write and search
    // worker pools (0: their work runs on the event loop), each of whose threads loads the FHIR
    // definitions at start, seconds of CPU per server.
    const env = { DATA_DIR: dir, AUDIT: 'on', AUDIT_FLUSH_MS: '100', LEDGER: 'off', WRITE_WORKERS: '0', READ_WORKERS: '0' };
    const count = () => {
      const db = new Database(path.join(dir, 'custos.db'), { readonly: true });
      try {
        return {
          events: db.prepare("SELECT count(*) FROM audit_event").pluck().get() as number,
          sequence: (db.prepare("SELECT n FROM sequence WHERE name = 'audit-event'").pluck().get() as number | undefined) ?? 0,
        };
      } finally {
        db.close();
      }
    };
    const exited = (c: ChildProcess) => new Promise<void>((resolve) => { if (c.exitCode !== null || c.signalCode !== null) resolve(); else c.once('exit', () => resolve()); });

    const a = await serve({ ...env, PORT: String(await freePort()) });
    const fa = await authorizedFetch(a.base, dir);
    const created = await fa(`${a.base}/Patient`, { method: 'POST', headers: { 'content-type': 'application/fhir+json' }, body: JSON.stringify({ resourceType: 'Patient' }) });
    const id = ((await created.json()) as { id: string }).id;
    for (let i = 0; i < 30; i++) assert.equal((await fa(`${a.base}/Patient/${id}`)).status, 200);
    // Flushed: committed by the server's audit thread (it writes within AUDIT_FLUSH_MS; the wait is
    // bounded generously so that a loaded machine does not fail the test).
    for (let waited = 0; count().events < 32 && waited < 20_000; waited += 50) await new Promise((r) => setTimeout(r, 50));
    a.child.kill('SIGKILL');
    await exited(a.child);
    assert.deepEqual(count(), { events: 32, sequence: 32 }, 'the token grant, the create (in its transaction) and 30 reads (flushed)');

    const b = await serve({ ...env, PORT: String(await freePort()) });
    const fb = await authorizedFetch(b.base, dir);
    for (let i = 0; i < 20; i++) assert.equal((await fb(`${b.base}/Patient/${id}`)).status, 200);
    b.child.kill('SIGTERM'); // at once: the last reads are still queued
    await exited(b.child);
    assert.deepEqual(count(), { events: 53, sequence: 53 }, 'and a token grant and 20 reads');
  });
});
