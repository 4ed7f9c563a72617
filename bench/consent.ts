/**
 * The `consent` scenario: what patient consent costs a practitioner's searches, and how fast a
 * revocation sent straight to the ConsentRegistry takes effect.
 *
 * On its own server (embedded ledger and consent chain, CONSENT_BASE=deny, the defaults):
 *   setup       1,000 Patients, 100,000 Observations (BENCH_QUICK: 10,000) over them (trusted
 *               backend token, transaction Bundles); one Practitioner and its user; for 100 of the
 *               patients a patient user, a Consent permitting Practitioner/<id> (created by the
 *               trusted token, as an EHR would), a fresh key bound with $consent-key and the
 *               Consent granted on chain with $consent-typed-data + $consent-sign. Users are added
 *               with `custos user add`, tokens come from the real authorization code flow.
 *   search      the same code+date(+subject) search URLs with the trusted token and with the
 *               practitioner's user/*.rs token, alternately (A B A B), 16 connections each.
 *   revocation  for 20 consenting patients, one at a time (after a random 0-1 s pause): the
 *               patient's key calls revokeDirect on the contract; from its receipt on, a
 *               practitioner read of one of that patient's Observations is repeated every ~25 ms
 *               until it is refused (403/404).
 * Nothing here asserts on timing.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type autocannon from 'autocannon';
import { Wallet, hexlify } from 'ethers';
import { ConsentRegistryClient, type ConsentTypedData } from '../src/consent/consent-registry.js';
import { authorizeUrl, authorizeWithLogin, exchangeCode, pkcePair } from '../test/smart-helpers.js';
import { summarizeProfile } from './cpu-profile.js';
import { CODES, DATE_SPAN_DAYS, dayString, observationBundle, patient, rng, transactionBundle } from './fixtures.js';
import { dbFileSizes, fhirRequest, log, processMemory, startServer, type ServerProcess } from './server-process.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const FHIR_JSON = 'application/fhir+json';
export const REDIRECT_URI = 'http://127.0.0.1:9/bench/callback';
export const PATIENT_SCOPE = 'launch/patient patient/*.rs patient/Consent.rus';
export const PRACTITIONER_SCOPE = 'user/*.rs';
const execFileP = promisify(execFile);

export const CONSENT_TARGETS = { consent_slowdown_pct_max: 15, consent_revocation_p99_ms_max: 5000 };

/** What run.ts lends this scenario (its autocannon wrapper and CPU accounting). */
export interface ConsentBenchTools {
  cannon(origin: string, opts: Omit<autocannon.Options, 'url'> & { label: string }): Promise<{ result: autocannon.Result; errorSamples: string[] }>;
  withCpu<T>(pid: number, fn: () => Promise<T>): Promise<{ value: T; server_cpu_pct: number | null; loadgen_cpu_pct: number }>;
}

export interface ConsentBenchOptions {
  quick: boolean;
  /** Seconds per measured search phase (each also gets run.ts's warm-up). */
  phaseSeconds: number;
  observations: number;
  cpuProfile: boolean;
  tools: ConsentBenchTools;
}

const CFG = {
  patients: 1000,
  consenting: 100,
  revocations: 20,
  setupConcurrency: 8,
  patientBundleSize: 250,
  fillConcurrency: 2,
  searchConnections: 16,
  searchPathCount: 2000,
  rounds: 2,
  pollMs: 25,
  /** A random pause (0 to this) before each revocation, so it lands at a random point of the server's chain polling. */
  revocationJitterMs: 1000,
  revocationTimeoutMs: 30_000,
};

const round = (n: number, d = 1) => Math.round(n * 10 ** d) / 10 ** d;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const seconds = (t0: number) => round((performance.now() - t0) / 1000);

// ---------------------------------------------------------------------------------------------
// HTTP

interface Res { status: number; json: any }

function call(origin: string, method: 'GET' | 'POST', p: string, token: string | undefined, body?: unknown, headers: Record<string, string> = {}): Promise<Res> {
  return fhirRequest(origin, method, p, body, { ...(token ? { authorization: token.startsWith('Bearer ') ? token : `Bearer ${token}` } : {}), ...headers });
}

