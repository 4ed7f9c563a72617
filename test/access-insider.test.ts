// Issue 17: what an insider with an ordinary token (a practitioner, a patient, a partner system,
// a device) must NOT be able to do, through real HTTP. Server A has the embedded chain on
// (CONSENT_CHAIN=required: only Consents signed by the patient's key grant); server B has
// LEDGER=off (CONSENT_CHAIN=off: active Consents grant on their FHIR status alone).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { AuditEvent, Bundle, Consent, ConsentProvision, Observation, Parameters } from '@medplum/fhirtypes';
import { Wallet } from 'ethers';
import type { ConsentTypedData } from '../src/consent/consent-registry.js';
import { backendKeyPair, clientAssertion, FHIR_JSON, testServer, tokenForm } from './helpers.js';
import { codeFlow, newCredentials, patientToken, UNUSED_REDIRECT_URI } from './smart-helpers.js';

type Server = Awaited<ReturnType<typeof testServer>>;
interface Reply { status: number; text: string; body: any }

const CONF = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
const LOINC = 'http://loinc.org';
const IDS = 'urn:custos:test:insider';
const R_LABEL = { system: CONF, code: 'R' };

const pstr = (p: Parameters, name: string) => {
  const x = p.parameter?.find((y) => y.name === name);
  return x?.valueString ?? x?.valueCode ?? x?.valueReference?.reference;
};
const refsOf = (b: Bundle) => (b.entry ?? []).map((e) => `${e.resource!.resourceType}/${e.resource!.id}`);
const versionsOf = (b: Bundle, ref: string) => (b.entry ?? []).filter((e) => `${e.resource?.resourceType}/${e.resource?.id}` === ref).map((e) => e.resource!.meta!.versionId);
const actorOf = (reference: string) => ({ role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP' }] }, reference: { reference } });
const consentFor = (patient: string, provision: ConsentProvision): Consent => ({
  resourceType: 'Consent', status: 'active',
  scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
  category: [{ coding: [{ system: LOINC, code: '59284-0' }] }], patient: { reference: `Patient/${patient}` },
  policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] }, provision,
});
const obs = (patient: string, extra: Partial<Observation> = {}): Observation => ({
  resourceType: 'Observation', status: 'final', subject: { reference: `Patient/${patient}` },
  code: { coding: [{ system: LOINC, code: '8867-4' }] }, effectiveDateTime: '2024-03-01', valueQuantity: { value: 70, unit: '/min' }, ...extra,
});
const tag = (value: string) => ({ identifier: [{ system: IDS, value }] });
/** A 403/404 answer that carries no content: an OperationOutcome, without the words given. */
function refusedWithout(r: Reply, statuses: number[], secrets: string[], what: string): void {
  assert.ok(statuses.includes(r.status), `${what}: expected ${statuses.join(' or ')}, got ${r.status} ${r.text.slice(0, 300)}`);
  assert.equal(r.body?.resourceType, 'OperationOutcome', `${what}: an OperationOutcome`);
  for (const s of secrets) assert.ok(!r.text.includes(s), `${what}: the answer contains "${s}"`);
}

