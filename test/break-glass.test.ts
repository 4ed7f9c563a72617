import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import express from 'express';
import supertest from 'supertest';
import type { OperationOutcome, Parameters, ParametersParameter } from '@medplum/fhirtypes';
import { BreakGlassStore, breakGlassOperations, normalizeReason, BreakGlassInputError } from '../src/consent/index.js';
import { breakGlassSealKey } from '../src/consent/break-glass.js';
import fs from 'node:fs';
import path from 'node:path';
import { FhirRouter, fhirHttpRouter, InlinePreparer } from '../src/fhir/index.js';
import { openAuthDb, type AuthDb } from '../src/smart-auth/auth-db.js';
import { loadMasterKeys } from '../src/store/index.js';
import { createLogger } from '../src/logger.js';
import { FHIR_JSON, tempDir, testServer } from './helpers.js';
import { codeFlow, newCredentials, patientToken, UNUSED_REDIRECT_URI } from './smart-helpers.js';

type Server = Awaited<ReturnType<typeof testServer>>;
const MINUTE = 60_000;

const part = (p: { parameter?: ParametersParameter[]; part?: ParametersParameter[] }, name: string) => (p.parameter ?? p.part ?? []).find((x) => x.name === name);
const parts = (p: { parameter?: ParametersParameter[]; part?: ParametersParameter[] }, name: string) => (p.parameter ?? p.part ?? []).filter((x) => x.name === name);
const reasonBody = (reason?: unknown): Parameters => ({ resourceType: 'Parameters', parameter: reason === undefined ? [] : [{ name: 'reason', valueString: reason as string }] });

/** A user row straight into user_account (for store unit tests on a bare auth DB). */
function addUserRow(db: AuthDb, accountId: string, fhirUser: string, breakGlass = true): void {
  db.prepare('INSERT INTO user_account (account_id, username, password_hash, fhir_user, break_glass, created_at) VALUES (?, ?, ?, ?, ?, ?)')
    .run(accountId, `n-${accountId}`, 'x', fhirUser, breakGlass ? 1 : 0, Date.now());
}

