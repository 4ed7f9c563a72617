import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import request from 'supertest';
import type { Bundle, BundleEntry, Observation, OperationOutcome, Patient } from '@medplum/fhirtypes';
import { loadConfig } from '../src/config.js';
import { processBundle } from '../src/fhir/bundle.js';
import { createApp } from '../src/server.js';
import { testApp } from './helpers.js';

const FIXTURES = new URL('../../shared/fixtures/', import.meta.url);
const NEEDS_FIXTURES: { skip?: string } = fs.existsSync(FIXTURES) ? {} : { skip: 'needs ../shared/fixtures beside the project (real third-party FHIR data; CI has it)' };
const FHIR_JSON = 'application/fhir+json';
const SYS = 'urn:custos:test:bundle';

function fixture<T = Bundle>(rel: string): T {
  return JSON.parse(fs.readFileSync(fileURLToPath(new URL(rel, FIXTURES)), 'utf8')) as T;
}

/** The first patient bundle (alphabetically) of the SMART Synthea sample data. */
function firstSyntheaPatientFile(): string {
  const dir = new URL('synthea/smart-generated-sample-data/', FIXTURES);
  const files = fs.readdirSync(fileURLToPath(dir))
    .filter((f) => f.endsWith('.json') && !/^(hospital|practitioner)Information/.test(f))
    .sort();
  assert.ok(files.length > 0, 'no Synthea patient bundle in the fixtures');
  return `synthea/smart-generated-sample-data/${files[0]}`;
}

/** Every Reference.reference value in a resource (contained included). */
function references(node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) node.forEach((v) => references(v, out));
  else if (node && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if (k === 'reference' && typeof v === 'string') out.push(v);
      else references(v, out);
    }
  }
  return out;
}

const idOf = (location: string | undefined): string => {
  const m = /\/([A-Za-z]+)\/([^/]+)\/_history\/\d+$/.exec(location ?? '');
  assert.ok(m, `not a version location: ${location}`);
  return m[2]!;
};

const txn = (entry: BundleEntry[], type: 'transaction' | 'batch' = 'transaction'): Bundle => ({ resourceType: 'Bundle', type, entry });