async function must(what: string, r: Promise<Res>, expected = [200, 201]): Promise<any> {
  const res = await r;
  if (!expected.includes(res.status)) throw new Error(`${what}: HTTP ${res.status} ${JSON.stringify(res.json).slice(0, 500)}`);
  return res.json;
}

type Parameters = { parameter?: Array<{ name: string; valueString?: string; valueCode?: string; valueUri?: string; valueInteger?: number }> };
function param(p: Parameters, name: string): string | undefined {
  const x = p.parameter?.find((q) => q.name === name);
  return x?.valueString ?? x?.valueCode ?? x?.valueUri ?? (x?.valueInteger !== undefined ? String(x.valueInteger) : undefined);
}

/** Runs `fn` over `items` with at most `n` at a time. */
export async function pool<T, R>(items: readonly T[], n: number, fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]!, i);
    }
  }));
  return out;
}

/** `custos <args>` against the server's DATA_DIR, as an operator would run it while the server runs. */
export async function custos(server: ServerProcess, args: string[]): Promise<any> {
  const { stdout } = await execFileP(process.execPath, [path.join(ROOT, 'dist', 'cli.js'), ...args, '--json'], {
    env: { ...process.env, DATA_DIR: server.dataDir }, encoding: 'utf8',
  });
  return JSON.parse(stdout);
}

// (a leading '-' would read as an option to the CLI)
export const password = () => `pw${randomBytes(12).toString('base64url')}`;

/** A user's access token through the real authorization code flow (login, approval, PKCE exchange). */
export async function userToken(endpoints: { authorize: string; token: string }, base: string, o: { clientId: string; scope: string; username: string; password: string }): Promise<string> {
  const pkce = pkcePair();
  const url = authorizeUrl(endpoints.authorize, { clientId: o.clientId, redirectUri: REDIRECT_URI, scope: o.scope, aud: base, codeChallenge: pkce.challenge });
  const { code } = await authorizeWithLogin({ authorizeUrl: url, username: o.username, password: o.password });
  const t = await exchangeCode(endpoints.token, { code, verifier: pkce.verifier, redirectUri: REDIRECT_URI, clientId: o.clientId });
  if (t.status !== 200 || typeof t.body.access_token !== 'string') throw new Error(`token exchange for ${o.username} failed: ${t.status} ${JSON.stringify(t.body)}`);
  return t.body.access_token as string;
}

async function signTd(w: Wallet, td: ConsentTypedData): Promise<string> {
  const { EIP712Domain: _domain, ...types } = td.types;
  return w.signTypedData(td.domain, types, td.message);
}

// ---------------------------------------------------------------------------------------------
// Setup

/** `count` Patients (bench/fixtures.ts) in transaction Bundles of `bundleSize`; their ids in order. */
export async function createPatients(server: ServerProcess, trusted: string, o: { count: number; bundleSize: number; label: string }): Promise<string[]> {
  const ids: string[] = [];
  for (let start = 0; start < o.count; start += o.bundleSize) {
    const resources = Array.from({ length: Math.min(o.bundleSize, o.count - start) }, (_, i) => patient(start + i));
    const json = await must('creating patients', call(server.origin, 'POST', '/fhir', trusted, transactionBundle(resources), { prefer: 'return=minimal' }));
    for (const e of json.entry as Array<{ resource?: { id?: string }; response?: { location?: string } }>) {
      const id = e.resource?.id ?? /Patient\/([^/]+)/.exec(e.response?.location ?? '')?.[1];
      if (!id) throw new Error(`no id in transaction response entry ${JSON.stringify(e).slice(0, 300)}`);
      ids.push(id);
    }
  }
  log(`${o.label}: created ${ids.length} patients`);
  return ids;
}