/** The principals and calls of one server. */
function harness(get: () => Server) {
  const call = async (token: string, method: string, p: string, body?: unknown, headers: Record<string, string> = {}): Promise<Reply> => {
    const res = await fetch(`${get().base}/${p}`, {
      method, headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': FHIR_JSON } : {}), ...headers }, body: body !== undefined ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    let parsed: unknown;
    try { parsed = text ? JSON.parse(text) : undefined; } catch { parsed = undefined; }
    return { status: res.status, text, body: parsed };
  };
  const admin = async (method: string, p: string, body?: unknown) => {
    const r = await call(get().token, method, p, body);
    assert.ok(r.status < 300, `${method} ${p}: ${r.status} ${r.text}`);
    return r.body;
  };
  const create = async (body: { resourceType: string }) => (await admin('POST', body.resourceType, body)).id as string;
  /** A search as this token: the Bundle (asserting 200). */
  const search = async (token: string, p: string): Promise<Bundle> => {
    const r = await call(token, 'GET', p);
    assert.equal(r.status, 200, `${p}: ${r.text}`);
    return r.body as Bundle;
  };
  async function userToken(practitioner: string, scope: string, creds = newCredentials('dr')): Promise<string> {
    const registry = get().app.auth.registry;
    if (!registry.getUserByUsername(creds.username)) await registry.addUser({ ...creds, fhirUser: `Practitioner/${practitioner}` });
    const { client } = registry.addClient({ type: 'public', redirectUris: [UNUSED_REDIRECT_URI], scope });
    const flow = await codeFlow(get(), { clientId: client.clientId, redirectUri: UNUSED_REDIRECT_URI, scope, ...creds });
    assert.equal(flow.token.status, 200, JSON.stringify(flow.token.body));
    return flow.token.body.access_token as string;
  }
  async function backendToken(scope: string, actor: string): Promise<string> {
    const key = await backendKeyPair();
    const { client } = get().app.auth.registry.addClient({ type: 'backend', jwks: key.jwks, scope, actor });
    const endpoint = get().app.auth.endpoints.token;
    const res = await fetch(endpoint, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams(tokenForm(await clientAssertion(key, client.clientId, endpoint), scope)) });
    assert.equal(res.status, 200, await res.clone().text());
    return ((await res.json()) as { access_token: string }).access_token;
  }
  return { call, admin, create, search, userToken, backendToken };
}

describe('issue 17: an insider cannot widen access (default server, chain on)', () => {
  let s: Server;
  const h = harness(() => s);
  const { call, admin, create, search } = h;
  const id: Record<string, string> = {};
  const tok: Record<string, string> = {};
  const drCreds = newCredentials('drx');
  const signers = new Map<string, { wallet: Wallet; token: string }>();

  async function signTyped(w: Wallet, td: ConsentTypedData): Promise<string> {
    const { EIP712Domain: _d, ...types } = td.types;
    return w.signTypedData(td.domain, types, td.message);
  }
  /** Binds a fresh key to the patient's record, signed by that key ($consent-key). */
  async function bindKey(patient: string, token: string): Promise<void> {
    const wallet = new Wallet(Wallet.createRandom().privateKey);
    const offer = await call(token, 'GET', `Patient/${patient}/$consent-key?address=${wallet.address}`);
    assert.equal(offer.status, 200, offer.text);
    const td = JSON.parse(pstr(offer.body, 'typedData')!) as ConsentTypedData;
    const bound = await call(token, 'POST', `Patient/${patient}/$consent-key`, {
      resourceType: 'Parameters',
      parameter: [{ name: 'address', valueString: wallet.address }, { name: 'deadline', valueString: td.message.deadline }, { name: 'signature', valueString: await signTyped(wallet, td) }],
    });
    assert.equal(bound.status, 200, bound.text);
    signers.set(patient, { wallet, token });
  }
  /** A Consent of this patient, recorded by the operator's integration and signed on chain by the patient's key. */
  async function signedConsent(patient: string, provision: ConsentProvision): Promise<string> {
    const consentId = await create(consentFor(patient, provision));
    const { wallet, token } = signers.get(patient)!;
    const offer = await call(token, 'GET', `Consent/${consentId}/$consent-typed-data?action=grant`);
    assert.equal(offer.status, 200, offer.text);
    const td = JSON.parse(pstr(offer.body, 'typedData')!) as ConsentTypedData;
    const r = await call(token, 'POST', `Consent/${consentId}/$consent-sign`, {
      resourceType: 'Parameters',
      parameter: [{ name: 'action', valueCode: 'grant' }, { name: 'signature', valueString: await signTyped(wallet, td) }, { name: 'deadline', valueString: td.message.deadline }, { name: 'nonce', valueString: td.message.nonce }],
    });
    assert.equal(r.status, 200, r.text);
    return consentId;
  }

  before(async () => {
    s = await testServer({ LEDGER: 'embedded', CONSENT_SYNC_MS: '400', LEDGER_BATCH_MS: '60000' });
    id.pa = await create({ resourceType: 'Patient', name: [{ family: 'Alpha' }], gender: 'female', birthDate: '1980-01-01', identifier: [{ system: 'urn:mrn', value: 'MRN-A' }] } as never);
    id.pb = await create({ resourceType: 'Patient', name: [{ family: 'Bravo' }], gender: 'male', birthDate: '1975-03-02', identifier: [{ system: 'urn:mrn', value: 'MRN-B' }] } as never);
    id.pc = await create({ resourceType: 'Patient', name: [{ family: 'Charlie' }] } as never);
    id.drx = await create({ resourceType: 'Practitioner', name: [{ family: 'Xavier' }] } as never);
    id.orgHosp = await create({ resourceType: 'Organization', name: 'Hospital' } as never);
    id.org1 = await create({ resourceType: 'Organization', name: 'Partner One' } as never);
    id.dev1 = await create({ resourceType: 'Device', patient: { reference: `Patient/${id.pa}` } } as never);

    tok.alice = await patientToken(s, { patientId: id.pa, scope: 'patient/*.cruds' });
    tok.bob = await patientToken(s, { patientId: id.pb, scope: 'patient/*.cruds' });
    tok.drx = await h.userToken(id.drx, 'user/*.cruds', drCreds);
    tok.partner = await h.backendToken('system/*.cruds', `Organization/${id.org1}`);
    tok.device = await h.backendToken('system/*.cruds', `Device/${id.dev1}`);

    await bindKey(id.pa, tok.alice);
    await bindKey(id.pb, tok.bob);
    // Alice: Dr X and her device may do anything except with restricted (R) data.
    id.consentA = await signedConsent(id.pa, { type: 'permit', actor: [actorOf(`Practitioner/${id.drx}`), actorOf(`Device/${id.dev1}`)], provision: [{ type: 'deny', securityLabel: [R_LABEL] }] });
    // Bob: the hospital (no class limits), nobody else.
    id.consentB = await signedConsent(id.pb, { type: 'permit', actor: [actorOf(`Organization/${id.orgHosp}`)] });

    id.obsA = await create(obs(id.pa, { note: [{ text: 'alice-plain' }] }));
    id.obsB = await create(obs(id.pb, { note: [{ text: 'bob-obs-secret' }] }));
    id.obsBR = await create(obs(id.pb, { meta: { security: [R_LABEL] }, note: [{ text: 'bob-restricted-secret' }] }));
    id.condA = await create({ resourceType: 'Condition', subject: { reference: `Patient/${id.pa}` }, code: { text: 'alice-condition' } } as never);
    id.condB = await create({ resourceType: 'Condition', subject: { reference: `Patient/${id.pb}` }, code: { text: 'bob-condition-secret' } } as never);

    // The consent path works at all: without this, every "not visible" below would prove nothing.
    assert.equal((await call(tok.drx, 'GET', `Observation/${id.obsA}`)).status, 200, 'Alice\'s signed Consent grants Dr X');
    assert.equal((await call(tok.drx, 'GET', `Condition/${id.condB}`)).status, 404, 'Bob does not permit Dr X');
  });
  after(async () => { await s?.close(); });

  it('2. old versions are judged on their own content: vread, instance/type history and $verify', async () => {
    // om1: v1 filed under Carol with a note, v2 moved to Alice.
    id.om1 = await create(obs(id.pc, { note: [{ text: 'carol-secret' }] }));
    const v1 = await admin('GET', `Observation/${id.om1}`);
    await admin('PUT', `Observation/${id.om1}`, { ...obs(id.pa), id: id.om1 });
    const om1 = `Observation/${id.om1}`;
    assert.ok(v1.subject.reference.endsWith(id.pc));

    assert.equal((await call(tok.drx, 'GET', om1)).status, 200, 'v2 is Alice\'s: Dr X may read it');
    refusedWithout(await call(tok.drx, 'GET', `${om1}/_history/1`), [404], ['carol-secret', id.pc!], 'Dr X vread of Carol\'s v1');
    const inst = await call(tok.drx, 'GET', `${om1}/_history`);
    assert.equal(inst.status, 200, inst.text);
    assert.deepEqual(versionsOf(inst.body, om1), ['2'], 'instance history: v2 only');
    assert.ok(!inst.text.includes('carol-secret') && !inst.text.includes(id.pc!), 'instance history: nothing of Carol');
    const typeHist = await call(tok.drx, 'GET', 'Observation/_history?_count=1000');
    assert.equal(typeHist.status, 200, typeHist.text);
    assert.ok(!versionsOf(typeHist.body, om1).includes('1'), 'type history: no v1 of om1');
    assert.ok(!typeHist.text.includes('carol-secret') && !typeHist.text.includes(`Patient/${id.pc}`), 'type history: nothing of Carol');
    refusedWithout(await call(tok.drx, 'GET', `${om1}/_history/1/$verify`), [404], ['carol-secret'], 'Dr X $verify of v1');

    // Alice's own token: Carol's v1 is not hers.
    refusedWithout(await call(tok.alice, 'GET', `${om1}/_history/1`), [404], ['carol-secret', id.pc!], 'Alice vread of Carol\'s v1');
    const aliceInst = await call(tok.alice, 'GET', `${om1}/_history`);
    assert.equal(aliceInst.status, 200, aliceInst.text);
    assert.deepEqual(versionsOf(aliceInst.body, om1), ['2'], 'Alice\'s instance history: v2 only');
    assert.ok(!aliceInst.text.includes('carol-secret'), 'Alice\'s instance history: nothing of Carol');
    // Type history of a patient token is refused today; if it is served, it holds no v1 of om1.
    const aliceType = await call(tok.alice, 'GET', 'Observation/_history?_count=1000');
    assert.ok(aliceType.status !== 200 || (!aliceType.text.includes('carol-secret') && !versionsOf(aliceType.body, om1).includes('1')), 'Alice\'s type history: no v1 of om1');
    refusedWithout(await call(tok.alice, 'GET', `${om1}/_history/1/$verify`), [404], ['carol-secret'], 'Alice $verify of Carol\'s v1');

    // omR: v1 labelled R (Alice's Consent denies R to Dr X), v2 unlabelled.
    id.omR = await create(obs(id.pa, { meta: { security: [R_LABEL] }, note: [{ text: 'restricted-v1-secret' }] }));
    await admin('PUT', `Observation/${id.omR}`, { ...obs(id.pa), id: id.omR });
    const omR = `Observation/${id.omR}`;
    assert.ok(!(await admin('GET', omR)).meta.security?.some((c: { code: string }) => c.code === 'R'), 'precondition: v2 carries no R label');
    assert.equal((await call(tok.drx, 'GET', `${omR}/_history/2`)).status, 200);
    // 404 per the issue; 403 ("withheld") would also fit the README's rule for a patient who permits Dr X something.
    refusedWithout(await call(tok.drx, 'GET', `${omR}/_history/1`), [403, 404], ['restricted-v1-secret'], 'Dr X vread of the R-labelled v1');
    const rHist = await call(tok.drx, 'GET', `${omR}/_history`);
    assert.equal(rHist.status, 200, rHist.text);
    assert.deepEqual(versionsOf(rHist.body, omR), ['2'], 'instance history of omR: v2 only');
    assert.ok(!rHist.text.includes('restricted-v1-secret'), 'instance history of omR: nothing of the R-labelled v1');
    const typeHist2 = await call(tok.drx, 'GET', 'Observation/_history?_count=1000');
    assert.ok(!versionsOf(typeHist2.body, omR).includes('1') && !typeHist2.text.includes('restricted-v1-secret'), 'type history: no R-labelled v1');
    refusedWithout(await call(tok.drx, 'GET', `${omR}/_history/1/$verify`), [403, 404], ['restricted-v1-secret'], 'Dr X $verify of the R-labelled v1');
  });

  it('4. a resource in several patients\' compartments is visible only if every one of them permits', async () => {
    // Condition: subject Bob (no permit for Dr X), asserter Alice (permits Dr X).
    id.condM = await create({ resourceType: 'Condition', subject: { reference: `Patient/${id.pb}` }, asserter: { reference: `Patient/${id.pa}` }, code: { text: 'shared-condition-secret' } } as never);
    id.obsInc = await create(obs(id.pa, { focus: [{ reference: `Condition/${id.condM}` }] }));
    const secret = 'shared-condition-secret';
    const noM = (b: Bundle, what: string) => assert.ok(!refsOf(b).includes(`Condition/${id.condM}`) && !JSON.stringify(b).includes(secret), `${what}: the shared Condition is listed`);

    assert.equal((await call(tok.drx, 'GET', `Condition/${id.condA}`)).status, 200, 'control: Alice\'s own Condition');
    // 404 per the issue; 403 would also fit the README's "withheld" rule (Alice permits Dr X something).
    refusedWithout(await call(tok.drx, 'GET', `Condition/${id.condM}`), [403, 404], [secret], 'read');
    const byId = await search(tok.drx, `Condition?_id=${id.condM}&_total=accurate`);
    assert.equal((byId.entry ?? []).length, 0, 'Condition?_id= finds it');
    assert.equal(byId.total, 0, '_total=accurate counts it');
    noM(await search(tok.drx, `Condition?asserter=Patient/${id.pa}`), 'search by asserter');
    const compartment = await search(tok.drx, `Patient/${id.pa}/Condition`);
    assert.ok(refsOf(compartment).includes(`Condition/${id.condA}`), 'control: the compartment search lists Alice\'s own Condition');
    noM(compartment, 'Patient/<alice>/Condition');
    const inc = await search(tok.drx, `Observation?_id=${id.obsInc}&_include=Observation:focus`);
    assert.ok(refsOf(inc).includes(`Observation/${id.obsInc}`), 'control: the including Observation is Alice\'s');
    noM(inc, '_include=Observation:focus');
    noM(await search(tok.drx, `Patient?_id=${id.pa}&_revinclude=Condition:asserter&_revinclude=Condition:patient`), '_revinclude=Condition:asserter');
    noM(await search(tok.drx, 'Condition/_history?_count=1000'), 'Condition/_history');
    refusedWithout(await call(tok.drx, 'GET', `Condition/${id.condM}/_history`), [403, 404], [secret], 'instance history');
  });

  it('5. a patient-confined write leaves the resource in the patient\'s own compartment only', async () => {
    const stored = async (value: string) => (await search(s.token, `Observation?identifier=${IDS}|${value}`)).entry?.length ?? 0;
    const intoBob = await call(tok.alice, 'POST', 'Observation', obs(id.pb, { performer: [{ reference: `Patient/${id.pa}` }], ...tag('p5-into-bob') }));
    refusedWithout(intoBob, [403], [], 'POST subject Bob, performer Alice');
    assert.equal(await stored('p5-into-bob'), 0, 'nothing stored');
    const naming = await call(tok.alice, 'POST', 'Observation', obs(id.pa, { performer: [{ reference: `Patient/${id.pb}` }], ...tag('p5-performer-bob') }));
    refusedWithout(naming, [403], [], 'POST subject Alice, performer Bob');
    assert.equal(await stored('p5-performer-bob'), 0, 'nothing stored');
    const cond = await call(tok.alice, 'PUT', `Observation?identifier=${IDS}|p5-conditional`, obs(id.pa, { performer: [{ reference: `Patient/${id.pb}` }], ...tag('p5-conditional') }));
    refusedWithout(cond, [403], [], 'conditional update-as-create naming Bob');
    assert.equal(await stored('p5-conditional'), 0, 'nothing stored');

    const own = await call(tok.alice, 'POST', 'Observation', obs(id.pa, tag('p5-own')));
    assert.equal(own.status, 201, own.text);
    const ownId = own.body.id as string;
    const patched = await call(tok.alice, 'PATCH', `Observation/${ownId}`, [{ op: 'add', path: '/performer', value: [{ reference: `Patient/${id.pb}` }] }], { 'content-type': 'application/json-patch+json' });
    refusedWithout(patched, [403], [], 'PATCH adding performer Bob');
    const put = await call(tok.alice, 'PUT', `Observation/${ownId}`, { ...obs(id.pa, { performer: [{ reference: `Patient/${id.pb}` }], ...tag('p5-own') }), id: ownId });
    refusedWithout(put, [403], [], 'PUT adding performer Bob');
    const now = await admin('GET', `Observation/${ownId}`);
    assert.equal(now.meta.versionId, '1', 'her Observation is unchanged');
    assert.equal(now.performer, undefined);

    const bundle = await call(tok.alice, 'POST', '', {
      resourceType: 'Bundle', type: 'transaction',
      entry: [
        { fullUrl: 'urn:uuid:8d3f1c2e-0000-4000-8000-000000000001', resource: obs(id.pa, tag('p5-tx-benign')), request: { method: 'POST', url: 'Observation' } },
        { fullUrl: 'urn:uuid:8d3f1c2e-0000-4000-8000-000000000002', resource: obs(id.pb, { performer: [{ reference: `Patient/${id.pa}` }], ...tag('p5-tx-bob') }), request: { method: 'POST', url: 'Observation' } },
      ],
    });
    assert.ok(bundle.status >= 400 && bundle.status < 500, `transaction: expected a 4xx, got ${bundle.status} ${bundle.text.slice(0, 300)}`);
    assert.equal(bundle.body?.resourceType, 'OperationOutcome');
    assert.equal(await stored('p5-tx-benign') + await stored('p5-tx-bob'), 0, 'nothing of the transaction written');
  });

  it('6. chained searches cannot probe another patient\'s details', async () => {
    // Visible to Alice: her own Observation naming Bob as focus (focus is not a compartment parameter),
    // and one with subject Bob and performer Alice (in both compartments).
    id.obsFocus = await create(obs(id.pa, { focus: [{ reference: `Patient/${id.pb}` }] }));
    id.obsLink = await create(obs(id.pb, { performer: [{ reference: `Patient/${id.pa}` }] }));
    const count = async (token: string, q: string) => (await search(token, `Observation?${q}&_total=accurate`)).entry?.length ?? 0;
    assert.equal(await count(tok.alice, `_id=${id.obsFocus}`), 1, 'control: the Observation naming Bob is Alice\'s');
    assert.ok(await count(tok.alice, 'subject:Patient.family=Alpha') >= 1, 'control: chains work on her own record');
    const probes: Array<[string, string, string]> = [
      ['birthdate', '1975-03-02', '1975-03-03'], ['family', 'Bravo', 'Bravx'], ['identifier', 'urn:mrn|MRN-B', 'urn:mrn|MRN-X'], ['gender', 'male', 'other'],
    ];
    for (const chain of ['subject', 'focus', 'performer']) {
      for (const [param, right, wrong] of probes) {
        const hit = await count(tok.alice, `${chain}:Patient.${param}=${encodeURIComponent(right)}`);
        const miss = await count(tok.alice, `${chain}:Patient.${param}=${encodeURIComponent(wrong)}`);
        assert.equal(hit, 0, `Alice: ${chain}:Patient.${param} with Bob's value finds ${hit}`);
        assert.equal(miss, 0, `Alice: ${chain}:Patient.${param} with a wrong value finds ${miss}`);
      }
    }
    assert.ok(await count(tok.drx, 'subject:Patient.family=Alpha') >= 1, 'control: Dr X chains on Alice');
    for (const chain of ['subject', 'focus', 'performer']) {
      assert.equal(await count(tok.drx, `${chain}:Patient.family=Bravo`), 0, `Dr X: ${chain}:Patient.family=Bravo`);
      assert.equal(await count(tok.drx, `${chain}:Patient.birthdate=1975-03-02`), 0, `Dr X: ${chain}:Patient.birthdate`);
    }
  });

  it('7. only the entitled re-bind a Device or change a Practitioner or Organization', async () => {
    const dev = `Device/${id.dev1}`;
    const toBob = { resourceType: 'Device', id: id.dev1, patient: { reference: `Patient/${id.pb}` } };
    const boundTo = async () => (await admin('GET', dev)).patient.reference as string;
    try {
      const before = await call(tok.device, 'POST', 'Observation', obs(id.pa));
      assert.equal(before.status, 201, `control: the device writes for Alice: ${before.text}`);
      refusedWithout(await call(tok.alice, 'PUT', dev, toBob), [403], [], 'Alice re-binds the Device');
      assert.equal(await boundTo(), `Patient/${id.pa}`);
      refusedWithout(await call(tok.drx, 'PUT', dev, toBob), [403], [], 'Dr X re-binds the Device');
      assert.equal(await boundTo(), `Patient/${id.pa}`);
      refusedWithout(await call(tok.partner, 'PUT', dev, toBob), [403], [], 'the partner re-binds the Device');
      assert.equal(await boundTo(), `Patient/${id.pa}`);

      refusedWithout(await call(tok.alice, 'PUT', `Practitioner/${id.drx}`, { resourceType: 'Practitioner', id: id.drx, name: [{ family: 'Renamed' }] }), [403], [], 'Alice renames Dr X');
      refusedWithout(await call(tok.alice, 'PUT', `Organization/${id.org1}`, { resourceType: 'Organization', id: id.org1, name: 'Renamed' }), [403], [], 'Alice renames Organization/org1');
      assert.equal((await admin('GET', `Practitioner/${id.drx}`)).name[0].family, 'Xavier');
      assert.equal((await admin('GET', `Organization/${id.org1}`)).name, 'Partner One');

      const written = await call(tok.device, 'POST', 'Observation', obs(id.pa));
      assert.equal(written.status, 201, `the device still writes for Alice: ${written.text}`);
      refusedWithout(await call(tok.device, 'PUT', dev, toBob), [403], [], 'the device re-binds itself');
      assert.equal(await boundTo(), `Patient/${id.pa}`);
    } finally {
      await admin('PUT', dev, { resourceType: 'Device', id: id.dev1, patient: { reference: `Patient/${id.pa}` } });
    }
  });

  it('8. $explain-access answers only about the asking patient\'s resources, and lists only roles the caller may read', async () => {
    const explain = (resource: string) => call(tok.alice, 'GET', `Patient/${id.pa}/$explain-access?actor=Practitioner/${id.drx}&resource=${resource}`);
    const own = await explain(`Observation/${id.obsA}`);
    assert.equal(own.status, 200, own.text);
    assert.ok(['permit', 'deny'].includes(pstr(own.body, 'decision')!), 'a decision on her own resource');
    const foreign = await explain(`Observation/${id.obsB}`);
    const missing = await explain('Observation/does-not-exist');
    refusedWithout(foreign, [404], ['bob-obs-secret'], 'explain of Bob\'s Observation');
    assert.equal(foreign.status, missing.status, 'Bob\'s Observation answers like a missing one');
    assert.equal(foreign.text.replaceAll(id.obsB!, 'X'), missing.text.replaceAll('does-not-exist', 'X'));

    id.ctA = await create({ resourceType: 'CareTeam', status: 'active', subject: { reference: `Patient/${id.pa}` }, participant: [{ member: { reference: `Practitioner/${id.drx}` } }] } as never);
    id.ctB = await create({ resourceType: 'CareTeam', status: 'active', subject: { reference: `Patient/${id.pb}` }, participant: [{ member: { reference: `Practitioner/${id.drx}` } }] } as never);
    const roles = await explain('Observation');
    assert.equal(roles.status, 200, roles.text);
    const actsAs = (roles.body as Parameters).parameter!.filter((p) => p.name === 'actsAs').map((p) => p.valueString);
    assert.ok(actsAs.includes(`CareTeam/${id.ctA}`), `control: Alice's own CareTeam is listed (${actsAs.join(', ')})`);
    assert.ok(!actsAs.includes(`CareTeam/${id.ctB}`) && !roles.text.includes(id.ctB!), 'Bob\'s CareTeam naming Dr X is listed to Alice');
  });

  it('11. AuditEvent search by entity cannot test another patient\'s resource ids', async () => {
    const since = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 5));
    const a11 = await create(obs(id.pa));
    const b11 = await create(obs(id.pb));
    // One history read by the operator's integration names both Observations in one AuditEvent; a batch reads both too.
    const hist = await search(s.token, `Observation/_history?_since=${encodeURIComponent(since)}`);
    assert.ok(refsOf(hist).includes(`Observation/${a11}`) && refsOf(hist).includes(`Observation/${b11}`), 'the history names both');
    await admin('POST', '', { resourceType: 'Bundle', type: 'batch', entry: [{ request: { method: 'GET', url: `Observation/${a11}` } }, { request: { method: 'GET', url: `Observation/${b11}` } }] });
    await s.app.audit!.flush();

    const mine = await search(tok.alice, `AuditEvent?entity=Observation/${a11}`);
    assert.ok((mine.entry ?? []).length >= 1, 'control: Alice finds the events about her own Observation');
    const foreign = await call(tok.alice, 'GET', `AuditEvent?entity=Observation/${b11}&_total=accurate`);
    const missing = await call(tok.alice, 'GET', 'AuditEvent?entity=Observation/does-not-exist&_total=accurate');
    assert.equal(foreign.status, 200, foreign.text);
    assert.equal(foreign.status, missing.status);
    assert.equal((foreign.body as Bundle).entry?.length ?? 0, 0, 'Bob\'s Observation id matches AuditEvents for Alice');
    assert.equal((foreign.body as Bundle).total, (missing.body as Bundle).total);
  });

  it('18. a read refused for scope names what was asked for in its AuditEvent', async () => {
    const narrow = await h.userToken(id.drx, 'user/Patient.rs', drCreds);
    const refused = await call(narrow, 'GET', `Observation/${id.obsA}`);
    refusedWithout(refused, [403], ['alice-plain'], 'a read without Observation scope');
    await s.app.audit!.flush();
    const trail = await search(s.token, `AuditEvent?agent=Practitioner/${id.drx}&outcome=4&_count=1000`);
    const refusals = (trail.entry ?? []).map((e) => e.resource as AuditEvent).filter((e) => e.subtype?.some((c) => c.code === 'read'));
    assert.ok(refusals.length >= 1, 'the refusal is in the trail');
    const named = refusals.filter((e) => (e.entity ?? []).some((x) => x.what?.reference === `Observation/${id.obsA}` || x.what?.reference?.startsWith(`Observation/${id.obsA}/`)));
    assert.ok(named.length >= 1, `the refusal names Observation/${id.obsA}: ${JSON.stringify(refusals.map((e) => e.entity))}`);
  });

  // Last: on the current code it leaves Dr X a member of the hospital; the finally block undoes that.
  it('1. nobody but the operator\'s integrations makes a practitioner a member of an Organization or CareTeam', async () => {
    const condB = `Condition/${id.condB}`;
    const role = { resourceType: 'PractitionerRole', active: true, practitioner: { reference: `Practitioner/${id.drx}` }, organization: { reference: `Organization/${id.orgHosp}` } };
    const rolesAtHosp = async () => (await search(s.token, `PractitionerRole?practitioner=Practitioner/${id.drx}&organization=Organization/${id.orgHosp}`)).entry?.length ?? 0;
    const noBobForDrX = async (what: string) => refusedWithout(await call(tok.drx, 'GET', condB), [404], ['bob-condition-secret'], `Bob's Condition after ${what}`);
    try {
      refusedWithout(await call(tok.drx, 'POST', 'PractitionerRole', role), [403], [], 'Dr X makes himself a hospital member');
      await noBobForDrX('Dr X\'s role');
      refusedWithout(await call(tok.alice, 'POST', 'PractitionerRole', role), [403], [], 'a patient token creates a role');
      refusedWithout(await call(tok.partner, 'POST', 'PractitionerRole', role), [403], [], 'the partner client creates a role');
      assert.equal(await rolesAtHosp(), 0, 'no role stored');
      await noBobForDrX('the refused roles');

      const careTeam = { resourceType: 'CareTeam', status: 'active', participant: [{ member: { reference: `Practitioner/${id.drx}` } }] };
      refusedWithout(await call(tok.drx, 'POST', 'CareTeam', careTeam), [403], [], 'Dr X makes a CareTeam naming himself');
      refusedWithout(await call(tok.drx, 'POST', 'CareTeam', { ...careTeam, subject: { reference: `Patient/${id.pa}` } }), [403], [], 'Dr X makes a CareTeam of Alice naming himself');
      assert.equal((await search(s.token, `CareTeam?participant=Practitioner/${id.drx}`)).entry?.filter((e) => ![id.ctA, id.ctB].includes(e.resource!.id!)).length ?? 0, 0, 'no CareTeam stored');

      id.roleOther = await create({ resourceType: 'PractitionerRole', active: true, practitioner: { reference: `Practitioner/${id.drx}` }, organization: { reference: `Organization/${id.org1}` } } as never);
      refusedWithout(await call(tok.drx, 'PUT', `PractitionerRole/${id.roleOther}`, { ...role, id: id.roleOther }), [403], [], 'Dr X moves his role to the hospital');
      assert.equal((await admin('GET', `PractitionerRole/${id.roleOther}`)).organization.reference, `Organization/${id.org1}`);
      refusedWithout(await call(tok.drx, 'PATCH', `PractitionerRole/${id.roleOther}`, [{ op: 'replace', path: '/organization/reference', value: `Organization/${id.orgHosp}` }], { 'content-type': 'application/json-patch+json' }), [403], [], 'Dr X patches his role');
      assert.equal(await rolesAtHosp(), 0);

      const tx = await call(tok.drx, 'POST', '', {
        resourceType: 'Bundle', type: 'transaction',
        entry: [
          { fullUrl: 'urn:uuid:8d3f1c2e-0000-4000-8000-000000000011', resource: obs(id.pa, tag('p1-tx-benign')), request: { method: 'POST', url: 'Observation' } },
          { fullUrl: 'urn:uuid:8d3f1c2e-0000-4000-8000-000000000012', resource: role, request: { method: 'POST', url: 'PractitionerRole' } },
        ],
      });
      assert.ok(tx.status >= 400 && tx.status < 500, `transaction with a role: expected a 4xx, got ${tx.status} ${tx.text.slice(0, 300)}`);
      assert.equal(await rolesAtHosp(), 0, 'no role from the transaction');
      assert.equal((await search(s.token, `Observation?identifier=${IDS}|p1-tx-benign`)).entry?.length ?? 0, 0, 'nothing of the transaction written');
      await noBobForDrX('the refused transaction');

      // The mechanism itself works for an entitled writer.
      const entitled = await call(s.token, 'POST', 'PractitionerRole', role);
      assert.equal(entitled.status, 201, entitled.text);
      const granted = await call(tok.drx, 'GET', condB);
      assert.equal(granted.status, 200, `the operator's role makes Dr X the hospital for Bob's Consent: ${granted.text}`);
    } finally {
      const roles = await search(s.token, `PractitionerRole?practitioner=Practitioner/${id.drx}&_count=1000`);
      const teams = await search(s.token, `CareTeam?participant=Practitioner/${id.drx}&_count=1000`);
      for (const ref of [...refsOf(roles), ...refsOf(teams)]) await admin('DELETE', ref);
    }
    await noBobForDrX('the roles were removed');
  });
});