describe('batch and transaction Bundles', () => {
  let built: Awaited<ReturnType<typeof createApp>>;
  let app: Parameters<typeof request>[0];

  let config: ReturnType<typeof loadConfig>;
  let dataDir: string;

  before(async () => {
    const t = await testApp();
    built = t;
    config = t.config;
    dataDir = t.config.dataDir;
    app = t.app;
  });
  after(async () => {
    await built.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  });

  const post = (bundle: unknown) => request(app).post('/fhir').set('content-type', FHIR_JSON).send(JSON.stringify(bundle));
  const get = (path: string) => request(app).get(`/fhir/${path}`).set('accept', FHIR_JSON);
  const count = async (type: string, query: string): Promise<number> => {
    const res = await get(`${type}?${query}&_total=accurate`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    assert.equal(typeof res.body.total, 'number');
    return res.body.total as number;
  };
  const assertOutcome = (body: unknown, includes?: RegExp): OperationOutcome => {
    const oo = body as OperationOutcome;
    assert.equal(oo.resourceType, 'OperationOutcome', JSON.stringify(body));
    assert.ok(oo.issue.length > 0);
    if (includes) assert.match(oo.issue.map((i) => i.diagnostics ?? '').join(' | '), includes);
    return oo;
  };

  it('rewrites urn:uuid references to the ids the server assigns, also in contained resources and extensions', async () => {
    const res = await post(txn([
      {
        fullUrl: 'urn:uuid:6e1c0f55-1b0f-4a3f-9a8e-000000000001',
        resource: { resourceType: 'Observation', status: 'final', code: { text: 'heart rate' },
          subject: { reference: 'urn:uuid:6e1c0f55-1b0f-4a3f-9a8e-000000000002' },
          encounter: { reference: 'urn:uuid:6e1c0f55-1b0f-4a3f-9a8e-000000000003' },
          specimen: { reference: '#sp1' },
          contained: [{ resourceType: 'Specimen', id: 'sp1', subject: { reference: 'urn:uuid:6e1c0f55-1b0f-4a3f-9a8e-000000000002' } }],
          extension: [{ url: 'http://example.org/fhir/StructureDefinition/recorded-for', valueReference: { reference: 'urn:uuid:6e1c0f55-1b0f-4a3f-9a8e-000000000002' } }],
        } as Observation,
        request: { method: 'POST', url: 'Observation' },
      },
      {
        fullUrl: 'urn:uuid:6e1c0f55-1b0f-4a3f-9a8e-000000000002',
        resource: { resourceType: 'Patient', identifier: [{ system: SYS, value: 'urn-1' }], name: [{ family: 'Urn' }] } as Patient,
        request: { method: 'POST', url: 'Patient' },
      },
      {
        fullUrl: 'urn:uuid:6e1c0f55-1b0f-4a3f-9a8e-000000000003',
        resource: { resourceType: 'Encounter', status: 'finished', class: { code: 'AMB' }, subject: { reference: 'urn:uuid:6e1c0f55-1b0f-4a3f-9a8e-000000000002' } },
        request: { method: 'POST', url: '/Encounter' },
      },
    ]));
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const out = res.body as Bundle;
    assert.equal(out.resourceType, 'Bundle');
    assert.equal(out.type, 'transaction-response');
    assert.equal(out.entry?.length, 3);
    for (const e of out.entry!) {
      assert.equal(e.response?.status, '201 Created');
      assert.match(e.response?.etag ?? '', /^W\/"1"$/);
      assert.ok(e.response?.lastModified);
    }
    // Response entries are in the request order, although creates all run in one phase.
    const [obsEntry, patEntry, encEntry] = out.entry!;
    assert.equal(obsEntry!.resource?.resourceType, 'Observation');
    assert.equal(patEntry!.resource?.resourceType, 'Patient');
    assert.equal(encEntry!.resource?.resourceType, 'Encounter');
    const pid = idOf(patEntry!.response?.location);
    const eid = idOf(encEntry!.response?.location);
    assert.match(patEntry!.response!.location!, new RegExp(`/Patient/${pid}/_history/1$`));

    const stored = (await get(`Observation/${idOf(obsEntry!.response?.location)}`)).body as Observation;
    assert.equal(stored.subject?.reference, `Patient/${pid}`);
    assert.equal(stored.encounter?.reference, `Encounter/${eid}`);
    assert.equal(stored.specimen?.reference, '#sp1');
    assert.equal((stored.contained?.[0] as { subject?: { reference?: string } }).subject?.reference, `Patient/${pid}`);
    assert.equal(stored.extension?.[0]?.valueReference?.reference, `Patient/${pid}`);
    assert.doesNotMatch(JSON.stringify(stored), /urn:uuid/);
    const enc = (await get(`Encounter/${eid}`)).body as { subject: { reference: string } };
    assert.equal(enc.subject.reference, `Patient/${pid}`);
    // The rewritten reference is indexed like any other.
    assert.equal(await count('Observation', `subject=Patient/${pid}`), 1);
  });

  it('resolves absolute fullUrls and relative references between entries that use them', async () => {
    const res = await post(txn([
      {
        fullUrl: 'http://other.example.org/fhir/Patient/a2',
        resource: { resourceType: 'Patient', id: 'a2', name: [{ family: 'Absolute' }] },
        request: { method: 'POST', url: 'Patient' },
      },
      {
        fullUrl: 'http://other.example.org/fhir/Observation/o1',
        resource: { resourceType: 'Observation', id: 'o1', status: 'final', code: { text: 'x' }, subject: { reference: 'Patient/a2' }, focus: [{ reference: 'http://other.example.org/fhir/Patient/a2' }] },
        request: { method: 'POST', url: 'Observation' },
      },
    ]));
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const [p, o] = (res.body as Bundle).entry!;
    const pid = idOf(p!.response?.location);
    assert.notEqual(pid, 'a2', 'a POST gets a server-assigned id');
    const obs = o!.resource as Observation;
    assert.equal(obs.subject?.reference, `Patient/${pid}`);
    assert.equal(obs.focus?.[0]?.reference, `Patient/${pid}`);
  });

  it('loads a Synthea patient bundle in one transaction and every reference resolves', NEEDS_FIXTURES, async () => {
    const bundle = fixture(firstSyntheaPatientFile());
    const n = bundle.entry!.length;
    const res = await post(bundle);
    assert.equal(res.status, 200, JSON.stringify(res.body).slice(0, 2000));
    const out = res.body as Bundle;
    assert.equal(out.type, 'transaction-response');
    assert.equal(out.entry?.length, n);
    out.entry!.forEach((e, i) => {
      assert.equal(e.response?.status, '201 Created', `entry ${i}`);
      assert.equal(e.resource?.resourceType, bundle.entry![i]!.resource!.resourceType, `entry ${i} keeps its position`);
    });
    assert.doesNotMatch(JSON.stringify(out), /urn:uuid:/);

    const refs = new Set(out.entry!.flatMap((e) => references(e.resource)).filter((r) => !r.startsWith('#')));
    assert.ok(refs.size > 20, `expected many references, got ${refs.size}`);
    for (const ref of refs) {
      assert.match(ref, /^[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]+$/, `reference ${ref} is a relative Type/id`);
      const r = await get(ref);
      assert.equal(r.status, 200, `GET ${ref} -> ${r.status}`);
    }
    const patient = out.entry!.find((e) => e.resource?.resourceType === 'Patient')!;
    const pid = patient.resource!.id!;
    const observations = bundle.entry!.filter((e) => e.resource?.resourceType === 'Observation').length;
    assert.equal(await count('Observation', `subject=Patient/${pid}`), observations);
  });

  it('loads the Inferno US Core bundle: references to the PUT Patient/907 urn become Patient/907', NEEDS_FIXTURES, async () => {
    const res = await post(fixture('synthea/inferno-us-core/uscore_bundle_patient_907.json'));
    assert.equal(res.status, 200, JSON.stringify(res.body).slice(0, 2000));
    const [pat, enc, prov] = (res.body as Bundle).entry!;
    assert.equal(pat!.response?.status, '201 Created');
    assert.match(pat!.response!.location!, /\/Patient\/907\/_history\/1$/);
    assert.equal(enc!.response?.status, '201 Created');
    const eid = idOf(enc!.response?.location);
    assert.equal((enc!.resource as { subject: { reference: string } }).subject.reference, 'Patient/907');
    const provenance = (await get(`Provenance/${idOf(prov!.response?.location)}`)).body as { target: { reference: string }[]; agent: { who: { reference: string } }[] };
    assert.deepEqual(provenance.target.map((t) => t.reference), ['Patient/907', `Encounter/${eid}`]);
    assert.equal(provenance.agent[0]!.who.reference, 'Patient/907');
    assert.equal((await get('Patient/907')).status, 200);
  });

  it('conditional create (If-None-Exist) in a transaction: the second run matches and creates nothing', async () => {
    const bundle = (): Bundle => txn([
      {
        fullUrl: 'urn:uuid:0b5cb2ea-0000-4000-8000-000000000010',
        resource: { resourceType: 'Patient', identifier: [{ system: SYS, value: 'cond-1' }], name: [{ family: 'Conditional' }] },
        request: { method: 'POST', url: 'Patient', ifNoneExist: `identifier=${SYS}|cond-1` },
      },
      {
        fullUrl: 'urn:uuid:0b5cb2ea-0000-4000-8000-000000000011',
        resource: { resourceType: 'Organization', identifier: [{ system: SYS, value: 'org-1' }], name: 'Conditional Org' },
        request: { method: 'POST', url: 'Organization', ifNoneExist: `identifier=${encodeURIComponent(`${SYS}|org-1`)}` },
      },
      {
        resource: { resourceType: 'Observation', status: 'final', code: { text: 'c' }, subject: { reference: 'urn:uuid:0b5cb2ea-0000-4000-8000-000000000010' }, performer: [{ reference: 'urn:uuid:0b5cb2ea-0000-4000-8000-000000000011' }] },
        request: { method: 'POST', url: 'Observation' },
      },
    ]);
    const first = await post(bundle());
    assert.equal(first.status, 200, JSON.stringify(first.body));
    const e1 = (first.body as Bundle).entry!;
    assert.deepEqual(e1.map((e) => e.response?.status), ['201 Created', '201 Created', '201 Created']);
    const pid = e1[0]!.resource!.id!;
    const oid = e1[1]!.resource!.id!;

    const second = await post(bundle());
    assert.equal(second.status, 200, JSON.stringify(second.body));
    const e2 = (second.body as Bundle).entry!;
    assert.deepEqual(e2.map((e) => e.response?.status), ['200 OK', '200 OK', '201 Created']);
    assert.equal(e2[0]!.resource?.id, pid);
    assert.match(e2[0]!.response?.location ?? '', new RegExp(`/Patient/${pid}/_history/1$`));
    assert.equal(e2[0]!.response?.etag, 'W/"1"');
    assert.equal(e2[1]!.resource?.id, oid);
    const obs = e2[2]!.resource as Observation;
    assert.equal(obs.subject?.reference, `Patient/${pid}`, 'the urn maps to the matched resource');
    assert.equal(obs.performer?.[0]?.reference, `Organization/${oid}`);
    assert.equal(await count('Patient', `identifier=${SYS}|cond-1`), 1);
    assert.equal(await count('Organization', `identifier=${SYS}|org-1`), 1);
    assert.equal(await count('Observation', `subject=Patient/${pid}`), 2);
  });

  it('conditional update with a urn fullUrl, and conditional references, resolve inside the transaction', async () => {
    const bundle = (family: string): Bundle => txn([
      {
        fullUrl: 'urn:uuid:0b5cb2ea-0000-4000-8000-000000000020',
        resource: { resourceType: 'Patient', identifier: [{ system: SYS, value: 'cu-1' }], name: [{ family }] },
        request: { method: 'PUT', url: `Patient?identifier=${encodeURIComponent(`${SYS}|cu-1`)}` },
      },
      {
        resource: { resourceType: 'Observation', status: 'final', code: { text: 'cu' }, subject: { reference: 'urn:uuid:0b5cb2ea-0000-4000-8000-000000000020' } },
        request: { method: 'POST', url: 'Observation' },
      },
    ]);
    const first = await post(bundle('First'));
    assert.equal(first.status, 200, JSON.stringify(first.body));
    const [p1, o1] = (first.body as Bundle).entry!;
    assert.equal(p1!.response?.status, '201 Created');
    const pid = p1!.resource!.id!;
    assert.equal((o1!.resource as Observation).subject?.reference, `Patient/${pid}`);

    const second = await post(bundle('Second'));
    assert.equal(second.status, 200, JSON.stringify(second.body));
    const [p2, o2] = (second.body as Bundle).entry!;
    assert.equal(p2!.response?.status, '200 OK');
    assert.equal(p2!.resource?.id, pid);
    assert.equal(p2!.response?.etag, 'W/"2"');
    assert.equal((p2!.resource as Patient).name?.[0]?.family, 'Second');
    assert.equal((o2!.resource as Observation).subject?.reference, `Patient/${pid}`);
    assert.equal(await count('Patient', `identifier=${SYS}|cu-1`), 1);

    // A conditional reference resolves to the single match...
    const ok = await post(txn([{
      resource: { resourceType: 'Observation', status: 'final', code: { text: 'cr' }, subject: { reference: `Patient?identifier=${SYS}|cu-1` } },
      request: { method: 'POST', url: 'Observation' },
    }]));
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.equal(((ok.body as Bundle).entry![0]!.resource as Observation).subject?.reference, `Patient/${pid}`);
    // ... and fails the transaction when nothing matches.
    const none = await post(txn([{
      resource: { resourceType: 'Observation', status: 'final', code: { text: 'cr' }, subject: { reference: `Patient?identifier=${SYS}|nobody` } },
      request: { method: 'POST', url: 'Observation' },
    }]));
    assert.equal(none.status, 412, JSON.stringify(none.body));
    assertOutcome(none.body, /entry\[0\].*conditional reference/);
  });

  it('is all or nothing: a failing last entry leaves no trace', async () => {
    const before = {
      patients: await count('Patient', `identifier=${SYS}|aon-1`),
      observations: await count('Observation', 'code:text=all-or-nothing'),
    };
    assert.deepEqual(before, { patients: 0, observations: 0 });
    const entries = (last: BundleEntry): BundleEntry[] => [
      {
        fullUrl: 'urn:uuid:0b5cb2ea-0000-4000-8000-000000000030',
        resource: { resourceType: 'Patient', identifier: [{ system: SYS, value: 'aon-1' }] },
        request: { method: 'POST', url: 'Patient' },
      },
      {
        resource: { resourceType: 'Observation', status: 'final', code: { text: 'all-or-nothing' }, subject: { reference: 'urn:uuid:0b5cb2ea-0000-4000-8000-000000000030' } },
        request: { method: 'POST', url: 'Observation' },
      },
      {
        resource: { resourceType: 'Patient', id: 'aon-updated', identifier: [{ system: SYS, value: 'aon-1' }] },
        request: { method: 'PUT', url: 'Patient/aon-updated' },
      },
      last,
    ];

    // An invalid resource (Observation.status and .code are required) fails when it is executed, after the others ran.
    const invalid = await post(txn(entries({
      resource: { resourceType: 'Observation', subject: { reference: 'urn:uuid:0b5cb2ea-0000-4000-8000-000000000030' } } as unknown as Observation,
      request: { method: 'POST', url: 'Observation' },
    })));
    assert.ok(invalid.status >= 400 && invalid.status < 500, `status ${invalid.status}`);
    assertOutcome(invalid.body, /Bundle\.entry\[3\] \(POST Observation\)/);

    // A read of a resource that does not exist fails the transaction too (reads run last).
    const missing = await post(txn(entries({ request: { method: 'GET', url: 'Patient/does-not-exist' } })));
    assert.equal(missing.status, 404, JSON.stringify(missing.body));
    assertOutcome(missing.body, /Bundle\.entry\[3\] \(GET Patient\/does-not-exist\)/);

    // If-Match on a version that is not current.
    const stale = await post(txn(entries({
      resource: { resourceType: 'Patient', id: 'aon-other' },
      request: { method: 'PUT', url: 'Patient/aon-other', ifMatch: 'W/"7"' },
    })));
    assert.equal(stale.status, 412, JSON.stringify(stale.body));
    assertOutcome(stale.body, /Bundle\.entry\[3\] \(PUT Patient\/aon-other\)/);

    assert.equal(await count('Patient', `identifier=${SYS}|aon-1`), 0);
    assert.equal(await count('Observation', 'code:text=all-or-nothing'), 0);
    assert.equal((await get('Patient/aon-updated')).status, 404);
  });

  it('processes DELETE before POST and runs GET entries last, seeing the transaction\'s writes', async () => {
    const created = await request(app).post('/fhir/Patient').set('content-type', FHIR_JSON)
      .send(JSON.stringify({ resourceType: 'Patient', identifier: [{ system: SYS, value: 'order-1' }] }));
    assert.equal(created.status, 201);
    const oldId = created.body.id as string;

    const res = await post(txn([
      // Listed first, but the DELETE below runs before it: so If-None-Exist finds nothing and creates.
      {
        fullUrl: 'urn:uuid:0b5cb2ea-0000-4000-8000-000000000040',
        resource: { resourceType: 'Patient', identifier: [{ system: SYS, value: 'order-1' }], name: [{ family: 'Replacement' }] },
        request: { method: 'POST', url: 'Patient', ifNoneExist: `identifier=${SYS}|order-1` },
      },
      { request: { method: 'GET', url: `Patient?identifier=${SYS}|order-1` } },
      { request: { method: 'DELETE', url: `Patient/${oldId}` } },
      { request: { method: 'GET', url: `Patient?_id=${oldId}` } },
    ]));
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const [post1, search1, del, search2] = (res.body as Bundle).entry!;
    assert.equal(post1!.response?.status, '201 Created');
    const newId = post1!.resource!.id!;
    assert.notEqual(newId, oldId);
    assert.match(del!.response!.status, /^20[04] /);
    const found = search1!.resource as Bundle;
    assert.equal(found.type, 'searchset');
    assert.deepEqual(found.entry?.map((e) => e.resource?.id), [newId]);
    assert.equal((search2!.resource as Bundle).entry?.length ?? 0, 0);
    assert.equal((await get(`Patient/${oldId}`)).status, 410);
  });

  it('applies a JSON Patch entry (Binary) and treats repeated If-None-Exist criteria as one resource', async () => {
    const put = await request(app).put('/fhir/Patient/patch-me').set('content-type', FHIR_JSON)
      .send(JSON.stringify({ resourceType: 'Patient', id: 'patch-me', identifier: [{ system: SYS, value: 'patch-me' }], name: [{ family: 'Unpatched' }] }));
    assert.equal(put.status, 201, JSON.stringify(put.body));
    const patch = [{ op: 'add', path: '/active', value: true }, { op: 'replace', path: '/name/0/family', value: 'Patched' }];
    const res = await post(txn([
      {
        fullUrl: 'urn:uuid:0b5cb2ea-0000-4000-8000-000000000060',
        resource: { resourceType: 'Patient', identifier: [{ system: SYS, value: 'twice' }], name: [{ family: 'Once' }] },
        request: { method: 'POST', url: 'Patient', ifNoneExist: `identifier=${SYS}|twice` },
      },
      {
        fullUrl: 'urn:uuid:0b5cb2ea-0000-4000-8000-000000000061',
        resource: { resourceType: 'Patient', identifier: [{ system: SYS, value: 'twice' }], name: [{ family: 'Once' }] },
        request: { method: 'POST', url: 'Patient', ifNoneExist: `identifier=${SYS}|twice` },
      },
      {
        resource: { resourceType: 'Observation', status: 'final', code: { text: 'twice' }, subject: { reference: 'urn:uuid:0b5cb2ea-0000-4000-8000-000000000061' } },
        request: { method: 'POST', url: 'Observation' },
      },
      {
        resource: { resourceType: 'Binary', contentType: 'application/json-patch+json', data: Buffer.from(JSON.stringify(patch)).toString('base64') },
        request: { method: 'PATCH', url: `Patient?identifier=${SYS}|patch-me` },
      },
    ]));
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const [a, b, obs, patched] = (res.body as Bundle).entry!;
    assert.equal(a!.response?.status, '201 Created');
    assert.equal(b!.response?.status, '200 OK');
    assert.equal(b!.resource?.id, a!.resource?.id);
    assert.equal((obs!.resource as Observation).subject?.reference, `Patient/${a!.resource!.id}`);
    assert.equal(await count('Patient', `identifier=${SYS}|twice`), 1);
    assert.equal(patched!.response?.status, '200 OK');
    assert.equal(patched!.resource?.id, 'patch-me');
    assert.equal((patched!.resource as Patient).active, true);
    assert.equal((patched!.resource as Patient).name?.[0]?.family, 'Patched');
    assert.equal(patched!.response?.etag, 'W/"2"');
  });

  it('rejects a transaction in which two entries write the same resource', async () => {
    const res = await post(txn([
      { resource: { resourceType: 'Patient', id: 'dup-1' }, request: { method: 'PUT', url: 'Patient/dup-1' } },
      { request: { method: 'DELETE', url: 'Patient/dup-1' } },
    ]));
    assert.equal(res.status, 400);
    assertOutcome(res.body, /entry\[0\].*entry\[1\].*Patient\/dup-1/);
    assert.equal((await get('Patient/dup-1')).status, 404);
  });

  it('batch: entries succeed or fail on their own', async () => {
    const res = await post(txn([
      {
        resource: { resourceType: 'Patient', identifier: [{ system: SYS, value: 'batch-1' }] },
        request: { method: 'POST', url: 'Patient' },
      },
      { request: { method: 'GET', url: 'Patient/batch-missing' } },
      {
        resource: { resourceType: 'Patient', id: 'batch-put', identifier: [{ system: SYS, value: 'batch-2' }] },
        request: { method: 'PUT', url: 'Patient/batch-put' },
      },
      { resource: { resourceType: 'Observation', status: 'final', code: { text: 'b' } }, request: { method: 'POST', url: 'Patient' } },
      { request: { method: 'GET', url: `Patient?identifier=${SYS}|batch-1` } },
      { resource: { resourceType: 'Patient' }, request: { method: 'POST' } } as BundleEntry,
    ], 'batch'));
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const out = res.body as Bundle;
    assert.equal(out.type, 'batch-response');
    const [created, missing, put, mismatch, search, noUrl] = out.entry!;
    assert.equal(created!.response?.status, '201 Created');
    assert.equal(missing!.response?.status, '404 Not Found');
    assertOutcome(missing!.response?.outcome, /batch-missing/);
    assert.equal(missing!.resource, undefined);
    assert.equal(put!.response?.status, '201 Created');
    assert.equal(mismatch!.response?.status, '400 Bad Request');
    assertOutcome(mismatch!.response?.outcome, /does not match/);
    // Batch entries run in order DELETE, POST, PUT, GET: the search sees the create.
    assert.equal(search!.response?.status, '200 OK');
    assert.deepEqual((search!.resource as Bundle).entry?.map((e) => e.resource?.id), [created!.resource!.id]);
    assert.equal(noUrl!.response?.status, '400 Bad Request');
    assertOutcome(noUrl!.response?.outcome, /entry\[5\].*url/);
    assert.equal((await get('Patient/batch-put')).status, 200);
    assert.equal(await count('Patient', `identifier=${SYS}|batch-1`), 1);
  });

  it('batch leaves urn:uuid references alone (batch entries may not refer to each other)', async () => {
    const res = await post(txn([
      { fullUrl: 'urn:uuid:0b5cb2ea-0000-4000-8000-000000000050', resource: { resourceType: 'Patient' }, request: { method: 'POST', url: 'Patient' } },
      {
        resource: { resourceType: 'Observation', status: 'final', code: { text: 'b' }, subject: { reference: 'urn:uuid:0b5cb2ea-0000-4000-8000-000000000050' } },
        request: { method: 'POST', url: 'Observation' },
      },
    ], 'batch'));
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const [, obs] = (res.body as Bundle).entry!;
    assert.equal(obs!.response?.status, '201 Created');
    assert.equal((obs!.resource as Observation).subject?.reference, 'urn:uuid:0b5cb2ea-0000-4000-8000-000000000050');
  });

  it('follows Prefer: return for transaction-response entries (processBundle on the app\'s store)', async () => {
    const router = built.router;
    let n = 0;
    const ctx = (prefer?: 'minimal' | 'representation' | 'OperationOutcome') => ({
      handle: router.handle.bind(router), transaction: built.store.transaction.bind(built.store),
      baseUrl: config.baseUrl, principal: { kind: 'system' as const, reason: 'test' }, newId: () => `prefer-${++n}`, prefer,
    });
    const bundle = (): Bundle => txn([
      { resource: { resourceType: 'Patient', identifier: [{ system: SYS, value: 'prefer' }] }, request: { method: 'POST', url: 'Patient' } },
      { request: { method: 'GET', url: `Patient?identifier=${SYS}|prefer` } },
    ]);
    const minimal = await processBundle(bundle(), ctx('minimal'));
    const [created, search] = minimal.entry!;
    assert.equal(created!.resource, undefined);
    assert.equal(created!.response?.status, '201 Created');
    assert.match(created!.response?.location ?? '', /\/Patient\/prefer-\d+\/_history\/1$/, 'the pre-assigned id is used');
    assert.equal((search!.resource as Bundle).type, 'searchset', 'reads always return their result');
    const oo = await processBundle(bundle(), ctx('OperationOutcome'));
    assert.equal(oo.entry![0]!.resource, undefined);
    assertOutcome(oo.entry![0]!.response?.outcome);
    const full = await processBundle(bundle(), ctx());
    assert.equal(full.entry![0]!.resource?.resourceType, 'Patient');
    assert.equal(await count('Patient', `identifier=${SYS}|prefer`), 3);
  });

  it('applies Prefer: return=minimal from the HTTP request to transaction entries', async () => {
    const res = await post(txn([
      { resource: { resourceType: 'Patient', identifier: [{ system: SYS, value: 'prefer-http' }] }, request: { method: 'POST', url: 'Patient' } },
    ])).set('Prefer', 'return=minimal');
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const [entry] = (res.body as Bundle).entry!;
    assert.equal(entry!.resource, undefined);
    assert.equal(entry!.response?.status, '201 Created');
  });

  it('rejects bad envelopes with an OperationOutcome', async () => {
    const collection = await post({ resourceType: 'Bundle', type: 'collection', entry: [] });
    assert.equal(collection.status, 400);
    assertOutcome(collection.body, /batch.*transaction.*collection/);

    const notBundle = await post({ resourceType: 'Patient' });
    assert.equal(notBundle.status, 400);
    assertOutcome(notBundle.body, /Bundle/);

    const noRequest = await post(txn([
      { resource: { resourceType: 'Patient' }, request: { method: 'POST', url: 'Patient' } },
      { resource: { resourceType: 'Patient' } },
    ]));
    assert.equal(noRequest.status, 400);
    assertOutcome(noRequest.body, /Bundle\.entry\[1\].*request/);

    const badMethod = await post(txn([{ request: { method: 'TRACE', url: 'Patient' } } as unknown as BundleEntry]));
    assert.equal(badMethod.status, 400);
    assertOutcome(badMethod.body, /entry\[0\].*method/);

    const mismatch = await post(txn([{ resource: { resourceType: 'Observation', status: 'final', code: { text: 'x' } }, request: { method: 'PUT', url: 'Patient/mismatch' } }]));
    assert.equal(mismatch.status, 400);
    assertOutcome(mismatch.body, /entry\[0\].*Observation.*does not match.*Patient/);

    const noResource = await post(txn([{ request: { method: 'POST', url: 'Patient' } }]));
    assert.equal(noResource.status, 400);
    assertOutcome(noResource.body, /entry\[0\].*resource/);

    const foreign = await post(txn([{ request: { method: 'GET', url: 'http://elsewhere.example.org/fhir/Patient/1' } }]));
    assert.equal(foreign.status, 400);
    assertOutcome(foreign.body, /not on this server/);

    const nested = await post(txn([{ resource: txn([]), request: { method: 'POST', url: '/' } }], 'batch'));
    assert.equal(nested.status, 200);
    assert.equal((nested.body as Bundle).entry?.[0]?.response?.status, '400 Bad Request');
    assertOutcome((nested.body as Bundle).entry?.[0]?.response?.outcome, /nest/);

    assert.equal(await count('Patient', '_id=mismatch'), 0);
  });
});