async function fillObservations(server: ServerProcess, tools: ConsentBenchTools, trusted: string, patientIds: string[], target: number, bundleSize: number) {
  const r = rng(17);
  let queued = 0;
  let done = 0;
  let nextLog = 10_000;
  const t0 = performance.now();
  const worker = async () => {
    while (queued < target) {
      const n = Math.min(bundleSize, target - queued);
      queued += n;
      await must('fill bundle', call(server.origin, 'POST', '/fhir', trusted, observationBundle(r, patientIds, n), { prefer: 'return=minimal' }), [200]);
      done += n;
      if (done >= nextLog || done === target) {
        log(`consent: fill ${done}/${target} Observations (${round(done / ((performance.now() - t0) / 1000), 0)}/s)`);
        while (nextLog <= done) nextLog += 10_000;
      }
    }
  };
  const { server_cpu_pct } = await tools.withCpu(server.pid, () => Promise.all(Array.from({ length: CFG.fillConcurrency }, worker)));
  const s = (performance.now() - t0) / 1000;
  return { observations: done, seconds: round(s), observations_per_s: round(done / s), server_cpu_pct };
}

function consentFor(patientId: string, practitionerId: string): Record<string, unknown> {
  return {
    resourceType: 'Consent',
    status: 'active',
    scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    patient: { reference: `Patient/${patientId}` },
    dateTime: '2025-01-01T00:00:00Z',
    policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] },
    provision: {
      type: 'permit',
      actor: [{ role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] }, reference: { reference: `Practitioner/${practitionerId}` } }],
    },
  };
}

export interface ConsentingPatient {
  patientId: string;
  consentId: string;
  wallet: Wallet;
  pid: string;
  consentHash: string;
  contractAddress: string;
}

/** Patient user + token, Consent (by the EHR), key bound, Consent granted on chain by the patient's key. */
export async function consentingPatient(server: ServerProcess, trusted: string, ctx: { endpoints: { authorize: string; token: string }; base: string; clientId: string; practitionerId: string }, patientId: string, timing: Record<string, number>): Promise<ConsentingPatient> {
  const o = server.origin;
  let t = performance.now();
  const lap = (k: string) => { const now = performance.now(); timing[k] = (timing[k] ?? 0) + (now - t); t = now; };
  const creds = { username: `bench-patient-${patientId}`, password: password() };
  await custos(server, ['user', 'add', '--username', creds.username, '--password', creds.password, '--patient', patientId]);
  lap('user_add_ms');
  const token = await userToken(ctx.endpoints, ctx.base, { clientId: ctx.clientId, scope: PATIENT_SCOPE, ...creds });
  lap('code_flow_ms');
  const consent = await must('create Consent', call(o, 'POST', '/fhir/Consent', trusted, consentFor(patientId, ctx.practitionerId)));
  lap('consent_create_ms');

  const wallet = new Wallet(hexlify(randomBytes(32)));
  const keyInfo = await must('GET $consent-key', call(o, 'GET', `/fhir/Patient/${patientId}/$consent-key?address=${wallet.address}`, token)) as Parameters;
  const bindTd = JSON.parse(param(keyInfo, 'typedData')!) as ConsentTypedData;
  await must('POST $consent-key', call(o, 'POST', `/fhir/Patient/${patientId}/$consent-key`, token, {
    resourceType: 'Parameters',
    parameter: [
      { name: 'address', valueString: wallet.address }, { name: 'deadline', valueString: bindTd.message.deadline },
      { name: 'nonce', valueString: bindTd.message.nonce }, { name: 'signature', valueString: await signTd(wallet, bindTd) },
    ],
  }));
  lap('bind_key_ms');

  const grant = await must('GET $consent-typed-data', call(o, 'GET', `/fhir/Consent/${consent.id}/$consent-typed-data?action=grant`, token)) as Parameters;
  const td = JSON.parse(param(grant, 'typedData')!) as ConsentTypedData;
  const signed = await must('POST $consent-sign', call(o, 'POST', `/fhir/Consent/${consent.id}/$consent-sign`, token, {
    resourceType: 'Parameters',
    parameter: [
      { name: 'action', valueCode: 'grant' }, { name: 'signature', valueString: await signTd(wallet, td) },
      { name: 'deadline', valueString: td.message.deadline }, { name: 'nonce', valueString: td.message.nonce },
      { name: 'consentHash', valueString: param(grant, 'consentHash')! },
    ],
  })) as Parameters;
  if (param(signed, 'status') !== 'active') throw new Error(`$consent-sign for Patient/${patientId}: status ${param(signed, 'status')}`);
  lap('grant_ms');
  return { patientId, consentId: consent.id as string, wallet, pid: param(grant, 'pid')!, consentHash: param(grant, 'consentHash')!, contractAddress: param(grant, 'contractAddress')! };
}

