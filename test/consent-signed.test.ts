// The patient's signature on chain is what makes a Consent grant: a practitioner's reads through
// real HTTP, with the embedded anvil, the real ConsentRegistry and real EIP-712 signatures.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { Consent, Parameters } from '@medplum/fhirtypes';
import { Wallet } from 'ethers';
import { ConsentRegistryClient } from '../src/consent/index.js';
import type { ConsentTypedData } from '../src/consent/consent-registry.js';
import { FHIR_JSON, testServer } from './helpers.js';
import { codeFlow, newCredentials, patientToken, UNUSED_REDIRECT_URI } from './smart-helpers.js';

type Server = Awaited<ReturnType<typeof testServer>>;
const pstr = (p: Parameters, name: string) => {
  const x = p.parameter?.find((y) => y.name === name);
  return x?.valueString ?? x?.valueCode ?? x?.valueReference?.reference;
};
async function sign(w: Wallet, td: ConsentTypedData): Promise<string> {
  const { EIP712Domain: _d, ...types } = td.types;
  return w.signTypedData(td.domain, types, td.message);
}

describe('a Consent grants only while the patient\'s signature of its stored version is active on chain', () => {
  let s: Server;
  let patient: string;
  let dr: string;
  let patientTok: string;
  let drTok: string;
  let obsId: string;
  let consentId: string;
  const key = new Wallet(Wallet.createRandom().privateKey);

  const call = async (token: string, method: string, p: string, body?: unknown) => {
    const res = await fetch(`${s.base}/${p}`, {
      method, headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': FHIR_JSON } : {}) }, body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    return { status: res.status, text, body: text ? JSON.parse(text) : undefined };
  };
  const drReads = async () => (await call(drTok, 'GET', `Observation/${obsId}`)).status;
  async function relay(action: 'grant' | 'revoke'): Promise<void> {
    const td = JSON.parse(pstr((await call(patientTok, 'GET', `Consent/${consentId}/$consent-typed-data?action=${action}`)).body, 'typedData')!) as ConsentTypedData;
    const r = await call(patientTok, 'POST', `Consent/${consentId}/$consent-sign`, {
      resourceType: 'Parameters',
      parameter: [{ name: 'action', valueCode: action }, { name: 'signature', valueString: await sign(key, td) }, { name: 'deadline', valueString: td.message.deadline }, { name: 'nonce', valueString: td.message.nonce }],
    });
    assert.equal(r.status, 200, r.text);
  }
  /** Edits the current Consent version's row in the database file, as an attacker with file access would. */
  function editRow(sql: string, ...args: unknown[]): void {
    const db = new Database(path.join(s.config.dataDir, 'custos.db'));
    try {
      db.prepare(`UPDATE resource_version SET ${sql} WHERE type = 'Consent' AND id = ?`).run(...args, consentId);
    } finally {
      db.close();
    }
  }
  function readRow(): { content_hash: string; body: Buffer } {
    const db = new Database(path.join(s.config.dataDir, 'custos.db'), { readonly: true });
    try {
      return db.prepare("SELECT content_hash, body FROM resource_version WHERE type = 'Consent' AND id = ?").get(consentId) as { content_hash: string; body: Buffer };
    } finally {
      db.close();
    }
  }

  before(async () => {
    s = await testServer({ LEDGER: 'embedded', CONSENT_SYNC_MS: '400', LEDGER_BATCH_MS: '60000' });
    const admin = async (type: string, body: unknown) => {
      const r = await call(s.token, 'POST', type, body);
      assert.equal(r.status, 201, r.text);
      return r.body.id as string;
    };
    patient = await admin('Patient', { resourceType: 'Patient' });
    dr = await admin('Practitioner', { resourceType: 'Practitioner' });
    obsId = await admin('Observation', { resourceType: 'Observation', status: 'final', subject: { reference: `Patient/${patient}` }, code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] } });
    const consent: Consent = {
      resourceType: 'Consent', status: 'active',
      scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
      category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }], patient: { reference: `Patient/${patient}` },
      policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] },
      provision: { type: 'permit', actor: [{ role: { coding: [{ code: 'IRCP' }] }, reference: { reference: `Practitioner/${dr}` } }] },
    };
    consentId = await admin('Consent', consent);
    patientTok = await patientToken(s, { patientId: patient, scope: 'patient/*.rs patient/Consent.rus' });
    const creds = newCredentials('dr');
    await s.app.auth.registry.addUser({ ...creds, fhirUser: `Practitioner/${dr}` });
    const { client } = s.app.auth.registry.addClient({ type: 'public', redirectUris: [UNUSED_REDIRECT_URI], scope: 'user/*.rs' });
    drTok = (await codeFlow(s, { clientId: client.clientId, redirectUri: UNUSED_REDIRECT_URI, scope: 'user/*.rs', ...creds })).token.body.access_token;
  });
  after(async () => { await s?.close(); });

  it('created by an EHR but not signed: grants nothing', async () => {
    assert.equal(await drReads(), 404);
    const why = await call(patientTok, 'GET', `Patient/${patient}/$explain-access?actor=Practitioner/${dr}&resource=Observation/${obsId}`);
    assert.equal(pstr(why.body, 'decision'), 'deny');
    assert.match(why.text, /not-on-chain/);
  });

  it('signed by the patient\'s key: grants on the next request', async () => {
    const offer = await call(patientTok, 'GET', `Patient/${patient}/$consent-key?address=${key.address}`);
    const td = JSON.parse(pstr(offer.body, 'typedData')!) as ConsentTypedData;
    const bound = await call(patientTok, 'POST', `Patient/${patient}/$consent-key`, {
      resourceType: 'Parameters',
      parameter: [{ name: 'address', valueString: key.address }, { name: 'deadline', valueString: td.message.deadline }, { name: 'signature', valueString: await sign(key, td) }],
    });
    assert.equal(bound.status, 200, bound.text);
    await relay('grant');
    assert.equal(await drReads(), 200);
    const why = await call(patientTok, 'GET', `Patient/${patient}/$explain-access?actor=Practitioner/${dr}&resource=Observation/${obsId}`);
    assert.equal(pstr(why.body, 'decision'), 'permit');
    assert.match(why.text, /"chain","valueCode":"active"/);
  });

  it('its row edited in the database (hash or body): grants nothing; restored, grants again', async () => {
    const original = readRow();
    editRow('content_hash = ?', 'f'.repeat(64));
    assert.equal(await drReads(), 404, 'a recorded hash that is not the signed one');
    editRow('content_hash = ?', original.content_hash);
    assert.equal(await drReads(), 200);
    const tampered = Buffer.from(original.body);
    tampered[tampered.length - 1] ^= 0x01;
    editRow('body = ?', tampered);
    assert.equal(await drReads(), 404, 'a body that no longer decrypts');
    editRow('body = ?', original.body);
    assert.equal(await drReads(), 200);
  });

  it('revoked through the server: stops granting on the next request', async () => {
    await relay('revoke');
    assert.equal(await drReads(), 404);
  });

  it('revoked by the patient\'s key directly on the contract: stops granting within seconds, without the server relaying anything', async () => {
    await relay('grant');
    assert.equal(await drReads(), 200);
    const keyInfo = (await call(patientTok, 'GET', `Patient/${patient}/$consent-key`)).body as Parameters;
    const status = (await call(patientTok, 'GET', `Consent/${consentId}/$consent-status`)).body as Parameters;
    const own = await ConsentRegistryClient.connect({ rpcUrl: s.app.ledger.status().rpcUrl!, address: pstr(keyInfo, 'contractAddress')!, privateKey: key.privateKey });
    try {
      await own.revokeDirect(pstr(keyInfo, 'pid')!, pstr(status, 'consentHash')!);
    } finally {
      own.close();
    }
    const deadline = Date.now() + 5000;
    let last = 200;
    while (Date.now() < deadline && last === 200) {
      last = await drReads();
      if (last === 200) await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(last, 404);
  });
});
