import assert from 'node:assert/strict';
import path from 'node:path';
import Database from 'better-sqlite3';
import { after, before, describe, it } from 'node:test';
import type { AuditEvent, Bundle } from '@medplum/fhirtypes';
import { AuditRecorder, AuditWriterThread } from '../src/audit/index.js';
import { FhirError } from '../src/fhir/index.js';
import type { Blinder, Store } from '../src/store/index.js';
import { FHIR_JSON, runCli, testServer } from './helpers.js';
import { codeFlow, newCredentials, patientToken, UNUSED_REDIRECT_URI } from './smart-helpers.js';

type Server = Awaited<ReturnType<typeof testServer>>;
const seqOf = (e: AuditEvent) => e.extension!.find((x) => x.url === 'urn:custos:audit-sequence')!.valueInteger!;

/** An AuditEvent per FHIR interaction (first slice of issue 8): writes in their own transaction, reads batched. */
describe('audit trail', () => {
  let s: Server;
  const call = async (method: string, p: string, body?: unknown, token?: string, headers: Record<string, string> = {}) => {
    const res = await fetch(`${s.base}/${p}`, { method, headers: { authorization: `Bearer ${token ?? s.token}`, ...(body ? { 'content-type': FHIR_JSON } : {}), ...headers }, body: body ? JSON.stringify(body) : undefined });
    const text = await res.text();
    return { status: res.status, text, body: text ? JSON.parse(text) : undefined };
  };
  /** The AuditEvents written so far, oldest first (read from the store: reading them through REST would audit that too). */
  const events = async (): Promise<AuditEvent[]> => {
    const ids = s.app.store.currentIds('AuditEvent');
    const all = await Promise.all(ids.map(async (id) => (await s.app.store.read('AuditEvent', id))!.resource as AuditEvent));
    return all.sort((a, b) => seqOf(a) - seqOf(b));
  };
  /** Every AuditEvent of the requests answered so far is durable (the batched ones too). */
  const flushed = () => s.app.audit!.flush();
  /** The events after `n`, once the read batch is flushed. */
  const newEvents = async (n: number): Promise<AuditEvent[]> => {
    await flushed();
    return (await events()).slice(n);
  };
  const sub = (e: AuditEvent) => e.subtype![0]!.code;
  const refs = (e: AuditEvent) => (e.entity ?? []).flatMap((x) => (x.what?.reference ? [x.what.reference] : []));

  before(async () => {
    s = await testServer({ AUDIT: 'on', AUDIT_FLUSH_MS: '50' });
    await flushed(); // the setup's own token grant is in the trail
  });
  after(async () => { await s?.close(); });

  it('a write records exactly one AuditEvent, in the same transaction as the change', async () => {
    const n = (await events()).length;
    const p = await call('POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'Quill' }], identifier: [{ system: 'urn:mrn', value: 'MRN-777' }] });
    assert.equal(p.status, 201);
    // No flush wait: it committed with the Patient.
    const after1 = (await events()).slice(n);
    assert.equal(after1.length, 1);
    const e = after1[0]!;
    assert.equal(e.type!.code, 'rest');
    assert.equal(sub(e), 'create');
    assert.equal(e.action, 'C');
    assert.equal(e.outcome, '0');
    assert.ok(refs(e).includes(`Patient/${p.body.id}/_history/1`));
    assert.ok(refs(e).includes(`Patient/${p.body.id}`));
    const client = e.agent!.find((a) => a.who?.identifier?.system === 'urn:custos:client')!;
    assert.ok(client.who!.identifier!.value);
    assert.match(client.network!.address!, /127\.0\.0\.1/);
    assert.equal(e.source!.observer!.display, s.base);
    assert.ok(!JSON.stringify(e).includes('Quill') && !JSON.stringify(e).includes('MRN-777'), 'no PHI in the AuditEvent');
  });

  it('every interaction kind, allowed or refused, records one AuditEvent with its subtype, action, outcome and patient', async () => {
    const pat = await call('POST', 'Patient', { resourceType: 'Patient', name: [{ family: 'Rook' }] });
    const pid = pat.body.id as string;
    const obs = await call('POST', 'Observation', { resourceType: 'Observation', status: 'final', code: { text: 'hr' }, subject: { reference: `Patient/${pid}` } });
    const oid = obs.body.id as string;
    const n = (await events()).length;
    const steps: Array<[string, () => Promise<unknown>, string, string, string]> = [
      ['read', () => call('GET', `Observation/${oid}`), 'read', 'R', '0'],
      ['vread', () => call('GET', `Observation/${oid}/_history/1`), 'vread', 'R', '0'],
      ['update', () => call('PUT', `Observation/${oid}`, { ...obs.body, status: 'amended' }), 'update', 'U', '0'],
      ['patch', () => call('PATCH', `Observation/${oid}`, [{ op: 'replace', path: '/status', value: 'final' }], undefined, { 'content-type': 'application/json-patch+json' }), 'patch', 'U', '0'],
      ['search', () => call('GET', `Observation?subject=Patient/${pid}`), 'search-type', 'E', '0'],
      ['history', () => call('GET', `Observation/${oid}/_history`), 'history-instance', 'R', '0'],
      ['missing', () => call('GET', 'Observation/nope'), 'read', 'R', '4'],
      ['delete', () => call('DELETE', `Observation/${oid}`), 'delete', 'D', '0'],
    ];
    for (const [, run] of steps) await run();
    const got = await newEvents(n);
    assert.equal(got.length, steps.length, got.map(sub).join(','));
    for (const [name, , subtype, action, outcome] of steps) {
      const e = got.find((x) => sub(x) === subtype && x.outcome === outcome && (name !== 'patch' || x.action === 'U') && (name !== 'update' || sub(x) === 'update'));
      assert.ok(e, `an AuditEvent for ${name}`);
      assert.equal(e!.action, action, name);
      if (outcome === '0') assert.ok(refs(e!).includes(`Patient/${pid}`), `${name} names the patient`);
    }
    // The sequence has no gaps.
    const seqs = (await events()).map(seqOf);
    assert.deepEqual(seqs, seqs.map((_, i) => i + 1));
  });

  it('a search\'s AuditEvent keeps the query with identifying values blinded', async () => {
    const n = (await events()).length;
    await call('GET', 'Patient?name=Rook&gender=female');
    const [e] = await newEvents(n);
    const q = Buffer.from(e!.entity!.find((x) => x.query)!.query!, 'base64').toString();
    assert.match(q, /^name=hmac%3A[\w-]+&gender=female$/);
    assert.ok(!q.includes('Rook'));
  });

  it('a Bundle records one AuditEvent per entry and one for itself', async () => {
    const n = (await events()).length;
    const b = await call('POST', '', {
      resourceType: 'Bundle', type: 'transaction',
      entry: [
        { fullUrl: 'urn:uuid:11111111-1111-1111-1111-111111111111', resource: { resourceType: 'Patient' }, request: { method: 'POST', url: 'Patient' } },
        { resource: { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: 'urn:uuid:11111111-1111-1111-1111-111111111111' } }, request: { method: 'POST', url: 'Observation' } },
      ],
    });
    assert.equal(b.status, 200, b.text);
    const got = await newEvents(n);
    assert.deepEqual(got.map(sub).sort(), ['create', 'create', 'transaction']);
  });

  it('break-the-glass is flagged: the grant and what is read under it carry purposeOfEvent ETREAT', async () => {
    const pat = await call('POST', 'Patient', { resourceType: 'Patient' });
    const dr = await call('POST', 'Practitioner', { resourceType: 'Practitioner' });
    const obs = await call('POST', 'Observation', { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${pat.body.id}` } });
    const creds = newCredentials('er');
    await s.app.auth.registry.addUser({ ...creds, fhirUser: `Practitioner/${dr.body.id}`, breakGlass: true });
    const { client } = s.app.auth.registry.addClient({ type: 'public', redirectUris: [UNUSED_REDIRECT_URI], scope: 'user/*.rs' });
    const token = (await codeFlow(s, { clientId: client.clientId, redirectUri: UNUSED_REDIRECT_URI, scope: 'user/*.rs', ...creds })).token.body.access_token as string;
    const n = (await events()).length;
    assert.equal((await call('GET', `Observation/${obs.body.id}`, undefined, token)).status, 404, 'no consent: nothing');
    const granted = await call('POST', `Patient/${pat.body.id}/$break-glass`, { resourceType: 'Parameters', parameter: [{ name: 'reason', valueString: 'emergency' }] }, token);
    assert.equal(granted.status, 201, granted.text);
    assert.equal((await call('GET', `Observation/${obs.body.id}`, undefined, token)).status, 200);
    const got = (await newEvents(n)).filter((e) => e.type!.code === 'rest');
    const etreat = (e: AuditEvent) => e.purposeOfEvent?.[0]?.coding?.[0]?.code === 'ETREAT';
    assert.deepEqual(got.map((e) => [sub(e), e.outcome, etreat(e)]), [['read', '4', false], ['operation', '0', true], ['read', '0', true]]);
    assert.ok(got[1]!.subtype!.some((c) => c.code === '$break-glass'));
    const user = got[2]!.agent!.find((a) => a.who?.reference)!;
    assert.equal(user.who!.reference, `Practitioner/${dr.body.id}`);
    assert.ok(refs(got[2]!).includes(`Patient/${pat.body.id}`));
    const report = await call('GET', `Patient/${pat.body.id}/$access-report`);
    const byDr = (report.body.parameter as Array<{ name: string; part?: Array<{ name: string; valueReference?: { reference: string }; valueBoolean?: boolean }> }>)
      .find((p) => p.name === 'actor' && p.part!.some((x) => x.valueReference?.reference === `Practitioner/${dr.body.id}`))!;
    assert.equal(byDr.part!.find((x) => x.name === 'breakGlass')!.valueBoolean, true, 'the report shows break-the-glass prominently');
  });

  it('$access-report summarizes, per actor, who touched a patient\'s data: for the patient themself and trusted administrators', async () => {
    const pat = await call('POST', 'Patient', { resourceType: 'Patient' });
    const pid = pat.body.id as string;
    await call('POST', 'Observation', { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${pid}` } });
    await call('GET', `Patient/${pid}`);
    await call('GET', `Observation?subject=Patient/${pid}`);
    await flushed();
    const own = await patientToken(s, { patientId: pid, scope: 'patient/*.rs' });
    const report = await call('GET', `Patient/${pid}/$access-report`, undefined, own);
    assert.equal(report.status, 200, report.text);
    const actors = (report.body.parameter as Array<{ name: string; part?: Array<{ name: string; valueString?: string; valueInteger?: number; valueCode?: string; valueBoolean?: boolean }> }>).filter((p) => p.name === 'actor');
    const ehr = actors.find((a) => a.part!.some((x) => x.name === 'client'))!;
    assert.equal(ehr.part!.find((x) => x.name === 'count')!.valueInteger, 4, 'create Patient, create Observation, read, search');
    assert.deepEqual(ehr.part!.filter((x) => x.name === 'resourceType').map((x) => x.valueCode), ['Observation', 'Patient']);
    assert.equal(ehr.part!.find((x) => x.name === 'breakGlass')!.valueBoolean, false);
    const other = await call('POST', 'Patient', { resourceType: 'Patient' });
    assert.equal((await call('GET', `Patient/${other.body.id}/$access-report`, undefined, own)).status, 404, 'another patient\'s report is not there for this token');
    assert.equal((await call('GET', `Patient/${pid}/$access-report`)).status, 200, 'a trusted administrator');
  });

  it('a patient sees their own trail and nothing about other patients: not their events, not in a shared event, not through _include, _revinclude or _total', async () => {
    const a = (await call('POST', 'Patient', { resourceType: 'Patient' })).body.id as string;
    const b = (await call('POST', 'Patient', { resourceType: 'Patient' })).body.id as string;
    const code = `shared-${Date.now()}`;
    const since = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 5));
    const obsA = (await call('POST', 'Observation', { resourceType: 'Observation', status: 'final', code: { coding: [{ system: 'urn:t', code }] }, subject: { reference: `Patient/${a}` } })).body.id as string;
    const obsB = (await call('POST', 'Observation', { resourceType: 'Observation', status: 'final', code: { coding: [{ system: 'urn:t', code }] }, subject: { reference: `Patient/${b}` } })).body.id as string;
    await call('GET', `Observation/${obsB}`);
    // One search touching both patients: one AuditEvent naming both.
    assert.equal((await call('GET', `Observation?code=urn:t|${code}`)).body.entry.length, 2);
    // And one history touching both, which names each resource.
    assert.equal((await call('GET', `Observation/_history?_since=${encodeURIComponent(since)}`)).body.total, 2);
    await flushed();
    const tokenA = await patientToken(s, { patientId: a, scope: 'patient/*.rs' });
    const mine = await call('GET', 'AuditEvent?_count=100&_total=accurate', undefined, tokenA);
    assert.equal(mine.status, 200, mine.text);
    const seen = (mine.body.entry as Array<{ resource: AuditEvent }>).map((e) => e.resource);
    assert.equal(mine.body.total, seen.length);
    assert.ok(seen.length >= 4, 'create Patient, create Observation, the shared search and history');
    const text = JSON.stringify(mine.body);
    assert.ok(!text.includes(b) && !text.includes(obsB), 'nothing names the other patient or their data');
    // A search names its query and patients (BALP), not each resource: this patient's part is them.
    const shared = seen.find((e) => sub(e) === 'search-type')!;
    assert.deepEqual(refs(shared), [`Patient/${a}`], 'the shared search shows this patient\'s part');
    assert.ok(shared.meta!.security!.some((c) => c.code === 'REDACTED'));
    assert.ok(!shared.entity!.some((e) => e.query), 'the query may name the other patient: withheld');
    const history = seen.find((e) => sub(e) === 'history-type')!;
    assert.deepEqual(refs(history).sort(), [`Observation/${obsA}`, `Patient/${a}`].sort(), 'of a history: this patient\'s resources');
    // Read of the same event by id: the same view; the other patient's own events: not there.
    const one = await call('GET', `AuditEvent/${shared.id}`, undefined, tokenA);
    assert.deepEqual(refs(one.body).sort(), refs(shared).sort());
    const all: Bundle = (await call('GET', `AuditEvent?patient=Patient/${b}&_count=100`)).body;
    const onlyB = all.entry!.map((e) => e.resource as AuditEvent).find((e) => sub(e) === 'read')!;
    assert.equal((await call('GET', `AuditEvent/${onlyB.id}`, undefined, tokenA)).status, 404);
    const probe = await call('GET', `AuditEvent?patient=Patient/${b}&_total=accurate`, undefined, tokenA);
    assert.equal(probe.status, 403, 'no probing which events also concern someone else');
    assert.ok(!probe.text.includes(b));
    assert.equal((await call('GET', `AuditEvent?entity=${b}`, undefined, tokenA)).status, 403);
    assert.ok((await call('GET', `AuditEvent?patient=${a}&_summary=count`, undefined, tokenA)).body.total >= seen.length, 'its own id, bare, is fine');
    const included = await call('GET', `AuditEvent?_id=${history.id}&_include=AuditEvent:entity`, undefined, tokenA);
    assert.ok(!JSON.stringify(included.body).includes(obsB));
    assert.ok((included.body.entry as Array<{ resource: { id: string } }>).some((e) => e.resource.id === obsA), 'its own Observation is included');
    const rev = await call('GET', `Observation?_id=${obsA}&_revinclude=AuditEvent:entity`, undefined, tokenA);
    assert.ok(!JSON.stringify(rev.body).includes(obsB) && !JSON.stringify(rev.body).includes(b));
    assert.ok((rev.body.entry as Array<{ resource: AuditEvent }>).some((e) => e.resource.resourceType === 'AuditEvent'));
    // Reading the trail concerns this patient only, though the events read concern others too.
    await flushed();
    const trailRead = (await call('GET', `AuditEvent?patient=Patient/${b}&_count=200`)).body as Bundle;
    assert.ok(!trailRead.entry!.some((e) => (e.resource as AuditEvent).agent!.some((x) => x.who?.reference === `Patient/${a}`)), 'the other patient\'s trail does not show this patient');
    // An administrator sees the whole stored event.
    const full = await call('GET', `AuditEvent/${history.id}`);
    assert.ok(refs(full.body).includes(`Observation/${obsB}`) && !full.body.meta.security);
    const fullSearch = (await call('GET', `AuditEvent/${shared.id}`)).body as AuditEvent;
    assert.ok(refs(fullSearch).includes(`Patient/${b}`) && fullSearch.entity!.some((e) => e.query));
    // Searchable by the fields the issue names.
    for (const q of ['action=E', 'type=rest', 'outcome=0', `date=ge${shared.recorded!.slice(0, 10)}`, `agent:identifier=urn:custos:client|${shared.agent![0]!.who!.identifier!.value}`]) {
      const r = await call('GET', `AuditEvent?${q}&_summary=count`, undefined, tokenA);
      assert.ok(r.body.total >= 1, q);
    }
  });

  it('AuditEvents are searchable resources (e.g. by patient), still read-only through REST', async () => {
    const pat = await call('POST', 'Patient', { resourceType: 'Patient' });
    const found: Bundle = (await call('GET', `AuditEvent?patient=Patient/${pat.body.id}`)).body;
    assert.ok((found.entry ?? []).length >= 1);
    assert.equal((await call('DELETE', `AuditEvent/${found.entry![0]!.resource!.id}`)).status, 405);
    const created = found.entry!.map((e) => e.resource as AuditEvent).find((e) => sub(e) === 'create')!;
    const address = created.agent![0]!.network!.address!;
    const count = async (q: string) => (await call('GET', `AuditEvent?patient=Patient/${pat.body.id}&${q}&_summary=count`)).body.total as number;
    assert.equal(await count('subtype=create&action=C&outcome=0'), 1);
    assert.equal(await count('subtype=read'), 0);
    // (The searches here are in the trail too, as they come: count the create only.)
    assert.equal(await count(`subtype=create&date=${created.recorded!.slice(0, 10)}`), 1);
    assert.equal(await count(`subtype=create&agent:identifier=urn:custos:client|${created.agent![0]!.who!.identifier!.value}`), 1);
    assert.equal(await count(`subtype=create&date=lt${created.recorded!.slice(0, 10)}`), 0);
    // Not indexed for AuditEvents (see getTypeSearchParameters): an unknown parameter.
    const byAddress = await call('GET', `AuditEvent?address=${encodeURIComponent(address)}`, undefined, undefined, { prefer: 'handling=strict' });
    assert.equal(byAddress.status, 400);
    assert.match(byAddress.text, /address/);
  });

  it('logins and token grants are recorded (DICOM User Authentication), with the patient user as the patient', async () => {
    const pat = await call('POST', 'Patient', { resourceType: 'Patient' });
    const n = (await events()).length;
    await patientToken(s, { patientId: pat.body.id, scope: 'patient/*.rs' });
    const got = (await newEvents(n)).filter((e) => e.type!.code === '110114' && refs(e).includes(`Patient/${pat.body.id}`));
    const kinds = got.map((e) => `${e.type!.code}/${e.subtype![0]!.code}/${e.outcome}`);
    assert.deepEqual(kinds.sort(), ['110114/110122/0', '110114/token-grant/0']);
    for (const e of got) assert.ok(refs(e).includes(`Patient/${pat.body.id}`), 'the patient sees their own logins');
  });

  it('custos audit export writes the trail as NDJSON, oldest first, from a date', async () => {
    await flushed();
    const all = await events();
    const run = await runCli(['audit', 'export', '--since', '2000-01-01'], { DATA_DIR: s.config.dataDir });
    assert.equal(run.code, 0, run.stderr);
    const lines = run.stdout.trim().split('\n').map((l) => JSON.parse(l) as AuditEvent);
    assert.ok(lines.length >= all.length, `${lines.length} >= ${all.length}`);
    assert.ok(lines.every((e) => e.resourceType === 'AuditEvent'));
    const recorded = lines.map((e) => e.recorded!);
    assert.deepEqual(recorded, [...recorded].sort());
    const none = await runCli(['audit', 'export', '--since', '2999-01-01'], { DATA_DIR: s.config.dataDir });
    assert.equal(none.code, 0);
    assert.equal(none.stdout, '');
    assert.equal((await runCli(['audit', 'export'], { DATA_DIR: s.config.dataDir })).code, 2, '--since is required');
    const withProofs = await runCli(['audit', 'export', '--since', '2000-01-01', '--proofs'], { DATA_DIR: s.config.dataDir });
    assert.equal(withProofs.code, 0, withProofs.stderr);
    const first = JSON.parse(withProofs.stdout.split('\n')[0]!) as { resource: AuditEvent; proof: { contentHash: string; recomputedHash: string; status: string; reason?: string } };
    assert.equal(first.resource.resourceType, 'AuditEvent');
    assert.equal(first.proof.recomputedHash, first.proof.contentHash, 'the stored AuditEvent still hashes to its recorded hash');
    assert.equal(first.proof.status, 'pending', 'this server runs without the ledger: not yet in an anchored batch');
  });

  it('an AuditEvent removed or edited in the database is found by the integrity check (a gap in the sequence; a changed hash; a changed row)', async () => {
    const all = await events();
    assert.ok(all.length >= 3);
    const clean = await call('GET', '$integrity-check');
    assert.equal(clean.status, 200, clean.text);
    assert.ok(!clean.text.includes('audit_sequence_gap'));
    assert.ok(!clean.text.includes('"finding"'), clean.text);
    const db = new Database(path.join(s.config.dataDir, 'custos.db'));
    try {
      // Versions and AuditEvents are counted apart (the journal is not resource_version).
      const count = (name: string) => (clean.body.parameter as Array<{ name: string; valueInteger?: number }>).find((p) => p.name === name)?.valueInteger;
      assert.equal(count('versionsChecked'), db.prepare('SELECT count(*) FROM resource_version').pluck().get());
      const journal = db.prepare('SELECT count(*) FROM audit_event').pluck().get() as number;
      assert.ok(journal >= all.length);
      // AuditEvents of the last requests (the check's own) may be written after it scanned.
      const checked = count('auditEventsChecked')!;
      assert.ok(checked >= all.length && checked <= journal, `${checked} checked, ${all.length} listed before, ${journal} now`);
      // The journal (store/sqlite/audit-journal.ts): one row per AuditEvent, keyed by its number.
      assert.equal(db.prepare('DELETE FROM audit_event WHERE seq = ?').run(seqOf(all[1]!)).changes, 1);
      db.prepare('DELETE FROM audit_key WHERE seq = ?').run(seqOf(all[1]!));
      assert.equal(db.prepare('UPDATE audit_event SET content_hash = ? WHERE seq = ?').run('ab'.repeat(32), seqOf(all[2]!)).changes, 1);
      assert.equal(db.prepare('UPDATE audit_event SET recorded = recorded - 86400000 WHERE seq = ?').run(seqOf(all[0]!)).changes, 1);
    } finally {
      db.close();
    }
    const r = await call('GET', '$integrity-check');
    const findings = (r.body.parameter as Array<{ name: string; part?: Array<{ name: string; valueCode?: string; valueString?: string }> }>).filter((p) => p.name === 'finding');
    const kinds = findings.map((f) => f.part!.find((x) => x.name === 'kind')!.valueCode);
    assert.ok(kinds.includes('audit_sequence_gap'), JSON.stringify(kinds));
    const gap = findings.find((f) => f.part!.some((x) => x.valueCode === 'audit_sequence_gap'))!;
    assert.ok(JSON.stringify(gap).includes(`number(s) ${seqOf(all[1]!)} are missing`), JSON.stringify(gap));
    const of = (kind: string) => findings.filter((f) => f.part!.some((x) => x.valueCode === kind)).map((f) => JSON.stringify(f));
    assert.ok(of('hash_mismatch').some((f) => f.includes(`AuditEvent/${seqOf(all[2]!)}/`)), JSON.stringify(findings));
    assert.ok(of('index_mismatch').some((f) => f.includes(`AuditEvent/${seqOf(all[0]!)}/`)), JSON.stringify(findings));
  });
});