// ---------------------------------------------------------------------------------------------
// Search

/**
 * Code + date search URLs, half with a subject (one of the consenting patients: a practitioner
 * searches their own patients), half without. Windows are sized from the data's density so the
 * practitioner, who sees `consenting / patients` of the data, still gets a few matches: subject
 * searches about 2.5-7.5 expected matches, searches without subject 3-12 for the practitioner
 * (10x that for the trusted token, who gets a full page).
 */
export function consentSearchPaths(r: () => number, consentingIds: readonly string[], n: number, o: { observations: number; patients: number }): string[] {
  const perCodePerDay = o.observations / CODES.length / DATE_SPAN_DAYS;
  const share = consentingIds.length / o.patients;
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const vital = CODES[Math.floor(r() * CODES.length)]!;
    const withSubject = i % 2 === 0;
    const expected = withSubject ? 2.5 + r() * 5 : 3 + r() * 9;
    const density = withSubject ? perCodePerDay / o.patients : perCodePerDay * share;
    const windowDays = Math.min(DATE_SPAN_DAYS - 1, Math.max(1, Math.round(expected / density)));
    const from = Math.floor(r() * (DATE_SPAN_DAYS - windowDays));
    let p = `/fhir/Observation?code=${encodeURIComponent(`http://loinc.org|${vital.code}`)}`
      + `&date=ge${dayString(from)}&date=lt${dayString(from + windowDays)}`;
    if (withSubject) p += `&subject=${encodeURIComponent(`Patient/${consentingIds[Math.floor(r() * consentingIds.length)]!}`)}`;
    out.push(p);
  }
  return out;
}

async function sampleSearches(origin: string, token: string, paths: string[]) {
  let entries = 0;
  let empty = 0;
  let bad = 0;
  const byKind = { with_subject: { entries: 0, n: 0 }, without_subject: { entries: 0, n: 0 } };
  for (const p of paths) {
    const r = await call(origin, 'GET', p, token);
    if (r.status !== 200) { bad++; continue; }
    const n = (r.json.entry as unknown[] | undefined)?.length ?? 0;
    entries += n;
    if (n === 0) empty++;
    const k = byKind[p.includes('subject=') ? 'with_subject' : 'without_subject'];
    k.entries += n;
    k.n++;
  }
  const ok = paths.length - bad;
  return {
    size: paths.length,
    non_200: bad,
    mean_entries_per_page: round(entries / Math.max(1, ok), 2),
    empty_pages: empty,
    mean_entries_with_subject: round(byKind.with_subject.entries / Math.max(1, byKind.with_subject.n), 2),
    mean_entries_without_subject: round(byKind.without_subject.entries / Math.max(1, byKind.without_subject.n), 2),
  };
}

interface RoundFigures {
  searches_per_s: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  max_ms: number;
  non_2xx: number;
  errors: number;
  server_cpu_pct: number | null;
  loadgen_cpu_pct: number;
  error_samples?: string[];
}

async function searchRound(server: ServerProcess, tools: ConsentBenchTools, label: string, token: string, paths: string[], seconds: number): Promise<RoundFigures> {
  let i = 0;
  const { value: run, server_cpu_pct, loadgen_cpu_pct } = await tools.withCpu(server.pid, () => tools.cannon(server.origin, {
    label,
    connections: CFG.searchConnections,
    duration: seconds,
    requests: [{
      method: 'GET',
      path: paths[0]!,
      headers: { accept: FHIR_JSON, authorization: `Bearer ${token}` },
      setupRequest: (req) => ({ ...req, path: paths[i++ % paths.length]! }),
    }],
  }));
  const r = run.result;
  return {
    searches_per_s: round(r.requests.average),
    p50_ms: r.latency.p50,
    p90_ms: r.latency.p90,
    p99_ms: r.latency.p99,
    max_ms: r.latency.max,
    non_2xx: r.non2xx,
    errors: r.errors,
    server_cpu_pct,
    loadgen_cpu_pct,
    ...(run.errorSamples.length ? { error_samples: run.errorSamples } : {}),
  };
}

