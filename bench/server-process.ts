/**
 * Runs `node dist/cli.js serve` as a child process on a free loopback port with a fresh
 * DATA_DIR, so the load generator never shares the server's event loop.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT } from 'jose';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const FHIR_JSON_TYPE = 'application/fhir+json';

/** One FHIR request to a bench server; the body parsed as JSON when it is JSON. */
export async function fhirRequest(origin: string, method: string, p: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: any }> {
  const res = await request(`${origin}${p}`, {
    method: method as 'GET',
    headers: { accept: FHIR_JSON_TYPE, ...(body !== undefined ? { 'content-type': FHIR_JSON_TYPE } : {}), ...headers },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    headersTimeout: 120_000,
    bodyTimeout: 120_000,
  });
  const text = await res.body.text();
  let json: any;
  try { json = text ? JSON.parse(text) : undefined; } catch { json = text; }
  return { status: res.statusCode, json };
}

export function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export interface ServerProcess {
  child: ChildProcess;
  pid: number;
  origin: string;
  dataDir: string;
  /** Directory of the .cpuprofile written on exit, when profiling. */
  cpuProfDir?: string;
  /** Server log lines at warn level or above (LOG_LEVEL=warn, so every line). */
  logLines: string[];
  exited: boolean;
  /** `Bearer <token>` of a system/*.* backend client, or undefined for a build without auth. */
  authorization?: string;
  stop(): Promise<void>;
}

export interface StartOptions {
  cpuProfile?: boolean;
  /** Extra environment for the server (e.g. LEDGER=off). */
  env?: Record<string, string>;
}

export async function startServer(opts: StartOptions = {}): Promise<ServerProcess> {
  const port = await freePort();
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-bench-'));
  const nodeArgs: string[] = [];
  let cpuProfDir: string | undefined;
  if (opts.cpuProfile) {
    cpuProfDir = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-bench-cpuprof-'));
    nodeArgs.push('--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`);
  }
  // BENCH_SERVER_DIST: run another build of the server (A/B comparisons on one checkout).
  const dist = process.env.BENCH_SERVER_DIST ? path.resolve(process.env.BENCH_SERVER_DIST) : path.join(ROOT, 'dist');
  const child = spawn(process.execPath, [...nodeArgs, path.join(dist, 'cli.js'), 'serve'], {
    cwd: ROOT,
    env: { ...process.env, PORT: String(port), HOST: '127.0.0.1', DATA_DIR: dataDir, LOG_LEVEL: 'warn', ACCESS_TOKEN_TTL: '86400', ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logLines: string[] = [];
  const collect = (stream: NodeJS.ReadableStream | null, name: string) => {
    let buf = '';
    stream?.setEncoding('utf8');
    stream?.on('data', (chunk: string) => {
      buf += chunk;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (!line.trim()) continue;
        if (logLines.length < 1000) logLines.push(line);
        if (logLines.length <= 20) process.stderr.write(`[server ${name}] ${line.slice(0, 500)}\n`);
      }
    });
  };
  collect(child.stdout, 'stdout');
  collect(child.stderr, 'stderr');

  const exitPromise = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const proc: ServerProcess = {
    child,
    pid: child.pid ?? -1,
    origin: `http://127.0.0.1:${port}`,
    dataDir,
    cpuProfDir,
    logLines,
    exited: false,
    async stop() {
      if (proc.exited) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => { if (!proc.exited) child.kill('SIGKILL'); }, 10_000);
      await exitPromise;
      clearTimeout(timer);
    },
  };
  child.once('exit', (code, signal) => {
    proc.exited = true;
    if (code !== 0 && signal !== 'SIGTERM') log(`server exited (code ${code}, signal ${signal})`);
  });

  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.exited) throw new Error(`server exited during start-up:\n${logLines.join('\n')}`);
    try {
      const res = await request(`${proc.origin}/fhir/metadata`, { headersTimeout: 2000, bodyTimeout: 2000 });
      await res.body.dump();
      if (res.statusCode === 200) break;
    } catch { /* not yet listening */ }
    if (Date.now() > deadline) {
      await proc.stop();
      throw new Error('server did not answer GET /fhir/metadata within 30 s');
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  proc.authorization = await backendToken(proc, dist);
  return proc;
}

/**
 * Registers a trusted backend client with `custos client add` (as an operator would) and gets a
 * system/*.* token through the token endpoint, like a device gateway. A build without SMART
 * auth (no smart-configuration) gets none, so A/B runs against older builds still work.
 */
async function backendToken(proc: ServerProcess, dist: string): Promise<string | undefined> {
  const sc = await request(`${proc.origin}/fhir/.well-known/smart-configuration`);
  if (sc.statusCode !== 200) {
    await sc.body.dump();
    return undefined;
  }
  const tokenEndpoint = ((await sc.body.json()) as { token_endpoint: string }).token_endpoint;
  const { privateKey, publicKey } = await generateKeyPair('ES384', { extractable: true });
  const jwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(jwk);
  const jwksFile = path.join(proc.dataDir, 'bench-client-jwks.json');
  fs.writeFileSync(jwksFile, JSON.stringify({ keys: [{ ...jwk, kid, alg: 'ES384', use: 'sig' }] }));
  const added = spawnSync(process.execPath, [path.join(dist, 'cli.js'), 'client', 'add', '--type', 'backend', '--jwks', jwksFile, '--scope', 'system/*.*', '--name', 'bench', '--trusted', '--json'], {
    env: { ...process.env, DATA_DIR: proc.dataDir }, encoding: 'utf8',
  });
  if (added.status !== 0) throw new Error(`custos client add failed: ${added.stderr}`);
  const clientId = (JSON.parse(added.stdout) as { client_id: string }).client_id;
  const now = Math.floor(Date.now() / 1000);
  const assertion = await new SignJWT({}).setProtectedHeader({ alg: 'ES384', kid })
    .setIssuer(clientId).setSubject(clientId).setAudience(tokenEndpoint).setJti(randomUUID()).setIssuedAt(now).setExpirationTime(now + 120)
    .sign(privateKey);
  const res = await request(tokenEndpoint, {
    method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'system/*.*', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: assertion }).toString(),
  });
  const body = (await res.body.json()) as { access_token?: string };
  if (res.statusCode !== 200 || !body.access_token) throw new Error(`token request failed: ${res.statusCode} ${JSON.stringify(body)}`);
  return `Bearer ${body.access_token}`;
}

