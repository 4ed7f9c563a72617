/**
 * The `audit` scenario: what the audit trail (AUDIT=on, src/audit) costs reads and searches, and
 * how many AuditEvents per second the server writes at that load.
 *
 * Two servers at once, one with AUDIT=on and one with AUDIT=off, the same AUDIT_FLUSH_MS, filled
 * identically (one after the other): 100 Patients (one transaction Bundle), then Observations in transaction Bundles
 * of 1,000 (2 concurrent, Prefer: return=minimal; the Observation ids come from the entries'
 * response.location). Then, 16 connections each, alternately on the two servers (on, off, on,
 * off):
 *   read    GET /fhir/Observation/<id>, rotating through the stored Observations
 *   search  the code+date(+subject) URLs of the search_token_date scenario
 * Around each phase both servers' AuditEvents are counted (GET /fhir/AuditEvent?_summary=count,
 * after waiting AUDIT_FLUSH_MS + 1 s so the queue is written); the difference, less the count
 * request's own AuditEvent, over the phase's wall time is the AuditEvents written per second.
 * Nothing here asserts on timing.
 */
import fs from 'node:fs';
import { measureAuditCosts } from './audit-costs.js';
import type { ConsentBenchTools } from './consent.js';
import { observationBundle, patient, rng, searchPaths, transactionBundle } from './fixtures.js';
import { fhirRequest, log, processMemory, serverCpuSeconds, serverThreadCpuSeconds, startServer, type ServerProcess } from './server-process.js';

export const AUDIT_TARGETS = { audit_slowdown_pct_max: 10 };

/** What run.ts lends this scenario (its autocannon wrapper and CPU accounting): the same as for `consent`. */
export type AuditBenchTools = ConsentBenchTools;

export interface AuditBenchOptions {
  /** Seconds per measured phase (each also gets run.ts's warm-up). */
  phaseSeconds: number;
  observations: number;
  /** AUDIT_FLUSH_MS for both servers (default: the environment's, else the server's default 500). */
  flushMs?: number;
  tools: AuditBenchTools;
}

const CFG = {
  patients: 100,
  fillBundleSize: 1000,
  fillConcurrency: 2,
  connections: 16,
  rounds: 2,
  searchPathCount: 2000,
  sample: 20,
  /** Extra wait after AUDIT_FLUSH_MS before counting, so the last batch is written. */
  flushSlackMs: 1000,
};

const FHIR_JSON = 'application/fhir+json';
const round = (n: number, d = 1) => Math.round(n * 10 ** d) / 10 ** d;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

type Mode = 'on' | 'off';

interface Side {
  mode: Mode;
  server: ServerProcess;
  auth: string;
  patientIds: string[];
  observationIds: string[];
  /** AuditEvents the count request itself adds (1 when AuditEvent searches are audited). */
  countOverhead: number;
}

// ---------------------------------------------------------------------------------------------
// HTTP

function call(side: Pick<Side, 'server' | 'auth'>, method: 'GET' | 'POST', p: string, body?: unknown, headers: Record<string, string> = {}) {
  return fhirRequest(side.server.origin, method, p, body, { authorization: side.auth, ...headers });
}

async function must(what: string, r: Promise<{ status: number; json: any }>, expected = [200, 201]): Promise<any> {
  const res = await r;
  if (!expected.includes(res.status)) throw new Error(`${what}: HTTP ${res.status} ${JSON.stringify(res.json).slice(0, 500)}`);
  return res.json;
}

async function auditCount(side: Side): Promise<number> {
  const json = await must(`audit ${side.mode}: counting AuditEvents`, call(side, 'GET', '/fhir/AuditEvent?_summary=count'), [200]);
  if (typeof json?.total !== 'number') throw new Error(`audit ${side.mode}: AuditEvent count without a total: ${JSON.stringify(json).slice(0, 300)}`);
  return json.total as number;
}

// ---------------------------------------------------------------------------------------------
// Setup

