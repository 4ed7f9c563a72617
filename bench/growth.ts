/**
 * The `growth` scenario (issue 19): whether a search's first page, the latest value and the next
 * page cost the same as the store grows from 10,000 to 100,000 (and 1,000,000) Observations.
 *
 * Not in the default scenario list (loading and measuring 100,000 Observations adds about six
 * minutes to `npm run bench`); run it alone:
 *   BENCH_SCENARIOS=growth npm run bench                        # steps 10,000 and 100,000
 *   BENCH_SCENARIOS=growth BENCH_GROWTH_MAX=1000000 npm run bench  # and 1,000,000 (about 20 min in all)
 *   BENCH_SCENARIOS=growth BENCH_QUICK=1 npm run bench          # 10,000 only, 3 s phases
 *
 * On its own server (child process, fresh DATA_DIR, trusted system/*.* backend token, everything
 * at its defaults: embedded ledger anchoring every version, audit trail on, CONSENT_CHAIN=required):
 *   setup   10,000 Patients (transaction Bundles of 500); one Practitioner and its user; 100 of
 *           the patients (every 100th) permit the practitioner in a Consent they grant on chain
 *           with their own key (as bench/consent.ts does); one other patient's user with a
 *           `patient/*.rs` token (the patient-confined principal).
 *   load    Observations in transaction Bundles of BENCH_GROWTH_BUNDLE (default 100, as the issue
 *           measured) entries, 2 at a time: 90 % one LOINC code (heart rate 8867-4), the rest
 *           spread over nine other codes (so a code filter is selective), effective dates spread
 *           uniformly over 2025, subjects uniformly over the 10,000 patients. In steps to 10,000,
 *           100,000 and (BENCH_GROWTH_MAX=1000000) 1,000,000 Observations; progress with rate and
 *           ETA on stderr.
 *   measure at each step, one autocannon phase each (16 connections, BENCH_DURATION s, default 8,
 *           after run.ts's warm-up), trusted token unless named:
 *     first_page           Observation?code=<c>&date=ge2025-01-01&_count=20 (everything of <c> matches)
 *     latest_value         Observation?code=<c>&_sort=-date&_count=1
 *     subject_code_date    Observation?code=<c>&subject=Patient/<p>&date=ge2025-06-01&_count=20
 *     last_updated         Observation?_sort=_lastUpdated&_count=20
 *     subject_sort_date    Observation?subject=Patient/<p>&_sort=-date&_count=20
 *     patient_code_latest  Observation?patient=Patient/<p>&code=<c>&_sort=-date&_count=1
 *                          (<p> rotates over 2,000 of the 10,000 patients)
 *     next_page_10/_100    the URL of first_page's `next` link followed 10 (100) times, i.e. page
 *                          11 (101), requested over and over: the cost of fetching that one page
 *     practitioner_first_page  first_page with the practitioner's user/*.rs token (sees 1 % of the data)
 *     patient_first_page       first_page with the patient-confined token
 *     summary_count        Observation?code=<c>&date=ge2025-07-01&_summary=count (half of <c> matches):
 *                          estimated from statistics on large sets; `estimate` compares it once
 *                          with _total=accurate (error, stated margin, time of each)
 *   Each with rps, p50/p99 and the server's CPU per request (main thread, other threads), and the
 *   latency of one request alone before the phase. A query slow enough that a phase would see only
 *   a few responses per connection gets a longer phase (about 6 rounds of 16 connections, at most
 *   60 s), so its rate is not just the requests that happened to finish in time.
 * The output (`growth`) has the figures per step, each query's rps at the largest step against
 * its rps at 10,000 (target >= 1/1.5) and its p99 against 50 ms. Nothing here asserts on timing.
 */
import fs from 'node:fs';
import path from 'node:path';
import type autocannon from 'autocannon';
import { summarizeProfile } from './cpu-profile.js';
import { CODES, rng, transactionBundle } from './fixtures.js';
import { consentingPatient, createPatients, custos, password, pool, PATIENT_SCOPE, PRACTITIONER_SCOPE, REDIRECT_URI, userToken } from './consent.js';
import { dbFileSizes, fhirRequest, log, processMemory, serverCpuSeconds, startServer, type ServerProcess } from './server-process.js';