function summarizeRounds(rounds: RoundFigures[]) {
  const mean = (k: 'searches_per_s' | 'p50_ms' | 'p99_ms') => round(rounds.reduce((a, r) => a + r[k], 0) / rounds.length);
  return {
    searches_per_s: mean('searches_per_s'),
    p50_ms: mean('p50_ms'),
    p99_ms: mean('p99_ms'),
    non_2xx: rounds.reduce((a, r) => a + r.non_2xx, 0),
    errors: rounds.reduce((a, r) => a + r.errors, 0),
    rounds,
  };
}

// ---------------------------------------------------------------------------------------------
// Revocation

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

async function revocationLatency(server: ServerProcess, trusted: string, practitioner: string, rpcUrl: string, patients: ConsentingPatient[]) {
  const receiptToDenied: number[] = [];
  const sendToDenied: number[] = [];
  const sendToReceipt: number[] = [];
  const problems: string[] = [];
  const statuses: Record<string, number> = {};
  let polls = 0;
  // Without a random pause the loop locks onto the server's chain polling (each refusal is seen
  // just after a poll, the next revocation lands just after it) and measures only its worst case.
  const jitter = rng(11);
  for (const [n, p] of patients.entries()) {
    const found = await must('find an Observation', call(server.origin, 'GET', `/fhir/Observation?subject=${encodeURIComponent(`Patient/${p.patientId}`)}&_count=1`, trusted));
    const obsId = found.entry?.[0]?.resource?.id as string | undefined;
    if (!obsId) { problems.push(`Patient/${p.patientId} has no Observation`); continue; }
    const read = () => call(server.origin, 'GET', `/fhir/Observation/${obsId}`, practitioner);
    const before = await read();
    if (before.status !== 200) { problems.push(`Patient/${p.patientId}: the practitioner's read before revocation is HTTP ${before.status}`); continue; }
    const own = await ConsentRegistryClient.connect({ rpcUrl, address: p.contractAddress, privateKey: p.wallet.privateKey, pollingIntervalMs: 10 });
    await sleep(Math.floor(jitter() * CFG.revocationJitterMs));
    let t0: number;
    let t1: number;
    try {
      t0 = performance.now();
      await own.revokeDirect(p.pid, p.consentHash);
      t1 = performance.now();
    } finally {
      own.close();
    }
    let denied: number | undefined;
    while (performance.now() - t1 < CFG.revocationTimeoutMs) {
      const r = await read();
      polls++;
      if (r.status === 403 || r.status === 404) { denied = performance.now(); statuses[r.status] = (statuses[r.status] ?? 0) + 1; break; }
      if (r.status !== 200) statuses[`during_${r.status}`] = (statuses[`during_${r.status}`] ?? 0) + 1;
      await sleep(CFG.pollMs);
    }
    if (denied === undefined) { problems.push(`Patient/${p.patientId}: still readable ${CFG.revocationTimeoutMs} ms after the revocation's receipt`); continue; }
    receiptToDenied.push(denied - t1);
    sendToDenied.push(denied - t0);
    sendToReceipt.push(t1 - t0);
    log(`consent: revocation ${n + 1}/${patients.length}: receipt after ${round(t1 - t0, 0)} ms, refused ${round(denied - t1, 0)} ms after the receipt`);
  }
  const fig = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    return { p50_ms: round(percentile(s, 50), 0), p99_ms: round(percentile(s, 99), 0), max_ms: round(s.at(-1) ?? NaN, 0), mean_ms: round(s.reduce((a, b) => a + b, 0) / Math.max(1, s.length), 0) };
  };
  return {
    revocations: patients.length,
    measured: receiptToDenied.length,
    poll_interval_ms: CFG.pollMs,
    random_pause_before_each_ms_max: CFG.revocationJitterMs,
    receipt_to_denied: fig(receiptToDenied),
    send_to_denied: fig(sendToDenied),
    send_to_receipt: fig(sendToReceipt),
    denied_with: statuses,
    polls,
    target_p99_ms_max: CONSENT_TARGETS.consent_revocation_p99_ms_max,
    ...(problems.length ? { problems } : {}),
  };
}

