/**
 * Custos benchmark: `npm run bench` (BENCH_QUICK=1 for a short smoke run).
 *
 * Starts `node dist/cli.js serve` as a child process (own event loop) on a free loopback
 * port with a fresh DATA_DIR, then measures:
 *   single_create      POST /fhir/Observation, 16 connections
 *   bundle_create      transaction Bundles of 100 Observations, 2 and 4 connections
 *   (fill)             transaction Bundles up to the target number of Observations
 *   search_token_date  GET /fhir/Observation?code=..&date=ge..&date=lt..[&subject=..], 16 connections
 *   server_memory      VmRSS / VmHWM of the server, DB file sizes
 *   ledger             single creates against a second server with LEDGER=off; Merkle and gas costs
 *   consent            on its own server (1,000 patients, 100 consenting): a practitioner's searches
 *                      against a trusted token's, and direct on-chain revocation latency (bench/consent.ts)
 *   audit              two servers, AUDIT=on and AUDIT=off, filled alike (20,000 Observations; quick 5,000):
 *                      reads and searches on each, alternately (A B A B), 16 connections, and the
 *                      AuditEvents written per second at that load (bench/audit.ts)
 *   write_costs        in-process CPU per Observation of each write stage and the throughput ceiling
 *                      of this machine's cores (bench/write-costs.ts)
 *   growth             not in the default list (it adds ~6 min): on its own server, searches' first
 *                      pages, latest values and deep pages at 10,000 and 100,000 Observations
 *                      (BENCH_GROWTH_MAX=1000000: and 1,000,000; BENCH_QUICK: 10,000 only), for a
 *                      trusted token, a consent-limited practitioner and a patient (bench/growth.ts).
 *                      Run it with BENCH_SCENARIOS=growth.
 * Progress goes to stderr; the figures are one JSON object on stdout. Nothing here asserts
 * on timing.
 *
 * Environment: BENCH_QUICK=1 (short phases, 10,000 Observations), BENCH_CPU_PROF=1 (run the
 * server with --cpu-prof and add its top self-time functions to the output),
 * BENCH_DURATION / BENCH_OBSERVATIONS (override phase seconds / fill target),
 * BENCH_SCENARIOS (comma list of scenarios to run; search_token_date includes the fill),
 * BENCH_SERVER_DIST (directory of another build of the server to run, for A/B comparisons),
 * BENCH_GROWTH_MAX (largest step of `growth`), BENCH_GROWTH_BUNDLE (its load Bundles' size, 100).
 */
import autocannon from 'autocannon';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { measureAuthOverhead } from './auth-overhead.js';
import { AUDIT_TARGETS, measureAudit } from './audit.js';
import { CONSENT_TARGETS, measureConsent } from './consent.js';
import { GROWTH_TARGETS, measureGrowth } from './growth.js';
import { measureLedgerCosts } from './ledger.js';
import { measureWriteCosts } from './write-costs.js';
import { summarizeProfile, type ProfileSummary } from './cpu-profile.js';
import { heartRateObservation, observationBundle, patient, rng, searchPaths, transactionBundle } from './fixtures.js';
import { dbFileSizes, fhirRequest, log, processMemory, serverCpuSeconds, serverThreadCpuSeconds, startServer, type ServerProcess } from './server-process.js';

const QUICK = process.env.BENCH_QUICK === '1';
/** BENCH_SCENARIOS=single_create,bundle_create,search_token_date,ledger,consent,audit,write_costs (default: these), growth; handy with BENCH_CPU_PROF. */
const SCENARIOS = new Set((process.env.BENCH_SCENARIOS || 'single_create,bundle_create,search_token_date,ledger,consent,audit,write_costs').split(',').map((x) => x.trim()));
const CPU_PROF = process.env.BENCH_CPU_PROF === '1';
const envInt = (name: string): number | undefined => {
  const v = process.env[name];
  return v && /^\d+$/.test(v) ? Number(v) : undefined;
};

const CFG = {
  phaseSeconds: envInt('BENCH_DURATION') ?? (QUICK ? 3 : 10),
  warmupSeconds: QUICK ? 1 : 2,
  patients: 100,
  createConnections: 16,
  bundleSize: 100,
  bundleConnections: [2, 4],
  targetObservations: envInt('BENCH_OBSERVATIONS') ?? (QUICK ? 10_000 : 100_000),
  fillBundleSize: QUICK ? 500 : 1000,
  fillConcurrency: 2,
  searchConnections: 16,
  searchPathCount: 2000,
  searchSample: QUICK ? 50 : 100,
};