/** The id out of a transaction-response entry ("Observation/<id>/_history/1", possibly absolute). */
function idOf(type: string, e: { resource?: { id?: string }; response?: { location?: string } }): string {
  const id = e.resource?.id ?? new RegExp(`(?:^|/)${type}/([^/]+)/_history/`).exec(e.response?.location ?? '')?.[1];
  if (!id) throw new Error(`no ${type} id in transaction response entry ${JSON.stringify(e).slice(0, 300)}`);
  return id;
}

async function fill(side: Omit<Side, 'patientIds' | 'observationIds' | 'countOverhead'>, tools: AuditBenchTools, target: number) {
  const label = `audit ${side.mode}`;
  const resources = Array.from({ length: CFG.patients }, (_, i) => patient(i));
  const pj = await must(`${label}: creating patients`, call(side, 'POST', '/fhir', transactionBundle(resources)), [200]);
  const patientIds = (pj.entry as Array<Parameters<typeof idOf>[1]>).map((e) => idOf('Patient', e));
  log(`${label}: created ${patientIds.length} patients`);

  const r = rng(7);
  const observationIds: string[] = [];
  let queued = 0;
  let nextLog = 5_000;
  const t0 = performance.now();
  const worker = async () => {
    while (queued < target) {
      const n = Math.min(CFG.fillBundleSize, target - queued);
      queued += n;
      const json = await must(`${label}: fill bundle`, call(side, 'POST', '/fhir', observationBundle(r, patientIds, n), { prefer: 'return=minimal' }), [200]);
      const entries = (json?.entry ?? []) as Array<Parameters<typeof idOf>[1]>;
      if (entries.length !== n) throw new Error(`${label}: transaction response has ${entries.length} entries for ${n} Observations`);
      for (const e of entries) observationIds.push(idOf('Observation', e));
      if (observationIds.length >= nextLog || observationIds.length === target) {
        log(`${label}: fill ${observationIds.length}/${target} Observations (${round(observationIds.length / ((performance.now() - t0) / 1000), 0)}/s)`);
        while (nextLog <= observationIds.length) nextLog += 5_000;
      }
    }
  };
  const { server_cpu_pct } = await tools.withCpu(side.server.pid, () => Promise.all(Array.from({ length: CFG.fillConcurrency }, worker)));
  const seconds = (performance.now() - t0) / 1000;
  return {
    patientIds,
    observationIds,
    figures: { seconds: round(seconds), observations_per_s: round(observationIds.length / seconds), server_cpu_pct },
  };
}

/** AuditEvents the count request itself adds: count three times, each after the queue is flushed. */
async function countOverhead(side: Side, flushMs: number): Promise<number> {
  await auditCount(side);
  await sleep(flushMs + CFG.flushSlackMs);
  const a = await auditCount(side);
  await sleep(flushMs + CFG.flushSlackMs);
  const b = await auditCount(side);
  return b - a;
}

/** A few requests of the phase's kind, outside any measurement: do both servers answer alike? */
async function sample(side: Side, kind: 'read' | 'search', paths: string[]) {
  let bad = 0;
  let entries = 0;
  for (const p of paths.slice(0, CFG.sample)) {
    const r = await call(side, 'GET', p);
    if (r.status !== 200) { bad++; continue; }
    if (kind === 'search') entries += (r.json?.entry as unknown[] | undefined)?.length ?? 0;
  }
  const ok = Math.min(CFG.sample, paths.length) - bad;
  return { size: Math.min(CFG.sample, paths.length), non_200: bad, ...(kind === 'search' ? { mean_entries_per_page: round(entries / Math.max(1, ok), 2) } : {}) };
}

// ---------------------------------------------------------------------------------------------
// Phases

interface RoundFigures {
  requests_per_s: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  max_ms: number;
  non_2xx: number;
  errors: number;
  timeouts: number;
  server_cpu_pct: number | null;
  loadgen_cpu_pct: number;
  /** Requests sent in warm-up and measurement together. */
  requests_sent: number;
  /** Wall time of the whole autocannon call (warm-up included). */
  wall_s: number;
  /** Server CPU over the phase and the flush wait after it, per request sent. */
  server_cpu_ms_per_request: number | null;
  /** The same, split into the main thread (event loop) and all the server's other threads. */
  server_cpu_ms_per_request_by_thread: { main: number; other: number } | null;
  audit_events: number;
  audit_events_per_s: number;
  error_samples?: string[];
}