export const GROWTH_TARGETS = { growth_rps_ratio_min: round(1 / 1.5, 3), growth_p99_ms_max: 50 };

/** What run.ts lends this scenario (its autocannon wrapper and CPU accounting). */
export interface GrowthBenchTools {
  cannon(origin: string, opts: Omit<autocannon.Options, 'url'> & { label: string }): Promise<{ result: autocannon.Result; errorSamples: string[] }>;
  withCpu<T>(pid: number, fn: () => Promise<T>): Promise<{ value: T; server_cpu_pct: number | null; loadgen_cpu_pct: number; server_thread_cpu_s: { main: number; other: number } | null }>;
}

export interface GrowthBenchOptions {
  /** Observation counts to load to and measure at, ascending (e.g. 10,000, 100,000). */
  steps: number[];
  /** Seconds per measured phase (each also gets run.ts's warm-up). */
  phaseSeconds: number;
  cpuProfile: boolean;
  tools: GrowthBenchTools;
}

const CFG = {
  patients: 10_000,
  patientBundleSize: 500,
  consenting: 100,
  setupConcurrency: 8,
  bundleSize: Number(process.env.BENCH_GROWTH_BUNDLE) || 100,
  fillConcurrency: 2,
  connections: 16,
  /** Share of the Observations with the main code; the rest spread over the other codes. */
  mainCodeShare: 0.9,
  rotatePatients: 2000,
  pageSize: 20,
  deepPages: [10, 100],
};

const MAIN = CODES[0]!; // heart rate, 8867-4
const OTHER = CODES.slice(1);
const CODE_PARAM = encodeURIComponent(`http://loinc.org|${MAIN.code}`);
const YEAR_START = Date.UTC(2025, 0, 1);
const YEAR_MS = Date.UTC(2026, 0, 1) - YEAR_START;
const FHIR_JSON = 'application/fhir+json';
const CATEGORY_SYSTEM = 'http://terminology.hl7.org/CodeSystem/observation-category';

function round(n: number, d = 1): number {
  return Math.round(n * 10 ** d) / 10 ** d;
}
const seconds = (t0: number) => round((performance.now() - t0) / 1000);