describe('issue 17: only the patient (or the operator\'s integration) changes the patient\'s Consent (CONSENT_CHAIN=off)', () => {
  let s: Server;
  const h = harness(() => s);
  const { call, admin, create, search } = h;
  const id: Record<string, string> = {};
  const tok: Record<string, string> = {};

  before(async () => {
    s = await testServer({});
    id.pa = await create({ resourceType: 'Patient', name: [{ family: 'Alpha' }] } as never);
    id.drx = await create({ resourceType: 'Practitioner', name: [{ family: 'Xavier' }] } as never);
    id.org1 = await create({ resourceType: 'Organization', name: 'Partner One' } as never);
    id.obsA = await create(obs(id.pa));
    id.obsR = await create(obs(id.pa, { meta: { security: [R_LABEL] }, note: [{ text: 'r-labelled-secret' }] }));
    // Dr X and the partner may see everything of Alice's except restricted (R) data.
    id.consent = await create(consentFor(id.pa, { type: 'permit', actor: [actorOf(`Practitioner/${id.drx}`), actorOf(`Organization/${id.org1}`)], provision: [{ type: 'deny', securityLabel: [R_LABEL] }] }));
    tok.alice = await patientToken(s, { patientId: id.pa, scope: 'patient/*.cruds' });
    tok.drx = await h.userToken(id.drx, 'user/*.cruds');
    tok.partner = await h.backendToken('system/*.cruds', `Organization/${id.org1}`);
  });
  after(async () => { await s?.close(); });

  it('3. a permitted practitioner or partner cannot rewrite, add or delete the patient\'s Consent; the patient can', async () => {
    const ref = `Consent/${id.consent}`;
    const original = await admin('GET', ref) as Consent;
    const widened: Consent = { ...original, provision: { type: 'permit', actor: original.provision!.actor } };
    const ownNew = (actor: string) => consentFor(id.pa!, { type: 'permit', actor: [actorOf(actor)] });
    const unchanged = async (what: string) => {
      const now = await admin('GET', ref) as Consent;
      assert.equal(now.meta!.versionId, original.meta!.versionId, `${what}: the Consent changed`);
      assert.equal(now.provision!.provision?.length, 1, `${what}: the nested deny is gone`);
    };
    const consents = async () => (await search(s.token, `Consent?patient=Patient/${id.pa}`)).entry?.length ?? 0;
    const rStaysHidden = async (token: string, what: string) => refusedWithout(await call(token, 'GET', `Observation/${id.obsR}`), [403, 404], ['r-labelled-secret'], `the R-labelled Observation after ${what}`);

    assert.equal((await call(tok.drx, 'GET', `Observation/${id.obsA}`)).status, 200, 'control: Dr X is permitted');
    assert.equal((await call(tok.partner, 'GET', `Observation/${id.obsA}`)).status, 200, 'control: the partner is permitted');
    await rStaysHidden(tok.drx, 'nothing');

    refusedWithout(await call(tok.drx, 'PUT', ref, widened), [403], [], 'Dr X drops the nested deny (PUT)');
    await unchanged('Dr X PUT');
    await rStaysHidden(tok.drx, 'Dr X\'s PUT');
    refusedWithout(await call(tok.drx, 'PATCH', ref, [{ op: 'remove', path: '/provision/provision' }], { 'content-type': 'application/json-patch+json' }), [403], [], 'Dr X drops the nested deny (PATCH)');
    await unchanged('Dr X PATCH');
    refusedWithout(await call(tok.drx, 'POST', 'Consent', ownNew(`Practitioner/${id.drx}`)), [403], [], 'Dr X writes himself a new Consent');
    refusedWithout(await call(tok.drx, 'DELETE', ref), [403], [], 'Dr X deletes the Consent');
    await unchanged('Dr X DELETE');
    assert.equal(await consents(), 1, 'no Consent added or removed by Dr X');
    await rStaysHidden(tok.drx, 'Dr X\'s attempts');

    refusedWithout(await call(tok.partner, 'PUT', ref, widened), [403], [], 'the partner drops the nested deny');
    refusedWithout(await call(tok.partner, 'POST', 'Consent', ownNew(`Organization/${id.org1}`)), [403], [], 'the partner writes itself a Consent');
    refusedWithout(await call(tok.partner, 'DELETE', ref), [403], [], 'the partner deletes the Consent');
    await unchanged('the partner\'s writes');
    assert.equal(await consents(), 1);
    await rStaysHidden(tok.partner, 'the partner\'s attempts');

    const own = await call(tok.alice, 'PUT', ref, { ...original, dateTime: '2025-01-01' });
    assert.equal(own.status, 200, `Alice updates her own Consent: ${own.text}`);
  });
});