// ---------------------------------------------------------------------------------------------

export async function measureConsent(o: ConsentBenchOptions): Promise<Record<string, unknown>> {
  const tAll = performance.now();
  const setup: Record<string, number> = {};
  let t = performance.now();
  const server = await startServer({ cpuProfile: o.cpuProfile });
  const killOnExit = () => { if (!server.exited) server.child.kill('SIGKILL'); };
  process.once('exit', killOnExit);
  setup.server_start_s = seconds(t);
  log(`consent: server pid ${server.pid} at ${server.origin}, DATA_DIR ${server.dataDir}`);
  const out: Record<string, unknown> = {};
  try {
    const trusted = server.authorization;
    if (!trusted) throw new Error('the server has no SMART auth: the consent scenario needs it');
    const base = `${server.origin}/fhir`;
    const sc = await must('smart-configuration', call(server.origin, 'GET', '/fhir/.well-known/smart-configuration', undefined));
    const endpoints = { authorize: sc.authorization_endpoint as string, token: sc.token_endpoint as string };
    const ledger = await must('$ledger-status', call(server.origin, 'GET', '/fhir/$ledger-status', trusted)) as Parameters;
    const rpcUrl = param(ledger, 'rpcUrl');
    if (!rpcUrl) throw new Error(`$ledger-status names no rpcUrl: ${JSON.stringify(ledger).slice(0, 300)}`);

    t = performance.now();
    const patientIds = await createPatients(server, trusted, { count: CFG.patients, bundleSize: CFG.patientBundleSize, label: 'consent' });
    setup.patients_s = seconds(t);
    t = performance.now();
    const fill = await fillObservations(server, o.tools, trusted, patientIds, o.observations, o.quick ? 500 : 1000);
    setup.fill_s = seconds(t);

    // The practitioner, two SMART apps, the practitioner's user and token.
    t = performance.now();
    const practitioner = await must('create Practitioner', call(server.origin, 'POST', '/fhir/Practitioner', trusted, {
      resourceType: 'Practitioner', active: true, name: [{ family: 'Bench', given: ['Dora'], prefix: ['Dr'] }],
    }));
    const practitionerId = practitioner.id as string;
    const drApp = await custos(server, ['client', 'add', '--type', 'public', '--redirect-uri', REDIRECT_URI, '--scope', PRACTITIONER_SCOPE, '--name', 'bench practitioner app']);
    const patientApp = await custos(server, ['client', 'add', '--type', 'public', '--redirect-uri', REDIRECT_URI, '--scope', PATIENT_SCOPE, '--name', 'bench patient app']);
    const drCreds = { username: 'bench-dr', password: password() };
    await custos(server, ['user', 'add', '--username', drCreds.username, '--password', drCreds.password, '--practitioner', practitionerId]);
    const drToken = await userToken(endpoints, base, { clientId: drApp.client_id as string, scope: PRACTITIONER_SCOPE, ...drCreds });

    // 100 consenting patients, spread evenly over the 1,000.
    const step = Math.floor(CFG.patients / CFG.consenting);
    const chosen = patientIds.filter((_, i) => i % step === 0).slice(0, CFG.consenting);
    const timing: Record<string, number> = {};
    let done = 0;
    const consenting = await pool(chosen, CFG.setupConcurrency, async (pid) => {
      const c = await consentingPatient(server, trusted, { endpoints, base, clientId: patientApp.client_id as string, practitionerId }, pid, timing);
      if (++done % 10 === 0 || done === chosen.length) log(`consent: ${done}/${chosen.length} patients consented (user, token, Consent, key bound, granted on chain)`);
      return c;
    });
    setup.consents_s = seconds(t);
    setup.total_s = seconds(tAll);
    const perPatient = Object.fromEntries(Object.entries(timing).map(([k, v]) => [k, round(v / chosen.length, 0)]));

    const count = async (token: string) => {
      const r = await call(server.origin, 'GET', '/fhir/Observation?_summary=count&_total=accurate', token);
      return r.status === 200 && typeof r.json?.total === 'number' ? r.json.total as number : `HTTP ${r.status}`;
    };
    const visible = { trusted: await count(trusted), practitioner: await count(drToken) };
    log(`consent: Observations visible to the trusted token ${visible.trusted}, to the practitioner ${visible.practitioner}`);
    const memory = { ...processMemory(server.pid), db_files_mb: dbFileSizes(server.dataDir) };

    // Search: the same URLs for both tokens, A B A B.
    const paths = consentSearchPaths(rng(5), consenting.map((c) => c.patientId), CFG.searchPathCount, { observations: o.observations, patients: CFG.patients });
    const sample = paths.slice(0, o.quick ? 50 : 100);
    const samples = { trusted: await sampleSearches(server.origin, trusted, sample), practitioner: await sampleSearches(server.origin, drToken, sample) };
    log(`consent: sample mean entries per page: trusted ${samples.trusted.mean_entries_per_page}, practitioner ${samples.practitioner.mean_entries_per_page} (${samples.practitioner.empty_pages}/${sample.length} empty)`);
    const rounds: { trusted: RoundFigures[]; practitioner: RoundFigures[] } = { trusted: [], practitioner: [] };
    for (let k = 1; k <= CFG.rounds; k++) {
      rounds.trusted.push(await searchRound(server, o.tools, `consent search trusted (round ${k})`, trusted.replace(/^Bearer /, ''), paths, o.phaseSeconds));
      rounds.practitioner.push(await searchRound(server, o.tools, `consent search practitioner (round ${k})`, drToken, paths, o.phaseSeconds));
    }
    const trustedFig = summarizeRounds(rounds.trusted);
    const drFig = summarizeRounds(rounds.practitioner);

    log(`consent: revocation latency over ${CFG.revocations} direct on-chain revocations`);
    const revocation = await revocationLatency(server, trusted, drToken, rpcUrl, consenting.slice(0, CFG.revocations));

    Object.assign(out, {
      patients: CFG.patients,
      consenting_patients: consenting.length,
      observations: fill.observations,
      observations_visible: visible,
      search: {
        connections: CFG.searchConnections,
        distinct_urls: paths.length,
        order: 'trusted, practitioner, trusted, practitioner',
        phase_s: o.phaseSeconds,
        trusted_system: trustedFig,
        practitioner_user: drFig,
        consent_slowdown_pct: round(100 * (1 - drFig.searches_per_s / trustedFig.searches_per_s)),
        target_slowdown_pct_max: CONSENT_TARGETS.consent_slowdown_pct_max,
        sample: { ...samples, example_url_with_subject: paths.find((p) => p.includes('subject=')), example_url_without_subject: paths.find((p) => !p.includes('subject=')) },
      },
      revocation,
      setup: {
        ...setup,
        fill_observations_per_s: fill.observations_per_s,
        setup_concurrency: CFG.setupConcurrency,
        per_consenting_patient_mean_ms: perPatient,
      },
      server_memory_after_setup: memory,
    });
  } finally {
    await server.stop();
    process.removeListener('exit', killOnExit);
    if (server.cpuProfDir) {
      const files = fs.readdirSync(server.cpuProfDir).filter((f) => f.endsWith('.cpuprofile'));
      out.server_cpu_profile = files.map((f) => summarizeProfile(path.join(server.cpuProfDir!, f)));
      log(`consent: cpu profile(s): ${files.map((f) => path.join(server.cpuProfDir!, f)).join(', ')}`);
    }
    fs.rmSync(server.dataDir, { recursive: true, force: true });
  }
  out.elapsed_s = seconds(tAll);
  return out;
}