describe('break-the-glass: POST and GET Patient/[id]/$break-glass', () => {
  let server: Server;
  let http: express.Express;
  let store: BreakGlassStore;
  let clock = Date.parse('2031-05-04T10:00:00.000Z');
  const id: Record<string, string> = {};
  const tokens: Record<string, string> = {};
  let glassAccount: string;

  /** A practitioner user (optionally flagged) and a token for `scope` through the real code flow. */
  const practitionerToken = async (o: { breakGlass: boolean; scope: string }) => {
    const registry = server.app.auth.registry;
    const creds = newCredentials('dr');
    const user = await registry.addUser({ ...creds, fhirUser: 'Practitioner/pr-1', breakGlass: o.breakGlass });
    const { client } = registry.addClient({ type: 'public', redirectUris: [UNUSED_REDIRECT_URI], scope: o.scope });
    const flow = await codeFlow(server, { clientId: client.clientId, redirectUri: UNUSED_REDIRECT_URI, scope: o.scope, ...creds });
    assert.equal(flow.token.status, 200, JSON.stringify(flow.token.body));
    return { token: flow.token.body.access_token as string, accountId: user.accountId };
  };
  const call = (token: string | undefined, method: 'GET' | 'POST', path: string, body?: unknown) => {
    let r = method === 'GET' ? supertest(http).get(`/fhir/${path}`) : supertest(http).post(`/fhir/${path}`);
    if (token) r = r.set('Authorization', `Bearer ${token}`);
    if (body !== undefined) r = r.set('Content-Type', FHIR_JSON).send(JSON.stringify(body));
    return r;
  };
  const diagnostics = (body: unknown) => ((body as OperationOutcome).issue ?? []).map((i) => i.diagnostics).join(' ');

  before(async () => {
    server = await testServer();
    for (const name of ['A', 'B']) {
      const res = await fetch(`${server.base}/Patient`, {
        method: 'POST', headers: { authorization: `Bearer ${server.token}`, 'content-type': FHIR_JSON },
        body: JSON.stringify({ resourceType: 'Patient', name: [{ family: `Glass${name}` }] }),
      });
      assert.equal(res.status, 201);
      id[name] = ((await res.json()) as { id: string }).id;
    }
    store = new BreakGlassStore(server.app.auth.db, 60, () => clock);
    const keys = loadMasterKeys(server.config.dataDir, server.config.masterKey);
    const router = new FhirRouter({
      store: server.app.store, baseUrl: server.config.baseUrl, search: server.config.search, policy: server.app.auth.policy,
      preparer: new InlinePreparer(keys.indexKey),
      operations: breakGlassOperations(store, server.app.auth.registry, async (pid) => { const v = await server.app.store.read('Patient', pid); return !!v && !v.deleted; }),
    });
    http = express();
    http.use('/fhir', server.app.auth.authenticate(), fhirHttpRouter(router, { maxBodyBytes: server.config.maxBodyBytes, logger: createLogger('silent') }));

    const glass = await practitionerToken({ breakGlass: true, scope: 'user/*.rs' });
    tokens.glass = glass.token;
    glassAccount = glass.accountId;
    tokens.plain = (await practitionerToken({ breakGlass: false, scope: 'user/*.rs' })).token;
    tokens.glassNoRead = (await practitionerToken({ breakGlass: true, scope: 'openid fhirUser' })).token;
    tokens.glassWriteOnly = (await practitionerToken({ breakGlass: true, scope: 'user/Observation.c' })).token;
    tokens.patientA = await patientToken(server, { patientId: id.A!, scope: 'patient/*.rs' });
    tokens.patientB = await patientToken(server, { patientId: id.B!, scope: 'patient/*.rs' });
  });
  after(async () => { await server?.close(); });

  it('refuses a practitioner user without the break-glass flag (403), also for an unknown patient', async () => {
    const res = await call(tokens.plain, 'POST', `Patient/${id.A}/$break-glass`, reasonBody('cardiac arrest in ER'));
    assert.equal(res.status, 403);
    assert.equal(res.body.resourceType, 'OperationOutcome');
    assert.match(diagnostics(res.body), /not allowed to break the glass/);
    // Same answer whether the patient exists or not: nothing leaks to a caller who may not break the glass.
    const unknown = await call(tokens.plain, 'POST', 'Patient/no-such-patient/$break-glass', reasonBody('cardiac arrest in ER'));
    assert.equal(unknown.status, 403);
    assert.equal(store.forPatient(id.A!).length, 0);
  });

  it('refuses a patient user, a backend client and a flagged practitioner without a user/ read scope (403)', async () => {
    const asPatient = await call(tokens.patientA, 'POST', `Patient/${id.A}/$break-glass`, reasonBody('curious'));
    assert.equal(asPatient.status, 403);
    assert.match(diagnostics(asPatient.body), /practitioner users/);
    const asSystem = await call(server.token, 'POST', `Patient/${id.A}/$break-glass`, reasonBody('batch job'));
    assert.equal(asSystem.status, 403);
    assert.match(diagnostics(asSystem.body), /not issued to a user/);
    for (const t of [tokens.glassNoRead!, tokens.glassWriteOnly!]) {
      const res = await call(t, 'POST', `Patient/${id.A}/$break-glass`, reasonBody('unconscious patient'));
      assert.equal(res.status, 403);
      assert.match(diagnostics(res.body), /user\/ scope that allows reading/);
    }
    assert.equal((await call(undefined, 'POST', `Patient/${id.A}/$break-glass`, reasonBody('x'))).status, 401);
    assert.equal(store.forPatient(id.A!).length, 0);
  });

  it('refuses a user whose account is disabled (403)', async () => {
    const t = await practitionerToken({ breakGlass: true, scope: 'user/*.rs' });
    server.app.auth.db.prepare('UPDATE user_account SET disabled_at = ? WHERE account_id = ?').run(Date.now(), t.accountId);
    const res = await call(t.token, 'POST', `Patient/${id.A}/$break-glass`, reasonBody('unconscious patient'));
    // Either the token check or the operation refuses it; never a grant.
    assert.ok(res.status === 401 || res.status === 403, String(res.status));
    assert.equal(store.activeFor(t.accountId, clock).length, 0);
  });

  it('answers 400 for a missing, empty, blank, too long or non-string reason, and for a body that is not Parameters', async () => {
    const path = `Patient/${id.A}/$break-glass`;
    for (const body of [reasonBody(), reasonBody(''), reasonBody('   \n '), reasonBody('x'.repeat(1001)), { resourceType: 'Patient' }, undefined]) {
      const res = await call(tokens.glass, 'POST', path, body);
      assert.equal(res.status, 400, JSON.stringify(body)?.slice(0, 80));
      assert.equal(res.body.resourceType, 'OperationOutcome');
    }
    const twice = await call(tokens.glass, 'POST', path, { resourceType: 'Parameters', parameter: [{ name: 'reason', valueString: 'a' }, { name: 'reason', valueString: 'b' }] });
    assert.equal(twice.status, 400);
    const notString = await call(tokens.glass, 'POST', path, { resourceType: 'Parameters', parameter: [{ name: 'reason', valueInteger: 3 }] });
    assert.equal(notString.status, 400);
    assert.equal(store.forPatient(id.A!).length, 0, 'nothing was granted');
  });

  it('answers 404 for an unknown patient to an allowed caller, and 400 for a target that is not a Patient', async () => {
    const res = await call(tokens.glass, 'POST', 'Patient/no-such-patient/$break-glass', reasonBody('cardiac arrest in ER'));
    assert.equal(res.status, 404);
    assert.equal(res.body.resourceType, 'OperationOutcome');
    const obs = await call(tokens.glass, 'POST', 'Observation/x1/$break-glass', reasonBody('cardiac arrest in ER'));
    assert.equal(obs.status, 400);
    assert.match(diagnostics(obs.body), /Patient only/);
    // The router answers POST .../_history/... with 405; a GET on a version is refused by the operation.
    const version = await call(tokens.patientA, 'GET', `Patient/${id.A}/_history/1/$break-glass`);
    assert.equal(version.status, 400);
    assert.match(diagnostics(version.body), /not to one version/);
  });

  it('grants a flagged practitioner time-boxed access with the configured duration', async () => {
    const res = await call(tokens.glass, 'POST', `Patient/${id.A}/$break-glass`, reasonBody('  Unconscious in ER, no relatives reachable  '));
    assert.equal(res.status, 201, JSON.stringify(res.body));
    const p = res.body as Parameters;
    assert.equal(p.resourceType, 'Parameters');
    const grantId = part(p, 'grant')!.valueId!;
    assert.ok(grantId);
    assert.equal(part(p, 'patient')!.valueReference!.reference, `Patient/${id.A}`);
    assert.equal(part(p, 'practitioner')!.valueReference!.reference, 'Practitioner/pr-1');
    assert.equal(part(p, 'reason')!.valueString, 'Unconscious in ER, no relatives reachable', 'trimmed');
    assert.equal(part(p, 'granted')!.valueInstant, new Date(clock).toISOString());
    assert.equal(part(p, 'expires')!.valueInstant, new Date(clock + 60 * MINUTE).toISOString());
    assert.equal(part(p, 'minutes')!.valueInteger, 60);

    const active = store.activeFor(glassAccount, clock + 59 * MINUTE);
    assert.deepEqual(active.map((g) => [g.id, g.patientId, g.practitioner, g.userId]), [[grantId, id.A, 'Practitioner/pr-1', glassAccount]]);
    assert.equal(store.activeFor(glassAccount, clock + 60 * MINUTE).length, 0, 'expired at expires');
    assert.equal(store.activeFor(glassAccount, clock).length, 1);
  });

  it('shows the patient who broke the glass, when, why and what was read; never to another patient', async () => {
    const grant = store.activeFor(glassAccount, clock)[0]!;
    clock += 2 * MINUTE;
    store.recordAccess(grant.id, { interaction: 'read', resources: [`Patient/${id.A}`] });
    clock += MINUTE;
    store.recordAccess(grant.id, { interaction: 'search', resources: ['Observation/o1', 'Observation/o2'], query: `Observation?patient=${id.A}` });

    const res = await call(tokens.patientA, 'GET', `Patient/${id.A}/$break-glass`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const p = res.body as Parameters;
    assert.equal(part(p, 'patient')!.valueReference!.reference, `Patient/${id.A}`);
    const grants = parts(p, 'grant');
    assert.equal(grants.length, 1);
    const g = grants[0]!;
    assert.equal(part(g, 'id')!.valueId, grant.id);
    assert.equal(part(g, 'practitioner')!.valueReference!.reference, 'Practitioner/pr-1');
    assert.equal(part(g, 'reason')!.valueString, 'Unconscious in ER, no relatives reachable');
    assert.equal(part(g, 'granted')!.valueInstant, new Date(grant.grantedAt).toISOString());
    assert.equal(part(g, 'expires')!.valueInstant, new Date(grant.expiresAt).toISOString());
    assert.equal(part(g, 'active')!.valueBoolean, true);
    const accesses = parts(g, 'access');
    assert.equal(accesses.length, 2);
    // Newest first.
    assert.equal(part(accesses[0]!, 'interaction')!.valueCode, 'search');
    assert.equal(part(accesses[0]!, 'time')!.valueInstant, new Date(clock).toISOString());
    assert.deepEqual(parts(accesses[0]!, 'what').map((w) => w.valueReference?.reference ?? w.valueString), ['Observation/o1', 'Observation/o2', `Observation?patient=${id.A}`]);
    assert.equal(part(accesses[1]!, 'interaction')!.valueCode, 'read');
    assert.equal(part(accesses[1]!, 'time')!.valueInstant, new Date(clock - MINUTE).toISOString());
    assert.deepEqual(parts(accesses[1]!, 'what').map((w) => w.valueReference?.reference), [`Patient/${id.A}`]);

    // Another patient, the practitioner and someone without a token see nothing.
    const other = await call(tokens.patientB, 'GET', `Patient/${id.A}/$break-glass`);
    assert.equal(other.status, 403);
    assert.ok(!JSON.stringify(other.body).includes('Unconscious'));
    assert.equal((await call(tokens.glass, 'GET', `Patient/${id.A}/$break-glass`)).status, 403);
    assert.equal((await call(tokens.plain, 'GET', `Patient/${id.A}/$break-glass`)).status, 403);
    assert.equal((await call(undefined, 'GET', `Patient/${id.A}/$break-glass`)).status, 401);
    // Patient B sees their own (empty) record, not A's.
    const own = await call(tokens.patientB, 'GET', `Patient/${id.B}/$break-glass`);
    assert.equal(own.status, 200);
    assert.equal(parts(own.body as Parameters, 'grant').length, 0);
  });

  it('shows the record to a trusted administrator; expired grants stay in it, inactive', async () => {
    clock += 61 * MINUTE;
    const res = await call(server.token, 'GET', `Patient/${id.A}/$break-glass`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const g = parts(res.body as Parameters, 'grant');
    assert.equal(g.length, 1);
    assert.equal(part(g[0]!, 'active')!.valueBoolean, false);
    assert.equal(store.activeFor(glassAccount, clock).length, 0);
    assert.equal((await call(server.token, 'GET', 'Patient/no-such-patient/$break-glass')).status, 404);
  });

  it('a second grant appears first in the record', async () => {
    const res = await call(tokens.glass, 'POST', `Patient/${id.A}/$break-glass`, reasonBody('second emergency'));
    assert.equal(res.status, 201);
    const record = store.forPatient(id.A!);
    assert.deepEqual(record.map((r) => r.reason), ['second emergency', 'Unconscious in ER, no relatives reachable']);
    assert.equal(record[1]!.accesses.length, 2);
    assert.equal(record[0]!.accesses.length, 0);
    assert.equal(store.forPatient(id.B!).length, 0);
  });
});

describe('BreakGlassStore', () => {
  it('activeFor returns a grant until it expires, then nothing (read on every call)', () => {
    const db = openAuthDb(tempDir());
    try {
      addUserRow(db, 'u-1', 'Practitioner/p1');
      addUserRow(db, 'u-2', 'Practitioner/p2');
      let now = 1_000_000;
      const store = new BreakGlassStore(db, 15, () => now);
      const g = store.grant({ accountId: 'u-1', fhirUser: 'Practitioner/p1' }, 'pat-1', 'bleeding');
      assert.equal(g.grantedAt, 1_000_000);
      assert.equal(g.expiresAt, 1_000_000 + 15 * MINUTE);
      assert.deepEqual(store.activeFor('u-1', now), [g]);
      assert.deepEqual(store.activeFor('u-1', g.expiresAt - 1), [g]);
      assert.deepEqual(store.activeFor('u-1', g.expiresAt), []);
      assert.deepEqual(store.activeFor('u-2', now), [], 'only the user\'s own grants');
      // A second store on the same DB (another process, or the CLI) sees the same grants: no cache.
      now += MINUTE;
      const g2 = new BreakGlassStore(db, 15, () => now).grant({ accountId: 'u-1', fhirUser: 'Practitioner/p1' }, 'pat-2', 'stroke');
      assert.deepEqual(store.activeFor('u-1', now).map((x) => x.id), [g2.id, g.id]);
      // Taking the flag away, or disabling the account, ends the grants on the next call.
      db.prepare('UPDATE user_account SET break_glass = 0 WHERE account_id = ?').run('u-1');
      assert.deepEqual(store.activeFor('u-1', now), []);
      db.prepare('UPDATE user_account SET break_glass = 1, disabled_at = ? WHERE account_id = ?').run(now, 'u-1');
      assert.deepEqual(store.activeFor('u-1', now), []);
      db.prepare('UPDATE user_account SET disabled_at = NULL WHERE account_id = ?').run('u-1');
      assert.equal(store.activeFor('u-1', now).length, 2);
    } finally {
      db.close();
    }
  });

  it('validates the reason, the patient id, the user and the duration', () => {
    const db = openAuthDb(tempDir());
    try {
      const store = new BreakGlassStore(db, 60);
      const user = { accountId: 'u-1', fhirUser: 'Practitioner/p1' };
      assert.equal(normalizeReason('  why  '), 'why');
      assert.equal(normalizeReason('é'.repeat(1000)).length, 1000);
      for (const bad of [undefined, 3, '', '  ', 'x'.repeat(1001), 'bell\u0007']) {
        assert.throws(() => store.grant(user, 'pat-1', bad), BreakGlassInputError, String(bad).slice(0, 20));
      }
      assert.throws(() => store.grant(user, 'bad id!', 'why'), BreakGlassInputError);
      assert.throws(() => store.grant({ accountId: 'u-1', fhirUser: 'Patient/p1' }, 'pat-1', 'why'), BreakGlassInputError);
      assert.throws(() => new BreakGlassStore(db, 0), RangeError);
      assert.throws(() => new BreakGlassStore(db, Number.NaN), RangeError);
      // A read must not go unrecorded: recording against an unknown grant fails.
      assert.throws(() => store.recordAccess('no-such-grant', { interaction: 'read', resources: ['Patient/pat-1'] }));
    } finally {
      db.close();
    }
  });

  it('the tables survive reopening the DB, and an auth.db without them gains them', () => {
    const dir = tempDir();
    let db = openAuthDb(dir);
    addUserRow(db, 'u-1', 'Practitioner/p1');
    let now = 5_000_000;
    const g = new BreakGlassStore(db, 60, () => now).grant({ accountId: 'u-1', fhirUser: 'Practitioner/p1' }, 'pat-1', 'sepsis');
    now += 1000;
    new BreakGlassStore(db, 60, () => now).recordAccess(g.id, { interaction: 'search', query: 'Observation?patient=pat-1' });
    db.close();

    db = openAuthDb(dir);
    try {
      const store = new BreakGlassStore(db, 60, () => now);
      const record = store.forPatient('pat-1');
      assert.equal(record.length, 1);
      assert.equal(record[0]!.id, g.id);
      assert.equal(record[0]!.reason, 'sepsis');
      assert.deepEqual(record[0]!.accesses, [{ at: 5_001_000, interaction: 'search', what: { query: 'Observation?patient=pat-1' } }]);
      assert.deepEqual(store.activeFor('u-1', now).map((x) => x.id), [g.id]);
      // An auth.db from before break-the-glass (no such tables) opens and gets them.
      db.exec('DROP TABLE break_glass_access; DROP TABLE break_glass_grant;');
    } finally {
      db.close();
    }
    db = openAuthDb(dir);
    try {
      const store = new BreakGlassStore(db, 60);
      assert.deepEqual(store.forPatient('pat-1'), []);
      const indexes = db.prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name LIKE 'break_glass%' AND name NOT LIKE 'sqlite_%' ORDER BY name").pluck().all();
      assert.deepEqual(indexes, ['break_glass_access_grant', 'break_glass_grant_account', 'break_glass_grant_patient']);
    } finally {
      db.close();
    }
  });

  it('seals the reason and what was searched at rest; records written in the clear are sealed when the store opens', () => {
    const dir = tempDir();
    const key = breakGlassSealKey(Buffer.alloc(32, 7));
    let db = openAuthDb(dir);
    addUserRow(db, 'u-1', 'Practitioner/p1');
    const now = 9_000_000;
    // An earlier version wrote in the clear: a store without a key does just that.
    const old = new BreakGlassStore(db, 60, () => now).grant({ accountId: 'u-1', fhirUser: 'Practitioner/p1' }, 'pat-1', 'overdose-oldreason');
    new BreakGlassStore(db, 60, () => now).recordAccess(old.id, { interaction: 'search', query: 'Patient?family=oldfamilyname' });
    const sealed = new BreakGlassStore(db, 60, () => now, key);
    const g = sealed.grant({ accountId: 'u-1', fhirUser: 'Practitioner/p1' }, 'pat-1', 'unconscious-newreason');
    sealed.recordAccess(g.id, { interaction: 'search', query: 'Patient?family=newfamilyname' });
    const record = sealed.forPatient('pat-1');
    assert.deepEqual(record.map((r) => r.reason).sort(), ['overdose-oldreason', 'unconscious-newreason']);
    assert.deepEqual(record.flatMap((r) => r.accesses.map((a) => a.what.query)).sort(), ['Patient?family=newfamilyname', 'Patient?family=oldfamilyname']);
    db.pragma('wal_checkpoint(TRUNCATE)');
    db.close();
    db = openAuthDb(dir);
    db.close();
    for (const f of fs.readdirSync(dir).filter((n) => n.startsWith('auth.db'))) {
      const bytes = fs.readFileSync(path.join(dir, f)).toString('latin1');
      for (const secret of ['oldreason', 'newreason', 'oldfamilyname', 'newfamilyname']) assert.ok(!bytes.includes(secret), `${f} holds "${secret}" in the clear`);
    }
    // Under another key the records do not open.
    db = openAuthDb(dir);
    try {
      assert.throws(() => new BreakGlassStore(db, 60, () => now, breakGlassSealKey(Buffer.alloc(32, 8))).forPatient('pat-1'));
    } finally {
      db.close();
    }
  });
});
