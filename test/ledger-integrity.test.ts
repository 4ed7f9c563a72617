import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import Database from 'better-sqlite3';
import request from 'supertest';
import type { Bundle, Observation, Parameters, ParametersParameter, Patient } from '@medplum/fhirtypes';
import { backendKeyPair, clientAssertion, FHIR_JSON, runCli, testApp, tokenForm, type CliRun } from './helpers.js';
import { runIntegrityCommand } from '../src/ledger/integrity-cli.js';
import type { IntegrityReport } from '../src/ledger/integrity.js';

type TestApp = Awaited<ReturnType<typeof testApp>>;

const FAMILY = 'Zebulonovicz';
const part = (p: ParametersParameter, name: string) => p.part?.find((x) => x.name === name);
const param = (p: Parameters, name: string) => p.parameter?.find((x) => x.name === name);

const obs = (patient: string, value: number): Observation => ({
  resourceType: 'Observation', status: 'final', subject: { reference: `Patient/${patient}` },
  category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' }] }],
  code: { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }], text: 'heart rate' },
  effectiveDateTime: '2024-05-01T10:00:00Z', valueQuantity: { value, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
});

/** Runs the CLI in this process, capturing its output. */
async function cli(argv: string[], env: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const code = await runIntegrityCommand(argv, env, { stdout: { write: (s: string) => { stdout += s; } }, stderr: { write: (s: string) => { stderr += s; } } });
  return { code, stdout, stderr };
}

/** Runs the real `custos integrity-check` as a separate process (as an operator would, beside the server). */
function cliProcess(argv: string[], env: Record<string, string>): Promise<CliRun> {
  return runCli(['integrity-check', ...argv], env);
}

/** A backend client's token from the real token endpoint. */
async function backendToken(t: TestApp, scope: string, trusted: boolean): Promise<string> {
  const key = await backendKeyPair();
  const { client } = t.auth.registry.addClient({ type: 'backend', jwks: key.jwks, scope, name: 'integrity test', trusted });
  const tokenUrl = new URL(t.auth.endpoints.token);
  const res = await request(t.raw).post(tokenUrl.pathname).set('Host', tokenUrl.host).type('form')
    .send(tokenForm(await clientAssertion(key, client.clientId, tokenUrl.href), scope));
  assert.equal(res.status, 200, res.text);
  return (res.body as { access_token: string }).access_token;
}