const TARGETS = {
  single_create_rps: 2500, bundle_observations_per_s: 12000, search_rps: 1500, search_p99_ms: 30,
  ledger_gas_per_version_at_1000_writes_per_s_max: 50, ledger_on_slowdown_pct_max: 5, auth_slowdown_pct_max: 10,
  ...CONSENT_TARGETS,
  ...AUDIT_TARGETS,
  ...GROWTH_TARGETS,
};
const FHIR_JSON = 'application/fhir+json';

const round = (n: number, d = 1) => Math.round(n * 10 ** d) / 10 ** d;

// ---------------------------------------------------------------------------------------------
// HTTP helpers

/** The Authorization header every request carries (set once the server is up; empty for a build without auth). */
const AUTH: Record<string, string> = {};

function fhir(origin: string, method: string, p: string, body?: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: any }> {
  return fhirRequest(origin, method, p, body, { ...AUTH, ...headers });
}

async function countObservations(origin: string): Promise<number> {
  const { status, json } = await fhir(origin, 'GET', '/fhir/Observation?_summary=count&_total=accurate');
  if (status !== 200 || typeof json?.total !== 'number') throw new Error(`count failed: ${status} ${JSON.stringify(json).slice(0, 300)}`);
  return json.total as number;
}

/**
 * Measures server and bench-process CPU over an async section, as % of one core, and the server's
 * CPU seconds split into its main thread (the event loop) and all its other threads.
 */
async function withCpu<T>(pid: number, fn: () => Promise<T>): Promise<{ value: T; server_cpu_pct: number | null; loadgen_cpu_pct: number; server_thread_cpu_s: { main: number; other: number } | null }> {
  const s0 = serverCpuSeconds(pid);
  const th0 = serverThreadCpuSeconds(pid);
  const l0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  const value = await fn();
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  const s1 = serverCpuSeconds(pid);
  const th1 = serverThreadCpuSeconds(pid);
  const l = process.cpuUsage(l0);
  return {
    value,
    server_cpu_pct: s0 !== null && s1 !== null ? round(((s1 - s0) / wall) * 100, 0) : null,
    loadgen_cpu_pct: round(((l.user + l.system) / 1e6 / wall) * 100, 0),
    server_thread_cpu_s: th0 && th1 ? { main: th1.main - th0.main, other: th1.other - th0.other } : null,
  };
}

/**
 * Server CPU per unit of work (ms), main thread and other threads: steadier between runs than
 * throughput on a shared machine, and it shows whether the event loop is the bound.
 */
function cpuMsPer(threads: { main: number; other: number } | null, units: number): { main: number; other: number } | null {
  // The CPU figures span the warm-up too (see withCpu around cannon): divide by what was sent in both.
  if (!threads || units <= 0) return null;
  return { main: round((threads.main * 1000) / units, 3), other: round((threads.other * 1000) / units, 3) };
}

// ---------------------------------------------------------------------------------------------
// autocannon

interface CannonRun {
  result: autocannon.Result;
  errorSamples: string[];
}

async function cannon(origin: string, opts: Omit<autocannon.Options, 'url'> & { label: string }): Promise<CannonRun> {
  const errorSamples: string[] = [];
  const requests = opts.requests?.map((r) => ({
    ...r,
    onResponse: (status: number, body: string) => {
      if ((status < 200 || status >= 300) && errorSamples.length < 3) errorSamples.push(`${status} ${body.slice(0, 400)}`);
    },
  }));
  log(`${opts.label}: warm-up ${CFG.warmupSeconds}s + ${opts.duration}s at ${opts.connections} connections`);
  const instance = autocannon({
    url: origin,
    timeout: 60,
    ...opts,
    requests,
    warmup: { connections: opts.connections, duration: CFG.warmupSeconds },
  });
  let lastLog = Date.now() + CFG.warmupSeconds * 1000;
  let responses = 0;
  instance.on('response', () => {
    responses++;
    const now = Date.now();
    if (now - lastLog >= 2000) {
      log(`${opts.label}: ${responses} responses so far`);
      lastLog = now;
    }
  });
  const result = await instance;
  log(`${opts.label}: ${result['2xx']} 2xx, ${result.non2xx} non-2xx, ${result.errors} errors, ${round(result.requests.average)} req/s, p50 ${result.latency.p50} ms, p99 ${result.latency.p99} ms`);
  for (const e of errorSamples) log(`${opts.label}: sample error response: ${e}`);
  return { result, errorSamples };
}