function duration(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${Math.round(s)}s`;
}

// ---------------------------------------------------------------------------------------------
// Data

function isoSeconds(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

function growthObservation(r: () => number, patientIds: readonly string[]): Record<string, unknown> {
  const vital = r() < CFG.mainCodeShare ? MAIN : OTHER[Math.floor(r() * OTHER.length)]!;
  const subject = patientIds[Math.floor(r() * patientIds.length)]!;
  const effective = YEAR_START + Math.floor(r() * YEAR_MS);
  const value = Number((vital.min + r() * (vital.max - vital.min)).toFixed(vital.decimals));
  return {
    resourceType: 'Observation',
    status: 'final',
    category: [{ coding: [{ system: CATEGORY_SYSTEM, code: vital.category }] }],
    code: { coding: [{ system: 'http://loinc.org', code: vital.code, display: vital.display }], text: vital.display },
    subject: { reference: `Patient/${subject}` },
    effectiveDateTime: isoSeconds(effective),
    issued: isoSeconds(effective + 30_000),
    valueQuantity: { value, unit: vital.unit, system: 'http://unitsofmeasure.org', code: vital.ucum },
  };
}

interface Res { status: number; json: any }

function call(origin: string, p: string, token: string, method: 'GET' | 'POST' = 'GET', body?: unknown, headers: Record<string, string> = {}): Promise<Res> {
  return fhirRequest(origin, method, p, body, { authorization: token.startsWith('Bearer ') ? token : `Bearer ${token}`, ...headers });
}

async function must(what: string, r: Promise<Res>, expected = [200, 201]): Promise<any> {
  const res = await r;
  if (!expected.includes(res.status)) throw new Error(`${what}: HTTP ${res.status} ${JSON.stringify(res.json).slice(0, 500)}`);
  return res.json;
}


async function countObservations(origin: string, token: string): Promise<number> {
  const json = await must('count', call(origin, '/fhir/Observation?_summary=count&_total=accurate', token));
  return json.total as number;
}

/** Loads Observations until `target` are stored, logging rate and ETA (to this step and to the last). */
async function load(server: ServerProcess, trusted: string, patientIds: string[], r: () => number, from: number, target: number, last: number, tools: GrowthBenchTools) {
  const need = target - from;
  let queued = 0;
  let done = 0;
  let nextLog = Date.now() + 5000;
  const t0 = performance.now();
  const worker = async () => {
    while (queued < need) {
      const n = Math.min(CFG.bundleSize, need - queued);
      queued += n;
      const body = JSON.stringify(transactionBundle(Array.from({ length: n }, () => growthObservation(r, patientIds))));
      await must('load bundle', call(server.origin, '/fhir', trusted, 'POST', body, { prefer: 'return=minimal' }), [200]);
      done += n;
      if (Date.now() >= nextLog || done === need) {
        nextLog = Date.now() + 5000;
        const s = (performance.now() - t0) / 1000;
        const rate = done / s;
        log(`growth: loaded ${from + done}/${target} Observations (${round(rate, 0)}/s; step ETA ${duration((need - done) / rate)}`
          + `${last > target ? `, to ${last} ~${duration((last - from - done) / rate)} at this rate` : ''})`);
      }
    }
  };
  const { server_cpu_pct, server_thread_cpu_s } = await tools.withCpu(server.pid, () => Promise.all(Array.from({ length: CFG.fillConcurrency }, worker)));
  const s = (performance.now() - t0) / 1000;
  return {
    observations_added: done,
    seconds: round(s),
    observations_per_s: round(done / s),
    server_cpu_pct,
    server_cpu_ms_per_observation_by_thread: server_thread_cpu_s && done > 0
      ? { main: round((server_thread_cpu_s.main * 1000) / done, 3), other: round((server_thread_cpu_s.other * 1000) / done, 3) }
      : null,
  };
}

/**
 * Waits until the server is idle (under 10 % of a core over a second; at most 30 s) so the first
 * query measured after a load is not charged with what the load left behind (the last ledger
 * anchor, the audit writer, WAL checkpoints).
 */
async function settle(server: ServerProcess): Promise<number> {
  const t0 = performance.now();
  let prev = serverCpuSeconds(server.pid);
  while (prev !== null && performance.now() - t0 < 30_000) {
    await new Promise((r) => setTimeout(r, 1000));
    const now = serverCpuSeconds(server.pid);
    if (now === null || now - prev < 0.1) break;
    prev = now;
  }
  return seconds(t0);
}

// ---------------------------------------------------------------------------------------------
// Principals

interface Principals {
  practitioner: string;
  patient: string;
  patientId: string;
  consentingIds: string[];
  setup: Record<string, number>;
}

async function principals(server: ServerProcess, trusted: string, patientIds: string[]): Promise<Principals> {
  const setup: Record<string, number> = {};
  const t = performance.now();
  const base = `${server.origin}/fhir`;
  const sc = await must('smart-configuration', fhirRequest(server.origin, 'GET', '/fhir/.well-known/smart-configuration'));
  const endpoints = { authorize: sc.authorization_endpoint as string, token: sc.token_endpoint as string };
  const practitioner = await must('create Practitioner', call(server.origin, '/fhir/Practitioner', trusted, 'POST', {
    resourceType: 'Practitioner', active: true, name: [{ family: 'Growth', given: ['Dora'], prefix: ['Dr'] }],
  }));
  const practitionerId = practitioner.id as string;
  const drApp = await custos(server, ['client', 'add', '--type', 'public', '--redirect-uri', REDIRECT_URI, '--scope', PRACTITIONER_SCOPE, '--name', 'growth practitioner app']);
  const patientApp = await custos(server, ['client', 'add', '--type', 'public', '--redirect-uri', REDIRECT_URI, '--scope', PATIENT_SCOPE, '--name', 'growth patient app']);
  const drCreds = { username: 'growth-dr', password: password() };
  await custos(server, ['user', 'add', '--username', drCreds.username, '--password', drCreds.password, '--practitioner', practitionerId]);
  const drToken = await userToken(endpoints, base, { clientId: drApp.client_id as string, scope: PRACTITIONER_SCOPE, ...drCreds });

  // The patient-confined principal: a patient who is not among the consenting ones.
  const patientId = patientIds[1]!;
  const ptCreds = { username: `growth-patient-${patientId}`, password: password() };
  await custos(server, ['user', 'add', '--username', ptCreds.username, '--password', ptCreds.password, '--patient', patientId]);
  const ptToken = await userToken(endpoints, base, { clientId: patientApp.client_id as string, scope: 'launch/patient patient/*.rs', ...ptCreds });
  setup.users_s = seconds(t);

  // 100 consenting patients, every 100th of the 10,000.
  const t1 = performance.now();
  const step = Math.floor(CFG.patients / CFG.consenting);
  const chosen = patientIds.filter((_, i) => i % step === 0).slice(0, CFG.consenting);
  const timing: Record<string, number> = {};
  let done = 0;
  await pool(chosen, CFG.setupConcurrency, async (pid) => {
    await consentingPatient(server, trusted, { endpoints, base, clientId: patientApp.client_id as string, practitionerId }, pid, timing);
    if (++done % 20 === 0 || done === chosen.length) log(`growth: ${done}/${chosen.length} patients consented (user, token, Consent, key bound, granted on chain)`);
  });
  setup.consents_s = seconds(t1);
  return { practitioner: drToken, patient: ptToken, patientId, consentingIds: chosen, setup };
}

// ---------------------------------------------------------------------------------------------
// Queries

interface QuerySpec {
  name: string;
  /** One URL, or a rotation over many (by patient). */
  paths: string[];
  token: string;
}

interface QueryFigures {
  rps: number;
  /** Responses within the measured phase (p99 of a few dozen is close to their maximum). */
  responses: number;
  phase_s: number;
  p50_ms: number;
  p99_ms: number;
  p90_ms: number;
  max_ms: number;
  non_2xx: number;
  errors: number;
  server_cpu_pct: number | null;
  server_cpu_ms_per_request_by_thread: { main: number; other: number; all: number } | null;
  /** What one request of it answers, and how long it takes alone (the first URL, before the phase; fastest of 3). */
  sample: { status: number; latency_ms: number; entries: number; has_next: boolean; total?: number };
  example_url: string;
  distinct_urls: number;
  error_samples?: string[];
}

/** The path (and query) of a Bundle link, relative to the server's origin. */
function linkPath(bundle: any, relation: string): string | undefined {
  const url = (bundle?.link as Array<{ relation: string; url: string }> | undefined)?.find((l) => l.relation === relation)?.url;
  if (!url) return undefined;
  const u = new URL(url);
  return `${u.pathname}${u.search}`;
}

/** Follows first_page's `next` link `depth` times; the URL of page depth+1, or undefined when the pages end before. */
async function deepPage(origin: string, token: string, first: string, depth: number): Promise<{ path?: string; seconds: number; reached: number }> {
  const t = performance.now();
  let p = first;
  for (let i = 0; i < depth; i++) {
    const json = await must(`page ${i + 1}`, call(origin, p, token), [200]);
    const next = linkPath(json, 'next');
    if (!next) return { seconds: seconds(t), reached: i + 1 };
    p = next;
  }
  return { path: p, seconds: seconds(t), reached: depth + 1 };
}

async function measureQuery(server: ServerProcess, tools: GrowthBenchTools, label: string, q: QuerySpec, phaseSeconds: number): Promise<QueryFigures> {
  // Alone: the fastest of three requests (the first can be cold).
  let alone = Infinity;
  let s: Res | undefined;
  for (let k = 0; k < 3; k++) {
    const t0 = performance.now();
    const res = await call(server.origin, q.paths[0]!, q.token);
    alone = Math.min(alone, (performance.now() - t0) / 1000);
    s ??= res;
  }
  if (!s) throw new Error('unreachable');
  // A slow query's latency under 16 connections is about 8x its latency alone on these 2 cores;
  // a phase shorter than a few such latencies counts only the requests that happened to finish
  // (rate far too low, p99 cut at the phase length). Lengthen it to ~6 such latencies (at most 60 s).
  const phase = Math.min(60, Math.max(phaseSeconds, Math.ceil(6 * (CFG.connections / 2) * alone)));
  if (phase > phaseSeconds) log(`${label}: ${round(alone * 1000, 0)} ms alone: phase lengthened to ${phase} s`);
  const sample = {
    status: s.status,
    latency_ms: round(alone * 1000, 0),
    entries: (s.json?.entry as unknown[] | undefined)?.length ?? 0,
    has_next: linkPath(s.json, 'next') !== undefined,
    ...(typeof s.json?.total === 'number' ? { total: s.json.total as number } : {}),
  };
  let i = 0;
  const headers = { accept: FHIR_JSON, authorization: q.token.startsWith('Bearer ') ? q.token : `Bearer ${q.token}` };
  const { value: run, server_cpu_pct, server_thread_cpu_s } = await tools.withCpu(server.pid, () => tools.cannon(server.origin, {
    label,
    connections: CFG.connections,
    duration: phase,
    requests: [{
      method: 'GET',
      path: q.paths[0]!,
      headers,
      ...(q.paths.length > 1 ? { setupRequest: (req: autocannon.Request) => ({ ...req, path: q.paths[i++ % q.paths.length]! }) } : {}),
    }],
  }));
  const r = run.result;
  // The CPU figures span the warm-up too: divide by what was sent in both.
  const sent = r.requests.sent + (r.warmup?.requests.sent ?? 0);
  return {
    rps: round(r.requests.average),
    responses: r['2xx'] + r.non2xx,
    phase_s: phase,
    p50_ms: r.latency.p50,
    p99_ms: r.latency.p99,
    p90_ms: r.latency.p90,
    max_ms: r.latency.max,
    non_2xx: r.non2xx,
    errors: r.errors,
    server_cpu_pct,
    server_cpu_ms_per_request_by_thread: server_thread_cpu_s && sent > 0
      ? {
          main: round((server_thread_cpu_s.main * 1000) / sent, 3),
          other: round((server_thread_cpu_s.other * 1000) / sent, 3),
          all: round(((server_thread_cpu_s.main + server_thread_cpu_s.other) * 1000) / sent, 3),
        }
      : null,
    sample,
    example_url: q.paths[0]!,
    distinct_urls: q.paths.length,
    ...(run.errorSamples.length ? { error_samples: run.errorSamples } : {}),
  };
}

/** Half of the main code's Observations match: a count the server estimates on large sets. */
const SUMMARY_COUNT = `/fhir/Observation?code=${CODE_PARAM}&date=ge2025-07-01&_summary=count`;

/** The estimate `_summary=count` gives (with its stated margin) against the exact count, and what each took. */
async function estimateCheck(origin: string, token: string) {
  let t = performance.now();
  const est = await must('estimated count', call(origin, SUMMARY_COUNT, token), [200]);
  const estimateMs = performance.now() - t;
  t = performance.now();
  const exact = await must('exact count', call(origin, `${SUMMARY_COUNT}&_total=accurate`, token), [200]);
  const accurateMs = performance.now() - t;
  const said = (est.entry as Array<{ resource?: { issue?: Array<{ diagnostics?: string }> } }> | undefined)?.[0]?.resource?.issue?.[0]?.diagnostics;
  const margin = said ? Number(/± ([\d,]+)/.exec(said)?.[1]?.replace(/,/g, '')) : 0;
  const error = est.total - exact.total;
  return {
    estimate: est.total as number, margin_95: margin, accurate: exact.total as number, error,
    error_pct: exact.total > 0 ? round((100 * error) / exact.total, 2) : 0,
    within_margin: Math.abs(error) <= margin, estimate_ms: round(estimateMs), accurate_ms: round(accurateMs), said: said ?? 'exact (no outcome entry)',
  };
}

function querySpecs(trusted: string, who: Principals, rotation: string[]): QuerySpec[] {
  const first = `/fhir/Observation?code=${CODE_PARAM}&date=ge2025-01-01&_count=${CFG.pageSize}`;
  const by = (f: (p: string) => string) => rotation.map(f);
  return [
    { name: 'first_page', paths: [first], token: trusted },
    { name: 'latest_value', paths: [`/fhir/Observation?code=${CODE_PARAM}&_sort=-date&_count=1`], token: trusted },
    { name: 'subject_code_date', paths: by((p) => `/fhir/Observation?code=${CODE_PARAM}&subject=Patient/${p}&date=ge2025-06-01&_count=${CFG.pageSize}`), token: trusted },
    { name: 'last_updated', paths: [`/fhir/Observation?_sort=_lastUpdated&_count=${CFG.pageSize}`], token: trusted },
    { name: 'subject_sort_date', paths: by((p) => `/fhir/Observation?subject=Patient/${p}&_sort=-date&_count=${CFG.pageSize}`), token: trusted },
    { name: 'patient_code_latest', paths: by((p) => `/fhir/Observation?patient=Patient/${p}&code=${CODE_PARAM}&_sort=-date&_count=1`), token: trusted },
    { name: 'practitioner_first_page', paths: [first], token: who.practitioner },
    { name: 'patient_first_page', paths: [first], token: who.patient },
    { name: 'summary_count', paths: [SUMMARY_COUNT], token: trusted },
  ];
}

async function measureStep(server: ServerProcess, tools: GrowthBenchTools, trusted: string, who: Principals, rotation: string[], observations: number, phaseSeconds: number) {
  const specs = querySpecs(trusted, who, rotation);
  const queries: Record<string, QueryFigures | { error: string }> = {};
  const deep: Record<string, unknown> = {};
  const measure = async (q: QuerySpec) => {
    queries[q.name] = await measureQuery(server, tools, `growth ${observations} ${q.name}`, q, phaseSeconds);
  };
  for (const q of specs.slice(0, 6)) await measure(q);
  // The next page: first_page's `next` link followed to depth 10 and 100, that page's URL measured.
  for (const depth of CFG.deepPages) {
    const name = `next_page_${depth}`;
    const found = await deepPage(server.origin, trusted, specs[0]!.paths[0]!, depth);
    deep[name] = { followed_links_s: found.seconds, reached_page: found.reached };
    log(`growth ${observations}: ${name}: followed ${found.reached - 1} next links in ${found.seconds} s${found.path ? `: ${found.path}` : ' (the pages ended)'}`);
    if (found.path) await measure({ name, paths: [found.path], token: trusted });
    else queries[name] = { error: `only ${found.reached} pages` };
  }
  for (const q of specs.slice(6)) await measure(q);
  const estimate = await estimateCheck(server.origin, trusted);
  log(`growth ${observations}: _summary=count ${estimate.said}; exact ${estimate.accurate} (${estimate.accurate_ms} ms vs ${estimate.estimate_ms} ms)`);
  return { queries, deep_pages: deep, estimate };
}

// ---------------------------------------------------------------------------------------------

type StepResult = { observations: number; load: Record<string, unknown>; queries: Record<string, QueryFigures | { error: string }> } & Record<string, unknown>;

function summarize(steps: StepResult[]) {
  const first = steps[0]!;
  const last = steps.at(-1)!;
  const ratios: Record<string, unknown> = {};
  const p99: Record<string, unknown> = {};
  for (const name of Object.keys(last.queries)) {
    const a = first.queries[name];
    const b = last.queries[name];
    if (a && b && 'rps' in a && 'rps' in b) {
      const ratio = a.rps > 0 ? round(b.rps / a.rps, 3) : null;
      // Server CPU per request varies far less between runs than the rate on this shared machine.
      const ca = a.server_cpu_ms_per_request_by_thread?.all;
      const cb = b.server_cpu_ms_per_request_by_thread?.all;
      ratios[name] = {
        [`rps_at_${first.observations}`]: a.rps, [`rps_at_${last.observations}`]: b.rps, ratio,
        meets_target: ratio !== null && ratio >= GROWTH_TARGETS.growth_rps_ratio_min,
        [`cpu_ms_per_request_at_${first.observations}`]: ca ?? null, [`cpu_ms_per_request_at_${last.observations}`]: cb ?? null,
        cpu_ratio: ca && cb ? round(cb / ca, 2) : null,
      };
    }
    p99[name] = Object.fromEntries(steps.map((s) => {
      const f = s.queries[name];
      return [String(s.observations), f && 'p99_ms' in f ? { p99_ms: f.p99_ms, meets_target: f.p99_ms <= GROWTH_TARGETS.growth_p99_ms_max } : null];
    }));
  }
  // Whether a deep page costs more than the first, at each size.
  const deep = Object.fromEntries(steps.map((s) => {
    const f = s.queries.first_page;
    const out: Record<string, number | null> = {};
    for (const d of CFG.deepPages) {
      const n = s.queries[`next_page_${d}`];
      out[`page_${d + 1}_rps_vs_first`] = f && 'rps' in f && n && 'rps' in n && f.rps > 0 ? round(n.rps / f.rps, 3) : null;
    }
    return [String(s.observations), out];
  }));
  return {
    [`rps_ratio_${last.observations}_vs_${first.observations}`]: ratios,
    target_rps_ratio_min: GROWTH_TARGETS.growth_rps_ratio_min,
    p99_vs_target: p99,
    target_p99_ms_max: GROWTH_TARGETS.growth_p99_ms_max,
    deep_page_vs_first_page: deep,
  };
}

export async function measureGrowth(o: GrowthBenchOptions): Promise<Record<string, unknown>> {
  const tAll = performance.now();
  const server = await startServer({ cpuProfile: o.cpuProfile });
  const killOnExit = () => { if (!server.exited) server.child.kill('SIGKILL'); };
  process.once('exit', killOnExit);
  log(`growth: server pid ${server.pid} at ${server.origin}, DATA_DIR ${server.dataDir}; steps ${o.steps.join(', ')}`);
  const out: Record<string, unknown> = {
    config: {
      patients: CFG.patients,
      consenting_patients: CFG.consenting,
      bundle_size: CFG.bundleSize,
      fill_concurrency: CFG.fillConcurrency,
      main_code: `http://loinc.org|${MAIN.code}`,
      main_code_share: CFG.mainCodeShare,
      dates: '2025-01-01 to 2025-12-31, uniform',
      connections: CFG.connections,
      phase_s: o.phaseSeconds,
      rotating_patients: CFG.rotatePatients,
      server: 'defaults: embedded ledger on, audit trail on, CONSENT_CHAIN=required, CONSENT_BASE=deny',
    },
  };
  const steps: StepResult[] = [];
  try {
    const trusted = server.authorization;
    if (!trusted) throw new Error('the server has no SMART auth: the growth scenario needs it');
    const setup: Record<string, number> = {};
    let t = performance.now();
    const patientIds = await createPatients(server, trusted, { count: CFG.patients, bundleSize: CFG.patientBundleSize, label: 'growth' });
    setup.patients_s = seconds(t);
    t = performance.now();
    const who = await principals(server, trusted, patientIds);
    Object.assign(setup, who.setup);
    out.setup = setup;
    log(`growth: setup done (patients ${setup.patients_s} s, users ${setup.users_s} s, consents ${setup.consents_s} s)`);

    const pick = rng(23);
    const rotation = Array.from({ length: CFG.rotatePatients }, () => patientIds[Math.floor(pick() * patientIds.length)]!);
    const r = rng(19);
    let stored = 0;
    const last = o.steps.at(-1)!;
    for (const target of o.steps) {
      log(`growth: loading to ${target} Observations in Bundles of ${CFG.bundleSize}`);
      const loaded = await load(server, trusted, patientIds, r, stored, target, last, o.tools);
      stored = await countObservations(server.origin, trusted);
      const settled = await settle(server);
      log(`growth: ${stored} Observations stored (${loaded.observations_per_s}/s); server idle after ${settled} s; measuring`);
      const t1 = performance.now();
      const m = await measureStep(server, o.tools, trusted, who, rotation, target, o.phaseSeconds);
      steps.push({
        observations: stored,
        load: { ...loaded, settle_s: settled },
        ...m,
        measure_s: seconds(t1),
        server_memory: processMemory(server.pid),
        db_files_mb: dbFileSizes(server.dataDir),
      });
    }
    out.steps = steps;
    out.summary = summarize(steps);
  } catch (err) {
    log(`growth FAILED: ${(err as Error).stack ?? String(err)}`);
    out.steps = steps;
    if (steps.length > 0) out.summary = summarize(steps);
    out.error = String((err as Error).message ?? err);
  } finally {
    await server.stop();
    process.removeListener('exit', killOnExit);
    if (server.cpuProfDir) {
      const files = fs.readdirSync(server.cpuProfDir).filter((f) => f.endsWith('.cpuprofile'));
      out.server_cpu_profile = files.map((f) => summarizeProfile(path.join(server.cpuProfDir!, f)));
      log(`growth: cpu profile(s): ${files.map((f) => path.join(server.cpuProfDir!, f)).join(', ')}`);
    }
    out.server_log = { lines: server.logLines.length, first: server.logLines.slice(0, 5).map((l) => l.slice(0, 500)) };
    fs.rmSync(server.dataDir, { recursive: true, force: true });
  }
  out.targets = GROWTH_TARGETS;
  out.elapsed_s = seconds(tAll);
  return out;
}