/** Tamper detection: the integrity scan over a real store with the embedded ledger. */
describe('integrity check (custos integrity-check and $integrity-check)', () => {
  let t: TestApp;
  let admin: string;
  let env: Record<string, string>;
  let rpcUrl: string;
  const ids: Record<string, string> = {};

  const post = async (type: string, body: object) => {
    const res = await request(t.app).post(`/fhir/${type}`).set('content-type', FHIR_JSON).send(JSON.stringify(body));
    assert.equal(res.status, 201, res.text);
    return res.body.id as string;
  };
  const check = (token?: string, method: 'get' | 'post' = 'get') => {
    const r = request(t.raw)[method]('/fhir/$integrity-check');
    return token ? r.set('authorization', `Bearer ${token}`) : r;
  };

  before(async () => {
    // Index rows extracted in a write worker (as in production); batches cut on size (5) only.
    // The audit trail is off: its batched AuditEvents of reads would land while counts are compared
    // (the integrity of AuditEvents is tested in audit-trail.test.ts).
    t = await testApp({ LEDGER: 'embedded', LEDGER_BATCH_SIZE: '5', LEDGER_BATCH_MS: '60000', WRITE_WORKERS: '1', READ_WORKERS: '0', AUDIT: 'off' });
    rpcUrl = t.ledger.status().rpcUrl!;
    env = { DATA_DIR: t.config.dataDir, LEDGER: 'embedded', LEDGER_NODE_PORT: new URL(rpcUrl).port };
    admin = await backendToken(t, 'system/*.rs', true);

    const patient: Patient = {
      resourceType: 'Patient', name: [{ family: FAMILY, given: ['Ada'] }], birthDate: '1970-02-03', gender: 'female',
      identifier: [{ system: 'urn:oid:1.2.3', value: 'MRN-777' }], telecom: [{ system: 'phone', value: '+41 79 000 00 00' }],
    };
    ids.patient = await post('Patient', patient);
    let n = 60;
    for (const k of ['cipher', 'hash', 'added', 'changed', 'removed', 'neighbour', 'deleted']) ids[k] = await post('Observation', obs(ids.patient, n++));
    // An update (two versions), a delete (current version is a marker without index rows), a shared-key resource.
    assert.equal((await request(t.app).put(`/fhir/Patient/${ids.patient}`).set('content-type', FHIR_JSON).send(JSON.stringify({ ...patient, id: ids.patient, gender: 'other' }))).status, 200);
    assert.ok([200, 204].includes((await request(t.app).delete(`/fhir/Observation/${ids.deleted}`)).status));
    ids.org = await post('Organization', { resourceType: 'Organization', name: 'Clinic', identifier: [{ system: 'urn:x', value: '1' }] });
    // A transaction Bundle (references resolved before the index is extracted).
    const bundle: Bundle = {
      resourceType: 'Bundle', type: 'transaction', entry: [
        { fullUrl: 'urn:uuid:3f8d0c1e-0000-4000-8000-000000000001', resource: { resourceType: 'Patient', name: [{ family: 'Second' }] }, request: { method: 'POST', url: 'Patient' } },
        { resource: { ...obs('x', 88), subject: { reference: 'urn:uuid:3f8d0c1e-0000-4000-8000-000000000001' } } as Observation, request: { method: 'POST', url: 'Observation' } },
      ],
    };
    assert.equal((await request(t.app).post('/fhir').set('content-type', FHIR_JSON).send(JSON.stringify(bundle))).status, 200);
    // More batches: the newest one's root is changed below.
    for (let i = 0; i < 6; i++) await post('Observation', obs(ids.patient, 100 + i));
    await t.ledger.flush();
    assert.ok(t.ledger.status().backlog < 5, 'only a partial batch is left unanchored');
  });
  after(async () => t?.close());

  it('a clean store has no findings: CLI exit 0 (summary and --json) and $integrity-check ok=true', async () => {
    const text = await cli([], env);
    assert.equal(text.code, 0, text.stdout + text.stderr);
    assert.match(text.stdout, /OK: no findings/);
    assert.match(text.stdout, /confirmed roots looked up/);

    const json = await cli(['--json'], env);
    assert.equal(json.code, 0, json.stderr);
    const report = JSON.parse(json.stdout) as IntegrityReport;
    assert.equal(report.ok, true);
    assert.deepEqual(report.findings, []);
    const versions = (new Database(path.join(t.config.dataDir, 'custos.db'), { readonly: true }));
    try {
      assert.equal(report.versionsChecked, versions.prepare('SELECT count(*) FROM resource_version').pluck().get());
      assert.equal(report.batchesChecked, versions.prepare('SELECT count(*) FROM ledger_batch').pluck().get());
    } finally {
      versions.close();
    }
    assert.ok(report.batchesChecked >= 3);
    assert.equal(report.chain.checked, true);
    assert.equal(report.chain.rootsChecked, report.batchesChecked);
    assert.ok(report.indexesChecked > 10);

    const noChain = await cli(['--json', '--no-chain'], env);
    assert.equal(noChain.code, 0);
    assert.equal((JSON.parse(noChain.stdout) as IntegrityReport).chain.checked, false);
    // The embedded node's port unknown: the chain check is skipped and said so.
    const unknownPort = await cli([], { DATA_DIR: t.config.dataDir, LEDGER: 'embedded' });
    assert.equal(unknownPort.code, 0);
    assert.match(unknownPort.stderr, /chain check skipped: the embedded node's port is not known/);
    assert.equal((await cli(['--bogus'], env)).code, 2);
    assert.equal((await cli(['extra'], env)).code, 2);
    assert.equal((await cli([], { DATA_DIR: path.join(t.config.dataDir, 'nope') })).code, 2);

    for (const method of ['get', 'post'] as const) {
      const res = await check(admin, method);
      assert.equal(res.status, 200, res.text);
      const p = res.body as Parameters;
      assert.equal(param(p, 'ok')?.valueBoolean, true, JSON.stringify(p));
      assert.equal(param(p, 'versionsChecked')?.valueInteger, report.versionsChecked);
      assert.equal(param(p, 'batchesChecked')?.valueInteger, report.batchesChecked);
      assert.equal(param(p, 'findingCount')?.valueInteger, 0);
      assert.equal(part(param(p, 'chain')!, 'checked')?.valueBoolean, true);
      assert.equal(p.parameter!.filter((x) => x.name === 'finding').length, 0);
    }
  });

  it('$integrity-check is for trusted clients with a system/* scope: 401 without a token, 403 otherwise', async () => {
    assert.equal((await check()).status, 401);
    const untrustedToken = await backendToken(t, 'system/*.*', false);
    const untrusted = await check(untrustedToken);
    assert.equal(untrusted.status, 403, untrusted.text);
    assert.equal(untrusted.body.issue[0].code, 'forbidden');
    assert.equal((await check(untrustedToken, 'post')).status, 403);
    assert.equal((await check(await backendToken(t, 'system/Observation.rs', true))).status, 403, 'trusted, but no system/* scope');
    // The other system operations keep their scope rule.
    assert.equal((await request(t.raw).get('/fhir/$ledger-status').set('authorization', `Bearer ${t.token}`)).status, 200);
  });

  it('reports a changed ciphertext, a changed stored hash (and its batch), a changed batch root and added/changed/removed index rows', async () => {
    const file = path.join(t.config.dataDir, 'custos.db');
    const ledger = t.store.ledger();
    const batchOf = (id: string) => ledger.position('Observation', id, 1)!.batch!;
    const hashBatch = batchOf(ids.hash!).id;
    const rootBatch = ledger.confirmedBatches(1)[0]!;
    assert.notEqual(rootBatch.id, hashBatch);
    const db = new Database(file);
    try {
      const pk = (id: string) => db.prepare("SELECT pk FROM resource_current WHERE type = 'Observation' AND id = ?").pluck().get(id) as number;
      const body = db.prepare("SELECT body FROM resource_version WHERE type = 'Observation' AND id = ? AND version = 1").pluck().get(ids.cipher) as Buffer;
      body[40] ^= 0x01;
      db.prepare("UPDATE resource_version SET body = ? WHERE type = 'Observation' AND id = ? AND version = 1").run(body, ids.cipher);
      db.prepare("UPDATE resource_version SET content_hash = ? WHERE type = 'Observation' AND id = ? AND version = 1").run('ab'.repeat(32), ids.hash);
      db.prepare('UPDATE ledger_batch SET root = ? WHERE id = ?').run(randomBytes(32), rootBatch.id);
      db.prepare("INSERT INTO idx_token (res, n, param, system, code, dlo) VALUES (?, 999, 'code', 'http://loinc.org', '1234-5', NULL)").run(pk(ids.added!));
      assert.equal(db.prepare("UPDATE idx_quantity SET value = value + 1, lo = lo + 1, hi = hi + 1 WHERE res = ? AND param = 'value-quantity'").run(pk(ids.changed!)).changes, 1);
      assert.equal(db.prepare("DELETE FROM idx_reference WHERE res = ? AND param = 'subject'").run(pk(ids.removed!)).changes, 1);
    } finally {
      db.close();
    }

    const expected = [
      { kind: 'undecryptable', resourceType: 'Observation', id: ids.cipher, versionId: 1 },
      { kind: 'hash_mismatch', resourceType: 'Observation', id: ids.hash, versionId: 1 },
      { kind: 'index_mismatch', resourceType: 'Observation', id: ids.added, versionId: 1 },
      { kind: 'index_mismatch', resourceType: 'Observation', id: ids.changed, versionId: 1 },
      { kind: 'index_mismatch', resourceType: 'Observation', id: ids.removed, versionId: 1 },
      { kind: 'batch_root_mismatch', batchId: hashBatch },
      { kind: 'batch_root_mismatch', batchId: rootBatch.id },
      { kind: 'root_missing_on_chain', batchId: rootBatch.id },
    ];
    const key = (f: { kind: string; id?: string; batchId?: number }) => `${f.kind} ${f.id ?? ''} ${f.batchId ?? ''}`;

    // The real CLI, in its own process beside the running server (chain via --rpc).
    const run = await cliProcess(['--rpc', rpcUrl], { DATA_DIR: t.config.dataDir, LEDGER: 'embedded' });
    assert.equal(run.code, 1, run.stdout + run.stderr);
    assert.match(run.stdout, /TAMPERING DETECTED: 8 findings/);
    for (const k of ['cipher', 'hash', 'added', 'changed', 'removed']) assert.match(run.stdout, new RegExp(`Observation/${ids[k]}/_history/1`), k);
    assert.match(run.stdout, new RegExp(`batch ${hashBatch} `));
    assert.match(run.stdout, new RegExp(`root_missing_on_chain\\s+batch ${rootBatch.id} `));
    assert.match(run.stdout, /token code \(1 added\)/);
    assert.match(run.stdout, /quantity value-quantity \(1 changed\)/);
    assert.match(run.stdout, /reference subject \(1 removed\)/);
    // No PHI in the findings: ids, hashes and parameter names only.
    // Hashes, ids and transaction hashes are hex: a birth year can turn up inside one by chance, so they are left out of the search.
    const words = run.stdout.replace(/[0-9a-f]{8,}(?:-[0-9a-f]{4,})*/gi, '#');
    for (const phi of [FAMILY, 'Ada', 'MRN-777', '1970', 'heart rate', '8867-4', '1234-5']) assert.ok(!words.includes(phi), phi);

    const json = await cli(['--json'], env);
    assert.equal(json.code, 1);
    const report = JSON.parse(json.stdout) as IntegrityReport;
    assert.equal(report.ok, false);
    assert.deepEqual(report.findings.map(key).sort(), expected.map(key).sort(), JSON.stringify(report.findings, null, 1));
    for (const e of expected) {
      const f = report.findings.find((x) => key(x) === key(e))!;
      assert.deepEqual({ kind: f.kind, resourceType: f.resourceType, id: f.id, versionId: f.versionId, batchId: f.batchId }, { resourceType: undefined, id: undefined, versionId: undefined, batchId: undefined, ...e });
    }
    assert.match(report.findings.find((f) => f.kind === 'hash_mismatch')!.detail, /recorded content hash (ab){32}, recomputed [0-9a-f]{64}/);

    const res = await check(admin);
    assert.equal(res.status, 200, res.text);
    const p = res.body as Parameters;
    assert.equal(param(p, 'ok')?.valueBoolean, false);
    assert.equal(param(p, 'findingCount')?.valueInteger, expected.length);
    const parts = p.parameter!.filter((x) => x.name === 'finding').map((f) => ({
      kind: part(f, 'kind')!.valueCode!, id: part(f, 'id')?.valueString, batchId: part(f, 'batchId')?.valueInteger,
      resourceType: part(f, 'resourceType')?.valueCode, versionId: part(f, 'versionId')?.valueInteger, detail: part(f, 'detail')!.valueString!,
    }));
    assert.deepEqual(parts.map(key).sort(), expected.map(key).sort());
    for (const f of parts.filter((x) => x.id)) {
      assert.equal(f.resourceType, 'Observation');
      assert.equal(f.versionId, 1);
    }
    assert.ok(!JSON.stringify(p).includes(FAMILY));
  });
});