/** Requests sent during the warm-up and the measured phase together. */
function requestsSent(r: autocannon.Result): number {
  return r.requests.sent + (r.warmup?.requests.sent ?? 0);
}

function latencyFigures(r: autocannon.Result) {
  return {
    p50_ms: r.latency.p50,
    p90_ms: r.latency.p90,
    p99_ms: r.latency.p99,
    max_ms: r.latency.max,
    mean_ms: round(r.latency.average, 2),
  };
}

function statusFigures(r: autocannon.Result) {
  return {
    non_2xx: r.non2xx,
    errors: r.errors,
    timeouts: r.timeouts,
    status_codes: Object.fromEntries(Object.entries(r.statusCodeStats).map(([k, v]) => [k, v.count])),
  };
}

// ---------------------------------------------------------------------------------------------
// scenarios

async function createPatients(origin: string): Promise<string[]> {
  const resources = Array.from({ length: CFG.patients }, (_, i) => patient(i));
  const { status, json } = await fhir(origin, 'POST', '/fhir', transactionBundle(resources));
  if (status !== 200) throw new Error(`creating patients failed: ${status} ${JSON.stringify(json).slice(0, 500)}`);
  const ids = (json.entry as Array<{ resource?: { id?: string }; response?: { location?: string } }>).map((e) => {
    const id = e.resource?.id ?? /Patient\/([^/]+)/.exec(e.response?.location ?? '')?.[1];
    if (!id) throw new Error(`no id in transaction response entry ${JSON.stringify(e).slice(0, 300)}`);
    return id;
  });
  log(`created ${ids.length} patients`);
  return ids;
}

async function singleCreate(server: ServerProcess, patientIds: string[]) {
  const r = rng(1);
  const { value: run, server_cpu_pct, loadgen_cpu_pct, server_thread_cpu_s } = await withCpu(server.pid, () => cannon(server.origin, {
    label: 'single_create',
    connections: CFG.createConnections,
    duration: CFG.phaseSeconds,
    requests: [{
      method: 'POST',
      path: '/fhir/Observation',
      headers: { 'content-type': FHIR_JSON, accept: FHIR_JSON, ...AUTH },
      setupRequest: (req) => ({ ...req, body: JSON.stringify(heartRateObservation(r, patientIds)) }),
    }],
  }));
  const res = run.result;
  return {
    connections: CFG.createConnections,
    duration_s: res.duration,
    requests_per_s: round(res.requests.average),
    created: res['2xx'],
    created_per_s: round(res['2xx'] / res.duration),
    ...latencyFigures(res),
    ...statusFigures(res),
    server_cpu_pct,
    loadgen_cpu_pct,
    server_cpu_ms_per_request_by_thread: cpuMsPer(server_thread_cpu_s, requestsSent(res)),
    ...(run.errorSamples.length ? { error_samples: run.errorSamples } : {}),
  };
}