describe('who sees the audit trail', () => {
  let s: Server;
  after(async () => { await s?.close(); });

  it('a practitioner whom consent lets see a patient\'s data still sees none of their AuditEvents (404 on read, not in searches, includes or _total)', async () => {
    s = await testServer({ AUDIT: 'on', AUDIT_FLUSH_MS: '20', CONSENT_BASE: 'permit' });
    const post = async (type: string, body: unknown) => {
      const r = await fetch(`${s.base}/${type}`, { method: 'POST', headers: { authorization: `Bearer ${s.token}`, 'content-type': FHIR_JSON }, body: JSON.stringify(body) });
      assert.equal(r.status, 201);
      return ((await r.json()) as { id: string }).id;
    };
    const pid = await post('Patient', { resourceType: 'Patient' });
    const doc = await post('Practitioner', { resourceType: 'Practitioner' });
    await post('Observation', { resourceType: 'Observation', status: 'final', code: { text: 'x' }, subject: { reference: `Patient/${pid}` } });
    const creds = newCredentials('dr');
    await s.app.auth.registry.addUser({ ...creds, fhirUser: `Practitioner/${doc}` });
    const { client } = s.app.auth.registry.addClient({ type: 'public', redirectUris: [UNUSED_REDIRECT_URI], scope: 'user/*.rs' });
    const token = (await codeFlow(s, { clientId: client.clientId, redirectUri: UNUSED_REDIRECT_URI, scope: 'user/*.rs', ...creds })).token.body.access_token as string;
    const get = async (p: string, t = token) => {
      const r = await fetch(`${s.base}/${p}`, { headers: { authorization: `Bearer ${t}` } });
      return { status: r.status, body: await r.json() as Bundle & { total?: number } };
    };
    await s.app.audit!.flush();
    const all = await get(`AuditEvent?patient=Patient/${pid}`, s.token);
    assert.ok((all.body.entry ?? []).length >= 2, 'the administrator sees the patient\'s trail');
    const eventId = all.body.entry![0]!.resource!.id!;

    assert.equal((await get(`Patient/${pid}`)).status, 200, 'consent lets the practitioner see the patient');
    assert.equal((await get(`Observation?subject=Patient/${pid}`)).body.entry?.length, 1);
    assert.equal((await get(`AuditEvent/${eventId}`)).status, 404);
    assert.equal((await get(`AuditEvent?patient=Patient/${pid}&_total=accurate`)).body.total, 0);
    assert.equal((await get('AuditEvent?_summary=count')).body.total, 0);
    const withRev = await get(`Patient?_id=${pid}&_revinclude=AuditEvent:patient`);
    assert.deepEqual((withRev.body.entry ?? []).map((e) => e.resource!.resourceType), ['Patient']);
    assert.equal((await get(`Patient/${pid}/AuditEvent`)).body.entry?.length ?? 0, 0, 'nor through the compartment');
  });
});

describe('audit backpressure', () => {
  it('a request waiting for a writer thread that cannot catch up is refused with 503 after the deadline, not left hanging', async () => {
    const behind = { running: true, admit: () => new Promise<void>(() => undefined) } as unknown as AuditWriterThread;
    const recorder = new AuditRecorder({
      store: {} as Store, blinder: {} as Blinder, flushMs: 500, observer: 'x', thread: behind, admitTimeoutMs: 30,
    });
    await assert.rejects(recorder.admit()!, (e: unknown) => e instanceof FhirError && e.status === 503);
    const keepingUp = { running: true, admit: () => undefined } as unknown as AuditWriterThread;
    assert.equal(new AuditRecorder({ store: {} as Store, blinder: {} as Blinder, flushMs: 500, observer: 'x', thread: keepingUp }).admit(), undefined);
  });
});