async function phase(side: Side, tools: AuditBenchTools, kind: 'read' | 'search', k: number, paths: string[], seconds: number, flushMs: number): Promise<RoundFigures> {
  const label = `audit ${kind} ${side.mode} (round ${k})`;
  const before = await auditCount(side);
  const cpu0 = serverCpuSeconds(side.server.pid);
  const threads0 = serverThreadCpuSeconds(side.server.pid);
  let i = 0;
  const t0 = performance.now();
  const { value: run, server_cpu_pct, loadgen_cpu_pct } = await tools.withCpu(side.server.pid, () => tools.cannon(side.server.origin, {
    label,
    connections: CFG.connections,
    duration: seconds,
    requests: [{
      method: 'GET',
      path: paths[0]!,
      headers: { accept: FHIR_JSON, authorization: side.auth },
      setupRequest: (req) => ({ ...req, path: paths[i++ % paths.length]! }),
    }],
  }));
  const wall = (performance.now() - t0) / 1000;
  const r = run.result;
  const ok = r['2xx'];
  const bad = r.non2xx + r.errors;
  if (ok === 0 || bad > ok) {
    throw new Error(`${label}: mostly failed (${ok} 2xx, ${r.non2xx} non-2xx, ${r.errors} errors)${run.errorSamples.length ? `; samples: ${run.errorSamples.join(' | ')}` : ''}`);
  }
  await sleep(flushMs + CFG.flushSlackMs);
  const cpu1 = serverCpuSeconds(side.server.pid);
  const threads1 = serverThreadCpuSeconds(side.server.pid);
  const after = await auditCount(side);
  const events = after - before - side.countOverhead;
  const sent = r.requests.sent + (r.warmup?.requests.sent ?? 0);
  const perS = events / wall;
  if (side.mode === 'on') log(`${label}: ${events} AuditEvents for ${sent} requests in ${round(wall)} s (${round(perS, 0)}/s)`);
  return {
    requests_per_s: round(r.requests.average),
    p50_ms: r.latency.p50,
    p90_ms: r.latency.p90,
    p99_ms: r.latency.p99,
    max_ms: r.latency.max,
    non_2xx: r.non2xx,
    errors: r.errors,
    timeouts: r.timeouts,
    server_cpu_pct,
    loadgen_cpu_pct,
    requests_sent: sent,
    wall_s: round(wall, 2),
    server_cpu_ms_per_request: cpu0 !== null && cpu1 !== null && sent > 0 ? round(((cpu1 - cpu0) * 1000) / sent, 3) : null,
    server_cpu_ms_per_request_by_thread: threads0 && threads1 && sent > 0
      ? { main: round(((threads1.main - threads0.main) * 1000) / sent, 3), other: round(((threads1.other - threads0.other) * 1000) / sent, 3) }
      : null,
    audit_events: events,
    audit_events_per_s: round(perS),
    ...(run.errorSamples.length ? { error_samples: run.errorSamples } : {}),
  };
}

function summarize(rounds: RoundFigures[]) {
  const cpu = rounds.map((x) => x.server_cpu_pct).filter((x): x is number => x !== null);
  const cpuPerReq = rounds.map((x) => x.server_cpu_ms_per_request).filter((x): x is number => x !== null);
  const byThread = rounds.map((x) => x.server_cpu_ms_per_request_by_thread).filter((x): x is { main: number; other: number } => x !== null);
  return {
    requests_per_s: round(mean(rounds.map((x) => x.requests_per_s))),
    rounds_requests_per_s: rounds.map((x) => x.requests_per_s),
    p50_ms: round(mean(rounds.map((x) => x.p50_ms))),
    p99_ms: round(mean(rounds.map((x) => x.p99_ms))),
    non_2xx: rounds.reduce((a, x) => a + x.non_2xx, 0),
    errors: rounds.reduce((a, x) => a + x.errors, 0),
    server_cpu_pct: cpu.length ? round(mean(cpu), 0) : null,
    server_cpu_ms_per_request: cpuPerReq.length ? round(mean(cpuPerReq), 3) : null,
    server_cpu_ms_per_request_by_thread: byThread.length ? { main: round(mean(byThread.map((x) => x.main)), 3), other: round(mean(byThread.map((x) => x.other)), 3) } : null,
    audit_events: rounds.reduce((a, x) => a + x.audit_events, 0),
    rounds,
  };
}