async function bundleCreate(server: ServerProcess, patientIds: string[]) {
  const byConnections: Record<string, Record<string, unknown>> = {};
  let best: { connections: number; obsPerS: number } | undefined;
  for (const connections of CFG.bundleConnections) {
    const r = rng(100 + connections);
    const { value: run, server_cpu_pct, loadgen_cpu_pct, server_thread_cpu_s } = await withCpu(server.pid, () => cannon(server.origin, {
      label: `bundle_create x${connections}`,
      connections,
      duration: CFG.phaseSeconds,
      requests: [{
        method: 'POST',
        path: '/fhir',
        headers: { 'content-type': FHIR_JSON, accept: FHIR_JSON, ...AUTH },
        setupRequest: (req) => ({ ...req, body: observationBundle(r, patientIds, CFG.bundleSize) }),
      }],
    }));
    const res = run.result;
    const obsPerS = (res['2xx'] * CFG.bundleSize) / res.duration;
    byConnections[String(connections)] = {
      duration_s: res.duration,
      observations_per_s: round(obsPerS),
      bundles_per_s: round(res['2xx'] / res.duration, 2),
      bundles_ok: res['2xx'],
      ...latencyFigures(res),
      ...statusFigures(res),
      server_cpu_pct,
      loadgen_cpu_pct,
      server_cpu_ms_per_observation_by_thread: cpuMsPer(server_thread_cpu_s, requestsSent(res) * CFG.bundleSize),
      ...(run.errorSamples.length ? { error_samples: run.errorSamples } : {}),
    };
    if (!best || obsPerS > best.obsPerS) best = { connections, obsPerS };
  }
  const b = byConnections[String(best!.connections)]!;
  return {
    bundle_size: CFG.bundleSize,
    best_connections: best!.connections,
    observations_per_s: b.observations_per_s,
    bundles_per_s: b.bundles_per_s,
    p50_ms: b.p50_ms,
    p99_ms: b.p99_ms,
    non_2xx: b.non_2xx,
    errors: b.errors,
    server_cpu_ms_per_observation_by_thread: b.server_cpu_ms_per_observation_by_thread,
    by_connections: byConnections,
  };
}

async function fill(server: ServerProcess, patientIds: string[]) {
  const start = await countObservations(server.origin);
  const need = Math.max(0, CFG.targetObservations - start);
  log(`fill: ${start} Observations stored, adding ${need} in bundles of ${CFG.fillBundleSize} (${CFG.fillConcurrency} concurrent)`);
  const r = rng(7);
  let queued = 0;
  let done = 0;
  let failures = 0;
  let nextLog = 10_000;
  const t0 = performance.now();
  const worker = async () => {
    while (queued < need) {
      const n = Math.min(CFG.fillBundleSize, need - queued);
      queued += n;
      const body = observationBundle(r, patientIds, n);
      const { status, json } = await fhir(server.origin, 'POST', '/fhir', body, { prefer: 'return=minimal' });
      if (status !== 200) {
        failures++;
        queued -= n;
        log(`fill: bundle failed: ${status} ${JSON.stringify(json).slice(0, 400)}`);
        if (failures > 5) throw new Error('fill: too many failed bundles');
        continue;
      }
      done += n;
      if (done >= nextLog || done === need) {
        const s = (performance.now() - t0) / 1000;
        log(`fill: ${start + done}/${CFG.targetObservations} Observations (${round(done / s, 0)}/s)`);
        while (nextLog <= done) nextLog += 10_000;
      }
    }
  };
  const { server_cpu_pct } = await withCpu(server.pid, () => Promise.all(Array.from({ length: CFG.fillConcurrency }, worker)));
  const seconds = (performance.now() - t0) / 1000;
  const total = await countObservations(server.origin);
  log(`fill: done, ${total} Observations stored`);
  return {
    observations_before: start,
    observations_added: done,
    observations_total: total,
    bundle_size: CFG.fillBundleSize,
    concurrency: CFG.fillConcurrency,
    seconds: round(seconds),
    observations_per_s: round(need > 0 ? done / seconds : 0),
    server_cpu_pct,
  };
}

