// Patient-signed consent on the ConsentRegistry end to end: a real server with the embedded anvil,
// real patient tokens from the OAuth flow, real EIP-712 signatures (ethers), real HTTP, the CLI
// as a separate process.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { Consent, Parameters } from '@medplum/fhirtypes';
import { JsonRpcProvider, Network, Wallet, hexlify, randomBytes } from 'ethers';
import { loadConfig } from '../src/config.js';
import { ChainConsentView, ConsentChainUnavailableError, ConsentRegistryClient, deploymentBlock } from '../src/consent/index.js';
import { fund } from '../src/ledger/anvil.js';
import type { ConsentTypedData } from '../src/consent/consent-registry.js';
import { FHIR_JSON, runCli, tempDir, testApp, testServer, type CliRun } from './helpers.js';
import { patientToken } from './smart-helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'build-contracts.mjs')], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });

type Server = Awaited<ReturnType<typeof testServer>>;
interface Res { status: number; body: any }

const param = (p: Parameters, name: string) => p.parameter?.find((x) => x.name === name);
const pstr = (p: Parameters, name: string) => {
  const x = param(p, name);
  return x?.valueString ?? x?.valueCode ?? (x?.valueInteger !== undefined ? String(x.valueInteger) : undefined) ?? x?.valueReference?.reference;
};
const diag = (r: Res) => JSON.stringify(r.body);
const newWallet = () => new Wallet(Wallet.createRandom().privateKey);

async function signTd(w: Wallet, td: ConsentTypedData): Promise<string> {
  const { EIP712Domain: _d, ...types } = td.types;
  return w.signTypedData(td.domain, types, td.message);
}

function consent(patientId: string | undefined, status: Consent['status'] = 'active', note = 'permit'): Consent {
  return {
    resourceType: 'Consent',
    status,
    scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
    ...(patientId ? { patient: { reference: `Patient/${patientId}` } } : {}),
    policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] },
    provision: { type: note === 'deny' ? 'deny' : 'permit', actor: [{ role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'PRCP' }] }, reference: { reference: 'Practitioner/dr1' } }] },
  };
}