async function compare(sides: Record<Mode, Side>, tools: AuditBenchTools, kind: 'read' | 'search', pathsOf: (s: Side) => string[], o: { seconds: number; flushMs: number }, problems: string[]) {
  const paths = { on: pathsOf(sides.on), off: pathsOf(sides.off) };
  const samples = { on: await sample(sides.on, kind, paths.on), off: await sample(sides.off, kind, paths.off) };
  log(`audit ${kind}: sample ${JSON.stringify(samples)}`);
  // The samples' own AuditEvents must be written before the first phase's count.
  await sleep(o.flushMs + CFG.flushSlackMs);
  const rounds: Record<Mode, RoundFigures[]> = { on: [], off: [] };
  for (let k = 1; k <= CFG.rounds; k++) {
    for (const m of ['on', 'off'] as const) rounds[m].push(await phase(sides[m], tools, kind, k, paths[m], o.seconds, o.flushMs));
  }
  const on = summarize(rounds.on);
  const off = summarize(rounds.off);
  const wall = rounds.on.reduce((a, x) => a + x.wall_s, 0);
  const sent = rounds.on.reduce((a, x) => a + x.requests_sent, 0);
  if (on.audit_events <= 0) throw new Error(`audit ${kind}: the AUDIT=on server recorded ${on.audit_events} AuditEvents for ${sent} requests (a build without the audit trail?)`);
  if (off.audit_events !== 0) problems.push(`${kind}: the AUDIT=off server's AuditEvent count changed by ${off.audit_events} over its phases`);
  const perRequest = on.audit_events / sent;
  if (Math.abs(perRequest - 1) > 0.02) problems.push(`${kind}: ${on.audit_events} AuditEvents for ${sent} requests sent on the AUDIT=on server (ratio ${round(perRequest, 3)}, expected about 1)`);
  const slowdown = round((1 - on.requests_per_s / off.requests_per_s) * 100);
  log(`audit ${kind}: on ${on.requests_per_s}/s, off ${off.requests_per_s}/s, slowdown ${slowdown}%, ${round(on.audit_events / wall)} AuditEvents/s`);
  return {
    distinct_paths: new Set(paths.on).size,
    on,
    off,
    slowdown_pct: slowdown,
    target_slowdown_pct_max: AUDIT_TARGETS.audit_slowdown_pct_max,
    audit_events_per_s: round(on.audit_events / wall),
    audit_events_per_request: round(perRequest, 3),
    sample: samples,
  };
}