async function searchTokenDate(server: ServerProcess, patientIds: string[]) {
  const paths = searchPaths(rng(3), patientIds, CFG.searchPathCount);
  // Sample first (also warms the caches a little, as the warm-up does anyway).
  let entries = 0;
  let totals = 0;
  let withTotal = 0;
  let empty = 0;
  let bad = 0;
  const sample = paths.slice(0, CFG.searchSample);
  for (const p of sample) {
    const { status, json } = await fhir(server.origin, 'GET', p);
    if (status !== 200) { bad++; continue; }
    const n = (json.entry as unknown[] | undefined)?.length ?? 0;
    entries += n;
    if (n === 0) empty++;
    if (typeof json.total === 'number') { totals += json.total; withTotal++; }
  }
  const ok = sample.length - bad;
  log(`search sample: ${ok}/${sample.length} ok, mean ${round(entries / Math.max(1, ok))} entries per page`);

  let i = 0;
  const { value: run, server_cpu_pct, loadgen_cpu_pct, server_thread_cpu_s } = await withCpu(server.pid, () => cannon(server.origin, {
    label: 'search_token_date',
    connections: CFG.searchConnections,
    duration: CFG.phaseSeconds,
    requests: [{
      method: 'GET',
      path: paths[0]!,
      headers: { accept: FHIR_JSON, ...AUTH },
      setupRequest: (req) => ({ ...req, path: paths[i++ % paths.length]! }),
    }],
  }));
  const res = run.result;
  return {
    connections: CFG.searchConnections,
    distinct_urls: paths.length,
    duration_s: res.duration,
    searches_per_s: round(res.requests.average),
    ...latencyFigures(res),
    ...statusFigures(res),
    server_cpu_pct,
    loadgen_cpu_pct,
    server_cpu_ms_per_request_by_thread: cpuMsPer(server_thread_cpu_s, requestsSent(res)),
    sample: {
      size: sample.length,
      non_200: bad,
      mean_entries_per_response: round(entries / Math.max(1, ok), 2),
      empty_responses: empty,
      mean_total: withTotal ? round(totals / withTotal, 1) : null,
      example_url_with_subject: paths.find((p) => p.includes('subject=')),
      example_url_without_subject: paths.find((p) => !p.includes('subject=')),
    },
    ...(run.errorSamples.length ? { error_samples: run.errorSamples } : {}),
  };
}

// ---------------------------------------------------------------------------------------------

async function runScenarios(server: ServerProcess, out: Record<string, unknown>): Promise<void> {
  out.server_memory_idle = processMemory(server.pid);
  const patientIds = await createPatients(server.origin);
  if (SCENARIOS.has('single_create')) out.single_create = await singleCreate(server, patientIds);
  if (SCENARIOS.has('bundle_create')) out.bundle_create = await bundleCreate(server, patientIds);
  if (SCENARIOS.has('search_token_date')) {
    out.fill = await fill(server, patientIds);
    out.server_memory = {
      after_load: { ...processMemory(server.pid), observations: (out.fill as { observations_total: number }).observations_total },
      db_files_mb: dbFileSizes(server.dataDir),
    };
    out.search_token_date = await searchTokenDate(server, patientIds);
    (out.server_memory as Record<string, unknown>).after_search = processMemory(server.pid);
  } else {
    out.server_memory = { after_run: processMemory(server.pid), db_files_mb: dbFileSizes(server.dataDir) };
  }
}

/**
 * Ledger on (the main server: embedded anvil, anchoring every version) against ledger off (a
 * second server, LEDGER=off) for single creates in the same run, plus batching throughput and gas.
 */
