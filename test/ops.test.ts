import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { Wallet } from 'ethers';
import { loadConfig } from '../src/config.js';
import { AnchorRegistryClient } from '../src/ledger/anchor-registry.js';
import { fund, loadOrCreateKey, startLocalNode, type LocalNode } from '../src/ledger/anvil.js';
import express from 'express';
import { ChainProbe, isLoopback, metricsAccess } from '../src/ops/index.js';
import { FHIR_JSON, freePort, tempDir, testServer } from './helpers.js';

type Server = Awaited<ReturnType<typeof testServer>>;

interface Sample { name: string; labels: Record<string, string>; value: number }

/** Parses the Prometheus text exposition format (0.0.4) strictly: every line must be a comment, blank, or a sample. */
function parsePrometheus(text: string): Sample[] {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const comment = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (comment) {
      if (comment[1] === 'TYPE') {
        assert.match(comment[3]!, /^(counter|gauge|histogram|summary|untyped)$/, line);
        types.set(comment[2]!, comment[3]!);
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a Prometheus sample line: ${line}`);
    const labels: Record<string, string> = {};
    if (m[2]) {
      const rest = m[2].replace(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?/g, (_all, k: string, v: string) => { labels[k] = v.replace(/\\(.)/g, '$1'); return ''; });
      assert.equal(rest, '', `malformed labels: ${line}`);
    }
    const value = m[3] === '+Inf' ? Infinity : m[3] === '-Inf' ? -Infinity : Number(m[3]);
    // Prometheus reads values with Go's ParseFloat: NaN in any case (prom-client writes "Nan", e.g. for event loop lag before its first sample).
    assert.ok(/^nan$/i.test(m[3]!) || !Number.isNaN(value), `not a number: ${line}`);
    const family = m[1]!.replace(/_(bucket|sum|count)$/, '');
    assert.ok(types.has(m[1]!) || types.has(family), `sample without # TYPE: ${line}`);
    samples.push({ name: m[1]!, labels, value });
  }
  return samples;
}

async function scrape(s: Server, headers: Record<string, string> = {}): Promise<Sample[]> {
  const res = await fetch(`${s.url}/metrics`, { headers });
  assert.equal(res.status, 200, await res.clone().text());
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  return parsePrometheus(await res.text());
}

const value = (samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined =>
  samples.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v))?.value;

async function fhir(s: Server, method: string, rel: string, body?: unknown, token: string | null = s.token): Promise<{ status: number; body: any }> {
  const res = await fetch(`${s.base}/${rel}`, {
    method,
    headers: { accept: FHIR_JSON, ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { 'content-type': FHIR_JSON } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
}

async function getJson(url: string): Promise<{ status: number; body: any; cacheControl: string | null }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.json(), cacheControl: res.headers.get('cache-control') };
}

const observation = (patient: string) => ({
  resourceType: 'Observation', status: 'final', subject: { reference: `Patient/${patient}` },
  code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] }, valueQuantity: { value: 61, unit: '/min' },
});

const INTERACTIONS = new Set(['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'history-type', 'history-system', 'create', 'search-type', 'search-system',
  'operation', 'batch', 'transaction', 'capabilities', 'smart-configuration', 'preflight', 'auth', 'ops', 'unknown']);

const nodes: LocalNode[] = [];
after(async () => { for (const n of nodes) await n.stop(); });