/** VmRSS / VmHWM of a process, in MiB (Linux /proc). */
/**
 * Resident memory of the server: rss (all), of it rss_file (file-backed pages: the binary,
 * shared libraries, which the kernel can drop and re-read at any time) and rss_anon (heaps,
 * SQLite page caches: the process's own).
 */
export function processMemory(pid: number): { rss_mb: number | null; rss_anon_mb: number | null; rss_file_mb: number | null; hwm_mb: number | null } {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (key: string) => {
      const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status);
      return m ? Math.round((Number(m[1]) / 1024) * 10) / 10 : null;
    };
    return { rss_mb: kb('VmRSS'), rss_anon_mb: kb('RssAnon'), rss_file_mb: kb('RssFile'), hwm_mb: kb('VmHWM') };
  } catch {
    return { rss_mb: null, rss_anon_mb: null, rss_file_mb: null, hwm_mb: null };
  }
}

/** Sizes of the SQLite files in DATA_DIR, in MiB. */
export function dbFileSizes(dataDir: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const name of fs.readdirSync(dataDir)) {
    if (!name.startsWith('custos.db')) continue;
    out[name] = Math.round((fs.statSync(path.join(dataDir, name)).size / 1048576) * 100) / 100;
  }
  return out;
}

/**
 * Server CPU seconds (user+system) of its main thread (the event loop: HTTP, routing, reads,
 * every write) and of all its other threads (search and write workers, the audit writer, the
 * checkpointer, V8's GC helpers), from /proc/<pid>/task/<tid>/stat. On a loaded 2-core machine
 * the split is steadier from run to run than throughput.
 */
export function serverThreadCpuSeconds(pid: number): { main: number; other: number } | null {
  try {
    let main = 0;
    let other = 0;
    for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
      let stat: string;
      try {
        stat = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      } catch {
        continue; // the thread ended meanwhile
      }
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const s = (Number(fields[11]) + Number(fields[12])) / 100;
      if (Number(tid) === pid) main += s;
      else other += s;
    }
    return { main, other };
  } catch {
    return null;
  }
}

/** Server CPU seconds (user+system) from /proc/<pid>/stat. */
export function serverCpuSeconds(pid: number): number | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state); utime is field 14, stime field 15.
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return null;
  }
}