async function ledgerComparison(out: Record<string, unknown>): Promise<Record<string, unknown>> {
  log('ledger: single creates on a second server with LEDGER=off');
  const off = await startServer({ env: { LEDGER: 'off' } });
  const mainAuth = AUTH.authorization;
  try {
    if (off.authorization) AUTH.authorization = off.authorization;
    const offRun = await singleCreate(off, await createPatients(off.origin));
    const on = (out.single_create as { created_per_s: number }).created_per_s;
    log('ledger: Merkle batching and anchor gas on an anvil node');
    const costs = await measureLedgerCosts({ batchSize: 10_000, batchMs: 2_000, rates: [1_000, 10_000] });
    return {
      single_create_ledger_on_per_s: on,
      single_create_ledger_off_per_s: offRun.created_per_s,
      ledger_on_slowdown_pct: round((1 - on / offRun.created_per_s) * 100),
      ...costs,
    };
  } finally {
    if (mainAuth) AUTH.authorization = mainAuth;
    await off.stop();
    fs.rmSync(off.dataDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  log(`mode ${QUICK ? 'quick' : 'full'}: phases ${CFG.phaseSeconds}s, target ${CFG.targetObservations} Observations${CPU_PROF ? ', server --cpu-prof' : ''}`);
  const started = Date.now();
  const server = await startServer({ cpuProfile: CPU_PROF });
  log(`server pid ${server.pid} at ${server.origin}, DATA_DIR ${server.dataDir}${server.authorization ? ', SMART auth on (system/*.* backend token)' : ', no auth (older build)'}`);
  if (server.authorization) AUTH.authorization = server.authorization;
  // Never leave the server behind, even when the bench itself is interrupted.
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      log(`${sig}: stopping server`);
      if (!server.exited) server.child.kill('SIGKILL');
      process.exit(130);
    });
  }
  process.once('exit', () => { if (!server.exited) server.child.kill('SIGKILL'); });
  const out: Record<string, unknown> = {
    machine: {
      cpus: os.cpus().length,
      cpu_model: os.cpus()[0]?.model,
      total_memory_mb: Math.round(os.totalmem() / 1048576),
      node: process.version,
      platform: `${os.platform()} ${os.release()}`,
    },
    mode: QUICK ? 'quick' : 'full',
    auth: server.authorization ? 'every request carries a Bearer token (SMART Backend Services, system/*.*)' : 'off (a build without SMART auth)',
  };
  let failed: unknown;
  try {
    await runScenarios(server, out);
  } catch (err) {
    failed = err;
    log(`FAILED: ${(err as Error).stack ?? String(err)}`);
  } finally {
    log('stopping server');
    await server.stop();
  }
  out.server_log = { lines: server.logLines.length, first: server.logLines.slice(0, 5).map((l) => l.slice(0, 500)) };
  if (server.cpuProfDir) {
    const files = fs.readdirSync(server.cpuProfDir).filter((f) => f.endsWith('.cpuprofile'));
    const summaries: ProfileSummary[] = files.map((f) => summarizeProfile(path.join(server.cpuProfDir!, f)));
    out.server_cpu_profile = summaries;
    log(`cpu profile(s): ${files.map((f) => path.join(server.cpuProfDir!, f)).join(', ')}`);
  }
  fs.rmSync(server.dataDir, { recursive: true, force: true });
  if (SCENARIOS.has('ledger') && SCENARIOS.has('single_create') && !failed && !process.env.BENCH_SERVER_DIST) {
    try {
      out.ledger = await ledgerComparison(out);
    } catch (err) {
      log(`ledger comparison FAILED: ${(err as Error).stack ?? String(err)}`);
      out.ledger = { error: String((err as Error).message ?? err) };
    }
  }
  if (SCENARIOS.has('consent') && !failed && !process.env.BENCH_SERVER_DIST) {
    try {
      out.consent = await measureConsent({ quick: QUICK, phaseSeconds: CFG.phaseSeconds, observations: CFG.targetObservations, cpuProfile: CPU_PROF, tools: { cannon, withCpu } });
    } catch (err) {
      log(`consent FAILED: ${(err as Error).stack ?? String(err)}`);
      out.consent = { error: String((err as Error).message ?? err) };
    }
  }
  if (SCENARIOS.has('audit') && !failed) {
    try {
      out.audit = await measureAudit({ phaseSeconds: CFG.phaseSeconds, observations: QUICK ? 5000 : 20_000, tools: { cannon, withCpu } });
    } catch (err) {
      log(`audit FAILED: ${(err as Error).stack ?? String(err)}`);
      out.audit = { error: String((err as Error).message ?? err) };
    }
  }
  if (SCENARIOS.has('growth') && !failed) {
    try {
      const max = envInt('BENCH_GROWTH_MAX') ?? (QUICK ? 10_000 : 100_000);
      const steps = [...[10_000, 100_000, 1_000_000].filter((n) => n < max), max];
      out.growth = await measureGrowth({ steps, phaseSeconds: envInt('BENCH_DURATION') ?? (QUICK ? 3 : 8), cpuProfile: CPU_PROF, tools: { cannon, withCpu } });
    } catch (err) {
      log(`growth FAILED: ${(err as Error).stack ?? String(err)}`);
      out.growth = { error: String((err as Error).message ?? err) };
    }
  }
  if (SCENARIOS.has('write_costs') && !process.env.BENCH_SERVER_DIST) {
    out.write_costs = await measureWriteCosts({ count: QUICK ? 5000 : 20_000, bundleSize: CFG.bundleSize });
  }
  if (server.authorization && !process.env.BENCH_SERVER_DIST) {
    log('auth overhead: token verification and scope decision, in-process');
    out.auth_overhead = await measureAuthOverhead();
  }
  out.targets = TARGETS;
  out.elapsed_s = round((Date.now() - started) / 1000);
  if (failed) out.error = String((failed as Error).message ?? failed);
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  process.exitCode = failed ? 1 : 0;
}

await main();