describe('operations endpoints', () => {
  it('/healthz, /readyz and /metrics on a default server: requests counted by interaction and status, no ids or query values in labels; a stopped audit writer makes it unready', async () => {
    const s = await testServer();
    try {
      const live = await getJson(`${s.url}/healthz`);
      assert.deepEqual([live.status, live.body], [200, { status: 'ok' }]);
      assert.equal(live.cacheControl, 'no-store');
      const ready = await getJson(`${s.url}/readyz`);
      assert.deepEqual([ready.status, ready.body], [200, { status: 'ok', checks: { store: 'ok', chain: 'off', audit: 'ok' } }]);

      const patient = await fhir(s, 'POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'Zyxwvuts' }] });
      assert.equal(patient.status, 201);
      const obs = await fhir(s, 'POST', 'Observation', observation(patient.body.id));
      assert.equal(obs.status, 201);
      const id = obs.body.id as string;

      const before = await scrape(s);
      const reads = value(before, 'custos_http_requests_total', { interaction: 'read', status: '200' }) ?? 0;
      const timed = value(before, 'custos_http_request_duration_seconds_count', { interaction: 'read' }) ?? 0;
      assert.equal((await fhir(s, 'GET', `Observation/${id}`)).status, 200);
      assert.equal((await fhir(s, 'GET', `Observation/${id}/_history/1`)).status, 200);
      assert.equal((await fhir(s, 'GET', `Observation?code=qq-secret-4711&subject=Patient/${patient.body.id}`)).status, 200);
      assert.equal((await fhir(s, 'GET', `Patient?family=Zyxwvuts`)).status, 200);
      assert.equal((await fhir(s, 'GET', `Observation/${id}`, undefined, null)).status, 401);
      assert.equal((await fhir(s, 'GET', `Nosuchtype-${id}/${id}`)).status, 404);
      assert.equal((await fhir(s, 'GET', 'metadata', undefined, null)).status, 200);

      const samples = await scrape(s);
      assert.equal(value(samples, 'custos_http_requests_total', { interaction: 'read', status: '200' }), reads + 1, 'the read was counted once');
      assert.equal(value(samples, 'custos_http_request_duration_seconds_count', { interaction: 'read' }), timed + 2, 'the read and the refused one were timed');
      assert.equal(value(samples, 'custos_http_requests_total', { interaction: 'vread', status: '200' }), 1);
      assert.equal(value(samples, 'custos_http_requests_total', { interaction: 'search-type', status: '200' }), 2);
      assert.equal(value(samples, 'custos_http_requests_total', { interaction: 'create', status: '201' }), 2);
      assert.equal(value(samples, 'custos_http_requests_total', { interaction: 'read', status: '401' }), 1, 'a refused authentication is counted by the interaction it asked for');
      assert.ok((value(samples, 'custos_http_requests_total', { interaction: 'unknown', status: '404' }) ?? 0) >= 1);
      assert.equal(value(samples, 'custos_http_requests_total', { interaction: 'capabilities', status: '200' }), 1);
      assert.ok((value(samples, 'custos_http_requests_total', { interaction: 'ops', status: '200' }) ?? 0) >= 3, '/healthz, /readyz and the first scrape');
      for (const x of samples) {
        for (const v of Object.values(x.labels)) {
          for (const secret of [id, patient.body.id as string, 'qq-secret-4711', 'Zyxwvuts', 'Nosuchtype']) assert.ok(!v.includes(secret), `${x.name} has a label holding ${secret}: ${v}`);
          assert.ok(!v.includes('/') && !v.includes('?') && !v.includes('='), `${x.name} has a path or query in a label: ${v}`);
        }
        if (x.name.startsWith('custos_http_')) assert.ok(INTERACTIONS.has(x.labels.interaction!), `interaction label ${x.labels.interaction}`);
      }
      assert.ok(samples.some((x) => x.name === 'custos_http_request_duration_seconds_bucket' && x.labels.interaction === 'read' && x.labels.le === '+Inf'));
      assert.equal(value(samples, 'custos_write_queue_depth'), 0);
      assert.equal(typeof value(samples, 'custos_audit_backlog'), 'number');
      assert.equal(value(samples, 'custos_audit_writer_up'), 1);
      assert.ok((value(samples, 'process_cpu_seconds_total') ?? -1) >= 0, 'default process metrics');
      assert.ok((value(samples, 'nodejs_heap_size_total_bytes') ?? 0) > 0);
      for (const absent of ['custos_chain_reachable', 'custos_ledger_backlog', 'custos_consent_view_age_seconds']) {
        assert.equal(value(samples, absent), undefined, `${absent} with LEDGER=off`);
      }

      // The audit writer thread stops: AuditEvents of reads are no longer written by it.
      await s.app.audit!['o'].thread!['worker'].terminate();
      const down = await getJson(`${s.url}/readyz`);
      assert.deepEqual([down.status, down.body], [503, { status: 'unavailable', checks: { store: 'ok', chain: 'off', audit: 'down' } }]);
      assert.equal(value(await scrape(s), 'custos_audit_writer_up'), 0);
      assert.equal((await getJson(`${s.url}/healthz`)).status, 200, 'still live');
    } finally {
      await s.close();
    }
  });

  it('with METRICS_TOKEN, /metrics needs it as a bearer token (also from loopback); health endpoints stay open', async () => {
    const token = 'm3tr1cs-t0ken-for-the-test-0123456789';
    const s = await testServer({ METRICS_TOKEN: token, WRITE_WORKERS: '0', READ_WORKERS: '0' });
    try {
      for (const headers of [{}, { authorization: 'Bearer wrong-token-0123456789abcdef' }, { authorization: `Basic ${token}` }] as Array<Record<string, string>>) {
        const res = await fetch(`${s.url}/metrics`, { headers });
        assert.equal(res.status, 401);
        assert.match(res.headers.get('www-authenticate') ?? '', /^Bearer realm="custos-metrics"/);
        const body = await res.json() as { resourceType: string; issue: Array<{ code: string }> };
        assert.equal(body.resourceType, 'OperationOutcome');
        assert.equal(body.issue[0]!.code, 'login');
      }
      const samples = await scrape(s, { authorization: `Bearer ${token}` });
      assert.ok(samples.some((x) => x.name === 'custos_http_requests_total' && x.labels.interaction === 'ops' && x.labels.status === '401'));
      assert.equal((await getJson(`${s.url}/healthz`)).status, 200);
      assert.equal((await getJson(`${s.url}/readyz`)).status, 200);
    } finally {
      await s.close();
    }
    assert.throws(() => loadConfig({ METRICS_TOKEN: 'short' }), /METRICS_TOKEN must be at least 16/);
    assert.deepEqual(loadConfig({}).metrics, {});
  });

  it('without METRICS_TOKEN, /metrics answers loopback clients only', async () => {
    for (const a of ['127.0.0.1', '127.8.9.10', '::1', '::ffff:127.0.0.1', '::FFFF:127.0.0.2']) assert.equal(isLoopback(a), true, a);
    for (const a of [undefined, '', '10.0.0.1', '192.168.1.2', '::2', '::ffff:10.0.0.1', 'fe80::1', '128.0.0.1', '127.0.0.1.evil']) assert.equal(isLoopback(a), false, String(a));
    // Network tests touch loopback only: a remote peer is stood in for by the address the socket reports.
    const app = express();
    app.use((req, _res, next) => { Object.defineProperty(req.socket, 'remoteAddress', { value: '10.1.2.3', configurable: true }); next(); });
    app.get('/metrics', metricsAccess(undefined), (_req, res) => { res.send('ok'); });
    const remote = http.createServer(app).listen(0, '127.0.0.1');
    await new Promise((r) => remote.once('listening', r));
    try {
      const res = await fetch(`http://127.0.0.1:${(remote.address() as { port: number }).port}/metrics`);
      assert.equal(res.status, 403);
      const body = await res.json() as { resourceType: string; issue: Array<{ diagnostics: string }> };
      assert.equal(body.resourceType, 'OperationOutcome');
      assert.match(body.issue[0]!.diagnostics, /loopback clients only; set METRICS_TOKEN/);
    } finally {
      await new Promise((r) => remote.close(r));
    }
    const s = await testServer({ WRITE_WORKERS: '0', READ_WORKERS: '0' });
    try {
      assert.equal((await fetch(`${s.url}/metrics`)).status, 200);
    } finally {
      await s.close();
    }
  });

  it('ledger metrics and chain readiness: the last anchored batch, the backlog, and 503 naming the chain once its node stops', async () => {
    const node = await startLocalNode({ stateDir: tempDir('custos-chain-'), port: await freePort() });
    nodes.push(node);
    const key = loadOrCreateKey(path.join(tempDir('custos-key-'), 'anchorer.key'));
    await fund(node.rpcUrl, new Wallet(key).address);
    const deployed = await AnchorRegistryClient.deploy(node.rpcUrl, key);
    const contract = deployed.address;
    deployed.close();
    const s = await testServer({
      LEDGER: 'on', LEDGER_RPC_URL: node.rpcUrl, LEDGER_KEY: key, LEDGER_CONTRACT: contract, LEDGER_CHAIN_ID: String(node.chainId),
      LEDGER_BATCH_SIZE: '1000', LEDGER_BATCH_MS: '600000', CONSENT_CHAIN: 'off', AUDIT: 'off', WRITE_WORKERS: '0', READ_WORKERS: '0',
    });
    try {
      for (const v of [1, 2]) assert.equal((await fhir(s, 'POST', 'Observation', { ...observation('p1'), valueQuantity: { value: v } })).status, 201);
      let samples = await scrape(s);
      assert.equal(value(samples, 'custos_ledger_backlog'), 2);
      assert.equal(value(samples, 'custos_ledger_last_anchored_batch_id'), 0, 'nothing anchored yet');
      await s.app.ledger.flush(true);
      const status = s.app.ledger.status();
      assert.ok(status.lastBatch?.blockTime, 'a batch was anchored');
      samples = await scrape(s);
      assert.equal(value(samples, 'custos_ledger_backlog'), 0);
      assert.equal(value(samples, 'custos_ledger_last_anchored_batch_id'), status.lastBatch.id);
      assert.equal(value(samples, 'custos_ledger_last_anchored_batch_timestamp_seconds'), status.lastBatch.blockTime);
      assert.equal(value(samples, 'custos_chain_reachable'), 1);
      assert.equal(value(samples, 'custos_consent_view_age_seconds'), undefined, 'CONSENT_CHAIN=off');
      const ready = await getJson(`${s.url}/readyz`);
      assert.deepEqual([ready.status, ready.body], [200, { status: 'ok', checks: { store: 'ok', chain: 'ok', audit: 'off' } }]);

      await node.stop();
      const down = await getJson(`${s.url}/readyz`);
      assert.deepEqual([down.status, down.body], [503, { status: 'unavailable', checks: { store: 'ok', chain: 'down', audit: 'off' } }]);
      assert.ok(!JSON.stringify(down.body).includes(String(new URL(node.rpcUrl).port)), 'the answer does not name the node');
      assert.equal(value(await scrape(s), 'custos_chain_reachable'), 0);
      assert.equal((await getJson(`${s.url}/healthz`)).status, 200, 'still live');
      assert.equal((await fhir(s, 'POST', 'Observation', observation('p1'))).status, 201, 'writes go on while the chain is down');
    } finally {
      await s.close();
    }
  });

  it('the chain probe sends an RPC URL\'s credentials as Basic auth and counts refusals and errors as unreachable', async () => {
    const seen: Array<string | undefined> = [];
    const rpc = http.createServer((req, res) => {
      seen.push(req.headers.authorization);
      let body = '';
      req.on('data', (d) => { body += d; });
      req.on('end', () => {
        const call = JSON.parse(body) as { id: number; method: string };
        if (req.headers.authorization !== `Basic ${Buffer.from('ops:s3cr et').toString('base64')}`) { res.writeHead(401).end(); return; }
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(call.method === 'eth_blockNumber'
          ? { jsonrpc: '2.0', id: call.id, result: '0x2a' } : { jsonrpc: '2.0', id: call.id, error: { code: -32601, message: 'no such method' } }));
      });
    });
    await new Promise<void>((r) => rpc.listen(0, '127.0.0.1', r));
    try {
      const port = (rpc.address() as { port: number }).port;
      assert.deepEqual(await new ChainProbe(`http://ops:s3cr%20et@127.0.0.1:${port}/`).check(), { ok: true, block: 42 });
      assert.deepEqual(await new ChainProbe(`http://127.0.0.1:${port}/`).check(), { ok: false, error: 'HTTP 401' });
      assert.equal((await new ChainProbe(`http://127.0.0.1:${await freePort()}/`).check()).ok, false, 'nothing listens');
      assert.equal(seen.length, 2);
    } finally {
      await new Promise((r) => rpc.close(r));
    }
  });

  it('the consent chain view\'s age with CONSENT_CHAIN=required on the embedded chain', async () => {
    const s = await testServer({ LEDGER: 'embedded', LEDGER_BATCH_MS: '60000', AUDIT: 'off', WRITE_WORKERS: '0', READ_WORKERS: '0' });
    try {
      const samples = await scrape(s);
      const age = value(samples, 'custos_consent_view_age_seconds');
      assert.ok(age !== undefined && Number.isFinite(age) && age >= 0, `consent view age ${age}`);
      assert.equal(value(samples, 'custos_chain_reachable'), 1);
      const ready = await getJson(`${s.url}/readyz`);
      assert.deepEqual([ready.status, ready.body.checks.chain], [200, 'ok']);
    } finally {
      await s.close();
    }
  });
});