/** A fixed shuffle (the same order of positions on both servers). */
function shuffled<T>(xs: readonly T[], seed: number): T[] {
  const r = rng(seed);
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

// ---------------------------------------------------------------------------------------------

export async function measureAudit(o: AuditBenchOptions): Promise<Record<string, unknown>> {
  const tAll = performance.now();
  const envFlush = Number(process.env.AUDIT_FLUSH_MS);
  const flushMs = Math.max(1, Math.floor(o.flushMs ?? (Number.isFinite(envFlush) && envFlush > 0 ? envFlush : 500)));
  const env = (mode: Mode) => ({ AUDIT: mode, AUDIT_FLUSH_MS: String(flushMs) });

  const started = await Promise.allSettled([startServer({ env: env('on') }), startServer({ env: env('off') })]);
  const servers = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  const killOnExit = () => { for (const s of servers) if (!s.exited) s.child.kill('SIGKILL'); };
  process.once('exit', killOnExit);
  const out: Record<string, unknown> = {};
  try {
    const failedStart = started.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failedStart) throw failedStart.reason;
    const [onServer, offServer] = servers as [ServerProcess, ServerProcess];
    for (const [m, s] of [['on', onServer], ['off', offServer]] as const) log(`audit: AUDIT=${m} server pid ${s.pid} at ${s.origin}, DATA_DIR ${s.dataDir}`);
    if (!onServer.authorization || !offServer.authorization) throw new Error('the servers have no SMART auth: the audit scenario needs their trusted token');

    const base = { on: { mode: 'on' as const, server: onServer, auth: onServer.authorization }, off: { mode: 'off' as const, server: offServer, auth: offServer.authorization } };
    log(`audit: filling both servers with ${CFG.patients} patients and ${o.observations} Observations`);
    // One after the other, so each fill's rate is its own (both servers share this machine's cores).
    const fOn = await fill(base.on, o.tools, o.observations);
    const fOff = await fill(base.off, o.tools, o.observations);
    const sides: Record<Mode, Side> = {
      on: { ...base.on, patientIds: fOn.patientIds, observationIds: fOn.observationIds, countOverhead: 0 },
      off: { ...base.off, patientIds: fOff.patientIds, observationIds: fOff.observationIds, countOverhead: 0 },
    };
    const problems: string[] = [];
    for (const m of ['on', 'off'] as const) sides[m].countOverhead = await countOverhead(sides[m], flushMs);
    const eventsAfterFill = { on: await auditCount(sides.on), off: await auditCount(sides.off) };
    log(`audit: AuditEvents after fill: on ${eventsAfterFill.on}, off ${eventsAfterFill.off}; a count request adds ${sides.on.countOverhead} (on) / ${sides.off.countOverhead} (off)`);
    if (eventsAfterFill.off !== 0) problems.push(`the AUDIT=off server reports ${eventsAfterFill.off} AuditEvents after the fill`);
    if (sides.off.countOverhead !== 0) problems.push(`on the AUDIT=off server a count request adds ${sides.off.countOverhead} AuditEvents`);
    const memoryAfterFill = { on: processMemory(onServer.pid), off: processMemory(offServer.pid) };

    const phaseOpts = { seconds: o.phaseSeconds, flushMs };
    const read = await compare(sides, o.tools, 'read', (s) => shuffled(s.observationIds, 11).map((id) => `/fhir/Observation/${id}`), phaseOpts, problems);
    const search = await compare(sides, o.tools, 'search', (s) => searchPaths(rng(3), s.patientIds, CFG.searchPathCount), phaseOpts, problems);

    Object.assign(out, {
      observations: Math.min(fOn.observationIds.length, fOff.observationIds.length),
      patients: CFG.patients,
      connections: CFG.connections,
      rounds: CFG.rounds,
      order: 'on, off, on, off (read, then search)',
      phase_s: o.phaseSeconds,
      flush_ms: flushMs,
      read,
      search,
      audit_events_total: await auditCount(sides.on),
      audit_events_after_fill: eventsAfterFill,
      count_request_audit_events: { on: sides.on.countOverhead, off: sides.off.countOverhead },
      fill: { bundle_size: CFG.fillBundleSize, concurrency: CFG.fillConcurrency, one_after_the_other: true, on: fOn.figures, off: fOff.figures },
      server_memory: { after_fill: memoryAfterFill, after_phases: { on: processMemory(onServer.pid), off: processMemory(offServer.pid) } },
      note: 'requests_per_s and latencies are autocannon\'s (measurement only, warm-up excluded); audit_events_per_s is the AuditEvents '
        + 'the phase caused (count after the phase and a wait of flush_ms + 1 s, less the count before and the count request\'s own '
        + 'AuditEvent) divided by the wall time of the whole autocannon call, warm-up included, as are requests_sent and '
        + 'audit_events_per_request. server_cpu_ms_per_request includes the flush wait after the phase (the deferred audit writes); _by_thread splits it into the main thread (event loop) and all other threads. '
        + 'Both servers run at once on this machine; only one is under load at a time.',
      ...(problems.length ? { problems } : {}),
    });
  } finally {
    for (const s of servers) await s.stop();
    process.removeListener('exit', killOnExit);
    for (const s of servers) fs.rmSync(s.dataDir, { recursive: true, force: true });
  }
  // What one AuditEvent costs the machine, without HTTP or the noise of the load above.
  out.write_costs = await measureAuditCosts({ count: o.observations >= 20_000 ? 20_000 : 5_000 });
  out.elapsed_s = round((performance.now() - tAll) / 1000);
  return out;
}