describe('consent on chain (embedded anvil, real contract, real HTTP)', () => {
  let s: Server;
  let provider: JsonRpcProvider;
  let rpcUrl: string;
  let dir: string;
  let alice: string; // Patient/alice's token (patient/Consent.rus)
  let bob: string; // Patient/bob's token
  const aliceKey = newWallet();

  async function call(method: 'GET' | 'POST' | 'PUT', p: string, token: string, body?: unknown): Promise<Res> {
    const res = await fetch(`${s.base}/${p}`, {
      method,
      headers: { authorization: `Bearer ${token}`, accept: FHIR_JSON, ...(body ? { 'content-type': FHIR_JSON } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  }
  async function createConsent(c: Consent): Promise<string> {
    const r = await call('POST', 'Consent', s.token, c);
    assert.equal(r.status, 201, diag(r));
    return r.body.id as string;
  }
  async function typedData(id: string, action: 'grant' | 'revoke', token = alice): Promise<{ p: Parameters; td: ConsentTypedData }> {
    const r = await call('GET', `Consent/${id}/$consent-typed-data?action=${action}`, token);
    assert.equal(r.status, 200, diag(r));
    return { p: r.body, td: JSON.parse(pstr(r.body, 'typedData')!) as ConsentTypedData };
  }
  function signBody(action: string, td: ConsentTypedData, signature: string, extra: Record<string, string> = {}) {
    return {
      resourceType: 'Parameters',
      parameter: [
        { name: 'action', valueCode: action }, { name: 'signature', valueString: signature },
        { name: 'deadline', valueString: td.message.deadline }, { name: 'nonce', valueString: td.message.nonce },
        ...Object.entries(extra).map(([name, valueString]) => ({ name, valueString })),
      ],
    };
  }
  async function relay(id: string, action: 'grant' | 'revoke', w: Wallet = aliceKey): Promise<Parameters> {
    const { td } = await typedData(id, action);
    const r = await call('POST', `Consent/${id}/$consent-sign`, alice, signBody(action, td, await signTd(w, td)));
    assert.equal(r.status, 200, diag(r));
    return r.body;
  }
  async function status(id: string, token = alice): Promise<Parameters> {
    const r = await call('GET', `Consent/${id}/$consent-status`, token);
    assert.equal(r.status, 200, diag(r));
    return r.body;
  }
  async function hashOf(id: string): Promise<string> {
    return pstr(await status(id, s.token), 'consentHash')!;
  }
  function cli(args: string[]): Promise<CliRun> {
    return runCli(['consent', ...args]);
  }

  before(async () => {
    dir = tempDir('custos-consent-chain-');
    s = await testServer({ LEDGER: 'embedded', CONSENT_SYNC_MS: '400', LEDGER_BATCH_MS: '60000', WRITE_WORKERS: '0', READ_WORKERS: '0' });
    rpcUrl = s.app.ledger.status().rpcUrl!;
    provider = new JsonRpcProvider(rpcUrl, Network.from(31337), { staticNetwork: true, cacheTimeout: -1 });
    [alice, bob] = await Promise.all([
      patientToken(s, { patientId: 'alice', scope: 'patient/Consent.rus' }),
      patientToken(s, { patientId: 'bob', scope: 'patient/Consent.rus' }),
    ]);
  });
  after(async () => {
    provider?.destroy();
    await s?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('deploys the ConsentRegistry with the embedded node and remembers it', async () => {
    assert.equal(s.app.consentChain.mode, 'required');
    const remembered = JSON.parse(fs.readFileSync(path.join(s.config.dataDir, 'chain', 'consent-contract.json'), 'utf8'));
    assert.match(remembered.address, /^0x[0-9a-fA-F]{40}$/);
    assert.equal(remembered.recoveryDelaySeconds, 7 * 86400);
    assert.notEqual(await provider.getCode(remembered.address), '0x');
  });

  it('binds the patient\'s key via $consent-key (signed by the key itself), funds it; another patient gets 403', async () => {
    const info = await call('GET', `Patient/alice/$consent-key?address=${aliceKey.address}`, alice);
    assert.equal(info.status, 200, diag(info));
    assert.equal(param(info.body, 'key'), undefined);
    assert.match(pstr(info.body, 'pid')!, /^0x[0-9a-f]{64}$/);
    const td = JSON.parse(pstr(info.body, 'typedData')!) as ConsentTypedData;
    assert.equal(td.primaryType, 'BindKey');
    assert.equal(td.message.key, aliceKey.address);

    assert.equal((await call('GET', `Patient/alice/$consent-key?address=${aliceKey.address}`, bob)).status, 403);
    const body = { resourceType: 'Parameters', parameter: [{ name: 'address', valueString: aliceKey.address }, { name: 'deadline', valueString: td.message.deadline }, { name: 'signature', valueString: await signTd(aliceKey, td) }] };
    assert.equal((await call('POST', 'Patient/alice/$consent-key', bob, body)).status, 403);
    // A first binding signed by another key is refused before anything is sent.
    const other = newWallet();
    const forged = { ...body, parameter: [body.parameter[0]!, body.parameter[1]!, { name: 'signature', valueString: await signTd(other, td) }] };
    const refused = await call('POST', 'Patient/alice/$consent-key', alice, forged);
    assert.equal(refused.status, 400, diag(refused));
    assert.match(refused.body.issue[0].diagnostics, /first key must sign its own binding/);

    const bound = await call('POST', 'Patient/alice/$consent-key', alice, body);
    assert.equal(bound.status, 200, diag(bound));
    assert.equal(pstr(bound.body, 'key'), aliceKey.address);
    assert.match(pstr(bound.body, 'txHash')!, /^0x[0-9a-f]{64}$/);
    assert.ok((await provider.getBalance(aliceKey.address)) > 0n, 'the bound key has gas on the embedded node');
    const again = await call('GET', 'Patient/alice/$consent-key', alice);
    assert.equal(pstr(again.body, 'key'), aliceKey.address);
  });

  it('a token of the patient without a Consent scope, and a system token without the patient user, are refused', async () => {
    const narrow = await patientToken(s, { patientId: 'alice', scope: 'patient/Observation.rs' });
    const r = await call('GET', `Patient/alice/$consent-key?address=${aliceKey.address}`, narrow);
    assert.equal(r.status, 403, diag(r));
    assert.match(r.body.issue[0].diagnostics, /Consent/);
    assert.equal((await call('POST', 'Patient/alice/$consent-key', s.token, { resourceType: 'Parameters', parameter: [] })).status, 403);
  });

  it('grant: typed data for the current version, signed by the patient\'s key, relayed; status active; the view sees it', async () => {
    const id = await createConsent(consent('alice'));
    const pending = await status(id);
    assert.equal(pstr(pending, 'status'), 'pending-signature');
    const hash = pstr(pending, 'consentHash')!;
    assert.match(hash, /^0x[0-9a-f]{64}$/);
    assert.equal(s.app.consentChain.isActive('alice', hash.slice(2)), false);

    const { p, td } = await typedData(id, 'grant');
    assert.equal(td.primaryType, 'Grant');
    assert.equal(td.message.consentHash, hash);
    assert.equal(pstr(p, 'consentHash'), hash);
    assert.equal(td.message.pid, pstr(p, 'pid'));
    assert.equal(td.domain.verifyingContract, pstr(p, 'contractAddress'));
    assert.ok(Number(td.message.deadline) > Date.now() / 1000 + 3000);
    // Another patient learns nothing about it, not even that it exists: the same 404 as an unknown Consent.
    assert.equal((await call('GET', `Consent/${id}/$consent-typed-data?action=grant`, bob)).status, 404);

    const r = await call('POST', `Consent/${id}/$consent-sign`, alice, signBody('grant', td, await signTd(aliceKey, td), { consentHash: hash }));
    assert.equal(r.status, 200, diag(r));
    assert.equal(pstr(r.body, 'status'), 'active');
    assert.match(pstr(r.body, 'txHash')!, /^0x[0-9a-f]{64}$/);
    assert.equal(s.app.consentChain.isActive('alice', hash.slice(2)), true);
    const st = await status(id);
    assert.equal(pstr(st, 'status'), 'active');
    assert.equal(pstr(st, 'txHash'), pstr(r.body, 'txHash'));
    assert.equal(pstr(st, 'key'), aliceKey.address);
    // A trusted administrator may read the status; the other patient may not.
    assert.equal(pstr(await status(id, s.token), 'status'), 'active');
    assert.equal((await call('GET', `Consent/${id}/$consent-status`, bob)).status, 404);

    // Revoke through the server.
    const rv = await relay(id, 'revoke');
    assert.equal(pstr(rv, 'status'), 'revoked');
    assert.equal(s.app.consentChain.isActive('alice', hash.slice(2)), false);
    const after = await status(id);
    assert.equal(pstr(after, 'status'), 'revoked');
    assert.equal(pstr(after, 'txHash'), pstr(rv, 'txHash'));
  });

  it('refuses forged, foreign, replayed, expired and mismatched signatures with a 4xx before relaying', async () => {
    const id = await createConsent(consent('alice'));
    const hash = await hashOf(id);
    const { td } = await typedData(id, 'grant');
    const nonceBefore = td.message.nonce;
    const post = (body: unknown) => call('POST', `Consent/${id}/$consent-sign`, alice, body);

    const forged = await post(signBody('grant', td, `${hexlify(randomBytes(64))}1b`));
    assert.ok(forged.status >= 400 && forged.status < 500, diag(forged));
    const garbage = await post(signBody('grant', td, '0x1234'));
    assert.equal(garbage.status, 400, diag(garbage));
    const foreign = await post(signBody('grant', td, await signTd(newWallet(), td)));
    assert.equal(foreign.status, 400, diag(foreign));
    assert.match(foreign.body.issue[0].diagnostics, /not by the key bound/);
    // A Revoke signature (same fields, other type) is no Grant.
    const asRevoke = { ...td, primaryType: 'Revoke' as const, types: { EIP712Domain: td.types.EIP712Domain!, Revoke: td.types.Grant! } };
    const wrongKind = await post(signBody('grant', td, await signTd(aliceKey, asRevoke)));
    assert.equal(wrongKind.status, 400, diag(wrongKind));
    // Expired: the patient signed a deadline in the past.
    const old = { ...td, message: { ...td.message, deadline: String(Math.floor(Date.now() / 1000) - 60) } };
    const expired = await post(signBody('grant', old, await signTd(aliceKey, old)));
    assert.equal(expired.status, 400, diag(expired));
    assert.match(expired.body.issue[0].diagnostics, /deadline/);
    // A signed hash that is not this Consent's.
    const mismatched = await post(signBody('grant', td, await signTd(aliceKey, td), { consentHash: hexlify(randomBytes(32)) }));
    assert.equal(mismatched.status, 409, diag(mismatched));
    // Another patient relaying alice's valid signature.
    assert.equal((await call('POST', `Consent/${id}/$consent-sign`, bob, signBody('grant', td, await signTd(aliceKey, td)))).status, 404);
    // Nothing was relayed: the nonce did not move, the hash is not active.
    assert.equal((await typedData(id, 'grant')).td.message.nonce, nonceBefore);
    assert.equal(s.app.consentChain.isActive('alice', hash.slice(2)), false);

    // Replay: the grant signature is used, the consent revoked, then the same grant is sent again.
    const grantSig = await signTd(aliceKey, td);
    assert.equal((await post(signBody('grant', td, grantSig))).status, 200);
    await relay(id, 'revoke');
    const replayed = await post(signBody('grant', td, grantSig));
    assert.equal(replayed.status, 409, diag(replayed));
    assert.match(replayed.body.issue[0].diagnostics, /nonce/);
    assert.equal(s.app.consentChain.isActive('alice', hash.slice(2)), false);
  });

  it('refuses to prepare a grant for an inactive Consent, one without patient, or a patient without a key', async () => {
    const draft = await createConsent(consent('alice', 'draft'));
    const r1 = await call('GET', `Consent/${draft}/$consent-typed-data?action=grant`, alice);
    assert.equal(r1.status, 422, diag(r1));
    assert.match(r1.body.issue[0].diagnostics, /status "draft"/);
    const orphan = await createConsent(consent(undefined));
    const r2 = await call('GET', `Consent/${orphan}/$consent-typed-data?action=grant`, alice);
    assert.equal(r2.status, 422, diag(r2));
    assert.match(r2.body.issue[0].diagnostics, /no patient/);
    const bobs = await createConsent(consent('bob'));
    const r3 = await call('GET', `Consent/${bobs}/$consent-typed-data?action=grant`, bob);
    assert.equal(r3.status, 409, diag(r3));
    assert.match(r3.body.issue[0].diagnostics, /no signing key bound/);
    assert.equal(pstr(await status(bobs, bob), 'status'), 'pending-signature');
    const r4 = await call('GET', `Consent/${bobs}/$consent-typed-data?action=maybe`, bob);
    assert.equal(r4.status, 400, diag(r4));
    const r5 = await call('GET', `Patient/alice/$consent-typed-data?action=grant`, alice);
    assert.equal(r5.status, 400, diag(r5));
  });

  it('a Consent changed after it was signed reports hash-mismatch (the signed version stays the active one)', async () => {
    const id = await createConsent(consent('alice'));
    await relay(id, 'grant');
    const v1 = await hashOf(id);
    const changed = { ...consent('alice', 'active', 'deny'), id };
    const put = await call('PUT', `Consent/${id}`, s.token, changed);
    assert.equal(put.status, 200, diag(put));
    const st = await status(id);
    assert.equal(pstr(st, 'status'), 'hash-mismatch', JSON.stringify(st));
    assert.equal(pstr(st, 'activeHash'), v1);
    assert.equal(pstr(st, 'activeVersion'), '1');
    // The signed version itself is still active.
    const r = await call('GET', `Consent/${id}/_history/1/$consent-status`, alice);
    assert.equal(pstr(r.body, 'status'), 'active');
  });

  it('a revocation sent to the contract by the patient\'s own key reaches the view without any server call', async () => {
    const id = await createConsent(consent('alice'));
    const hash = await hashOf(id);
    await relay(id, 'grant');
    assert.equal(s.app.consentChain.isActive('alice', hash.slice(2)), true);
    const { p } = await typedData(id, 'revoke');
    const own = await ConsentRegistryClient.connect({ rpcUrl, address: pstr(p, 'contractAddress')!, privateKey: aliceKey.privateKey, pollingIntervalMs: 50 });
    try {
      await own.revokeDirect(pstr(p, 'pid')!, hash);
    } finally {
      own.close();
    }
    const started = Date.now();
    while (s.app.consentChain.isActive('alice', hash.slice(2))) {
      assert.ok(Date.now() - started < 5000, 'the view reports the direct revocation within 5 s');
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(pstr(await status(id), 'status'), 'revoked');
  });

  it('custos consent bind / sign / revoke / revoke --direct work end to end', async () => {
    const carolKey = newWallet();
    const keyFile = path.join(dir, 'carol.key');
    fs.writeFileSync(keyFile, `${carolKey.privateKey}\n`, { mode: 0o600 });
    const carol = await patientToken(s, { patientId: 'carol', scope: 'patient/Consent.rus' });
    const tokenFile = path.join(dir, 'carol.token');
    fs.writeFileSync(tokenFile, carol, { mode: 0o600 });
    const common = ['--server', s.base, '--token-file', tokenFile, '--key', keyFile];

    const bound = await cli(['bind', '--patient', 'carol', ...common]);
    assert.equal(bound.code, 0, bound.stderr);
    assert.equal(JSON.parse(bound.stdout).key, carolKey.address);

    const id = await createConsent(consent('carol'));
    const hash = await hashOf(id);
    const signed = await cli(['sign', '--consent', id, ...common]);
    assert.equal(signed.code, 0, signed.stderr);
    const so = JSON.parse(signed.stdout);
    assert.equal(so.status, 'active');
    assert.equal(so.consentHash, hash);
    assert.equal(s.app.consentChain.isActive('carol', hash.slice(2)), true);

    const revoked = await cli(['revoke', '--consent', id, ...common]);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.equal(JSON.parse(revoked.stdout).status, 'revoked');
    assert.equal(s.app.consentChain.isActive('carol', hash.slice(2)), false);

    assert.equal((await cli(['sign', '--consent', id, ...common])).code, 0);
    const direct = await cli(['revoke', '--direct', '--rpc', rpcUrl, '--consent', id, ...common]);
    assert.equal(direct.code, 0, direct.stderr);
    const d = JSON.parse(direct.stdout);
    assert.equal(d.direct, true);
    assert.match(d.txHash, /^0x[0-9a-f]{64}$/);
    assert.equal(pstr(await status(id, carol), 'status'), 'revoked');

    // Errors: a key that is not the bound one; nothing to revoke; usage.
    const stranger = path.join(dir, 'stranger.key');
    fs.writeFileSync(stranger, newWallet().privateKey);
    const wrong = await cli(['sign', '--consent', id, '--server', s.base, '--token-file', tokenFile, '--key', stranger]);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /not the key bound/);
    const nothing = await cli(['revoke', '--consent', id, ...common]);
    assert.equal(nothing.code, 1);
    assert.match(nothing.stderr, /HTTP 409.*not active/);
    const usage = await cli(['sign', '--consent', id, '--server', s.base, '--token-file', tokenFile]);
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /--key is required/);
    // deploy (for an external chain): a fresh ConsentRegistry whose deployment block the server can find.
    const opKey = path.join(dir, 'operator.key');
    const operator = newWallet();
    fs.writeFileSync(opKey, operator.privateKey);
    await fund(rpcUrl, operator.address);
    const deployed = await cli(['deploy', '--rpc', rpcUrl, '--key', opKey, '--recovery-days', '1']);
    assert.equal(deployed.code, 0, deployed.stderr);
    const dep = JSON.parse(deployed.stdout);
    assert.equal(dep.recoveryDelaySeconds, 86400);
    assert.equal(dep.env, `CONSENT_CONTRACT=${dep.contract}`);
    const at = await deploymentBlock(rpcUrl, 31337, dep.contract);
    assert.notEqual(await provider.getCode(dep.contract, at), '0x');
    assert.equal(await provider.getCode(dep.contract, at - 1), '0x');
    const help = await cli(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /custos consent <command>/);
  });

  it('fresh() refuses to serve an old view when the chain cannot be read (503 for the caller)', async () => {
    const view = s.app.consentChain as ChainConsentView;
    const dead = new ChainConsentView({
      client: await ConsentRegistryClient.connect({ rpcUrl, address: view.contract.address }),
      rpcUrl: 'http://127.0.0.1:9', secret: Buffer.alloc(32, 1), syncMs: 50, fromBlock: 0, pollMs: 0,
    });
    try {
      await assert.rejects(dead.fresh(), (err: unknown) => err instanceof ConsentChainUnavailableError && /cannot be read/.test((err as Error).message));
    } finally {
      await dead.close();
    }
  });
});

describe('consent chain configuration and CONSENT_CHAIN=off', () => {
  it('parses and validates the consent variables', () => {
    const base = { DATA_DIR: tempDir() };
    const on = loadConfig(base).consent;
    assert.deepEqual({ chain: on.chain, syncMs: on.syncMs, recoveryDays: on.recoveryDays, base: on.base, breakGlassMinutes: on.breakGlassMinutes }, { chain: 'required', syncMs: 1000, recoveryDays: 7, base: 'deny', breakGlassMinutes: 60 });
    assert.equal(loadConfig({ ...base, LEDGER: 'off' }).consent.chain, 'off');
    assert.throws(() => loadConfig({ ...base, LEDGER: 'off', CONSENT_CHAIN: 'required' }), /CONSENT_CHAIN=required needs the ledger/);
    assert.throws(() => loadConfig({ ...base, CONSENT_CHAIN: 'maybe' }), /CONSENT_CHAIN must be/);
    assert.throws(() => loadConfig({ ...base, CONSENT_BASE: 'allow' }), /CONSENT_BASE must be/);
    assert.throws(() => loadConfig({ ...base, BREAK_GLASS_MINUTES: '0' }), /BREAK_GLASS_MINUTES/);
    assert.throws(() => loadConfig({ ...base, CONSENT_CONTRACT: '0x12' }), /CONSENT_CONTRACT/);
    assert.throws(() => loadConfig({ ...base, LEDGER_RPC_URL: 'http://127.0.0.1:9' }), /needs CONSENT_CONTRACT/);
    const c = loadConfig({ ...base, CONSENT_SYNC_MS: '250', CONSENT_RECOVERY_DAYS: '0.5', CONSENT_BASE: 'permit', BREAK_GLASS_MINUTES: '15' }).consent;
    assert.deepEqual([c.syncMs, c.recoveryDays, c.base, c.breakGlassMinutes], [250, 0.5, 'permit', 15]);
  });

  it('with the chain off, $consent-status says off and signing operations are refused', async () => {
    const t = await testApp({ LEDGER: 'off' });
    try {
      assert.equal(t.consentChain.mode, 'off');
      const created = await fetchLike(t, 'POST', 'Consent', consent('dave'));
      assert.equal(created.status, 201);
      const st = await fetchLike(t, 'GET', `Consent/${created.body.id}/$consent-status`);
      assert.equal(st.status, 200, JSON.stringify(st.body));
      assert.equal(pstr(st.body, 'status'), 'off');
      const td = await fetchLike(t, 'GET', `Consent/${created.body.id}/$consent-typed-data?action=grant`);
      assert.equal(td.status, 400);
      assert.match(td.body.issue[0].diagnostics, /CONSENT_CHAIN=off/);
    } finally {
      await t.close();
    }
  });
});

async function fetchLike(t: Awaited<ReturnType<typeof testApp>>, method: 'GET' | 'POST', p: string, body?: unknown): Promise<Res> {
  const { default: request } = await import('supertest');
  const r = method === 'GET' ? await request(t.app).get(`/fhir/${p}`) : await request(t.app).post(`/fhir/${p}`).set('content-type', FHIR_JSON).send(JSON.stringify(body));
  return { status: r.status, body: r.body };
}
