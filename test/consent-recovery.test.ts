// Operator key recovery on the ConsentRegistry end to end: a real server with the embedded anvil,
// a real patient token, real EIP-712 signatures, real HTTP, the CLI as a separate process (the
// operator's `custos consent recover` with the server's DATA_DIR, the patient's `cancel-recovery`),
// and the chain's clock moved past the recovery delay with evm_increaseTime + evm_mine.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { Consent, Parameters } from '@medplum/fhirtypes';
import { Wallet } from 'ethers';
import type { ChainConsentView } from '../src/consent/index.js';
import type { ConsentTypedData } from '../src/consent/consent-registry.js';
import { FHIR_JSON, runCli, tempDir, testServer, type CliRun } from './helpers.js';
import { patientToken } from './smart-helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'build-contracts.mjs')], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });

type Server = Awaited<ReturnType<typeof testServer>>;
interface Res { status: number; body: any }

const DELAY_S = 7 * 86_400;
const param = (p: Parameters, name: string) => p.parameter?.find((x) => x.name === name);
const pstr = (p: Parameters, name: string) => {
  const x = param(p, name);
  return x?.valueString ?? x?.valueCode ?? x?.valueInstant ?? (x?.valueInteger !== undefined ? String(x.valueInteger) : undefined);
};
const diag = (r: Res) => JSON.stringify(r.body);
const newWallet = () => new Wallet(Wallet.createRandom().privateKey);

async function signTd(w: Wallet, td: ConsentTypedData): Promise<string> {
  const { EIP712Domain: _d, ...types } = td.types;
  return w.signTypedData(td.domain, types, td.message);
}

describe('consent key recovery (operator proposes, delay, execute; the patient sees and may cancel)', () => {
  let s: Server;
  let rpcUrl: string;
  let dir: string;
  let alice: string;
  const oldKey = newWallet();
  const newKey = newWallet();
  const files: Record<string, string> = {};

  async function call(method: 'GET' | 'POST', p: string, token: string, body?: unknown): Promise<Res> {
    const res = await fetch(`${s.base}/${p}`, {
      method,
      headers: { authorization: `Bearer ${token}`, accept: FHIR_JSON, ...(body ? { 'content-type': FHIR_JSON } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  }
  async function keyInfo(): Promise<Parameters> {
    const r = await call('GET', 'Patient/alice/$consent-key', alice);
    assert.equal(r.status, 200, diag(r));
    return r.body;
  }
  async function rpc(method: string, params: unknown[] = []): Promise<unknown> {
    const res = await fetch(rpcUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }) });
    const j = (await res.json()) as { result?: unknown; error?: { message: string } };
    if (j.error) throw new Error(`${method}: ${j.error.message}`);
    return j.result;
  }
  /** The operator's command, run as on the server machine (the server's DATA_DIR). */
  function operator(args: string[], env: Record<string, string> = {}): Promise<CliRun> {
    return runCli(['consent', 'recover', '--patient', 'alice', '--rpc', rpcUrl, ...args], { DATA_DIR: s.config.dataDir, ...env });
  }

  before(async () => {
    dir = tempDir('custos-consent-recovery-');
    s = await testServer({ LEDGER: 'embedded', CONSENT_SYNC_MS: '400', LEDGER_BATCH_MS: '60000', WRITE_WORKERS: '0', READ_WORKERS: '0' });
    rpcUrl = s.app.ledger.status().rpcUrl!;
    alice = await patientToken(s, { patientId: 'alice', scope: 'patient/Consent.rus' });
    for (const [name, w] of [['old', oldKey], ['new', newKey]] as const) {
      files[name] = path.join(dir, `${name}.key`);
      fs.writeFileSync(files[name]!, `${w.privateKey}\n`, { mode: 0o600 });
    }
    files.token = path.join(dir, 'alice.token');
    fs.writeFileSync(files.token, alice, { mode: 0o600 });
    // Alice binds her first key (signed by the key itself).
    const info = await call('GET', `Patient/alice/$consent-key?address=${oldKey.address}`, alice);
    assert.equal(info.status, 200, diag(info));
    const td = JSON.parse(pstr(info.body, 'typedData')!) as ConsentTypedData;
    const bound = await call('POST', 'Patient/alice/$consent-key', alice, {
      resourceType: 'Parameters',
      parameter: [{ name: 'address', valueString: oldKey.address }, { name: 'deadline', valueString: td.message.deadline }, { name: 'signature', valueString: await signTd(oldKey, td) }],
    });
    assert.equal(bound.status, 200, diag(bound));
  });
  after(async () => {
    await s?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('the operator proposes, the patient sees it, early execution fails, after the delay it binds the new key', async () => {
    assert.equal(param(await keyInfo(), 'recoveryKey'), undefined, 'nothing pending yet');

    const proposed = await operator(['--address', newKey.address]);
    assert.equal(proposed.code, 0, proposed.stderr);
    const po = JSON.parse(proposed.stdout);
    assert.equal(po.status, 'recovery-proposed');
    assert.equal(po.currentKey, oldKey.address);
    assert.equal(po.recoveryKey, newKey.address);
    const expected = Date.now() / 1000 + DELAY_S;
    assert.ok(Math.abs(po.executableAtUnix - expected) < 120, `executableAt ${po.executableAt} is about now + 7 days`);

    // The patient sees the pending recovery in $consent-key.
    const seen = await keyInfo();
    assert.equal(pstr(seen, 'key'), oldKey.address);
    assert.equal(pstr(seen, 'recoveryKey'), newKey.address);
    const at = param(seen, 'recoveryExecutableAt')?.valueInstant;
    assert.ok(at, 'recoveryExecutableAt is a valueInstant');
    assert.equal(Date.parse(at) / 1000, po.executableAtUnix);
    assert.equal(pstr(seen, 'pid'), po.pid, 'the operator computed the same pid from DATA_DIR as the server');
    // ... and with the CLI.
    const st = await runCli(['consent', 'status', '--patient', 'alice', '--server', s.base, '--token-file', files.token!]);
    assert.equal(st.code, 0, st.stderr);
    assert.equal(JSON.parse(st.stdout).recoveryKey, newKey.address);
    assert.equal(JSON.parse(st.stdout).recoveryExecutableAt, at);

    // Too early: refused, naming when it becomes executable.
    const early = await operator(['--address', newKey.address, '--execute']);
    assert.equal(early.code, 1, early.stdout);
    assert.match(early.stderr, /not executable yet/);
    assert.ok(early.stderr.includes(at), early.stderr);
    assert.equal(pstr(await keyInfo(), 'key'), oldKey.address);

    // Move the chain's clock past the delay.
    await rpc('evm_increaseTime', [DELAY_S + 60]);
    await rpc('evm_mine');

    const done = await operator(['--address', newKey.address, '--execute']);
    assert.equal(done.code, 0, done.stderr);
    const d = JSON.parse(done.stdout);
    assert.equal(d.status, 'recovered');
    assert.equal(d.previousKey, oldKey.address);
    assert.equal(d.key, newKey.address);
    assert.equal(d.funded, true, 'the embedded node gives the recovered key gas');

    const now = await keyInfo();
    assert.equal(pstr(now, 'key'), newKey.address);
    assert.equal(param(now, 'recoveryKey'), undefined);
    assert.equal(param(now, 'recoveryExecutableAt'), undefined);
    const view = s.app.consentChain as ChainConsentView;
    assert.equal(view.keyOf(po.pid), newKey.address);
  });

  it('after the recovery a Grant signed by the old key is refused and one by the new key is relayed', async () => {
    const c: Consent = {
      resourceType: 'Consent', status: 'active',
      scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy' }] },
      category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0' }] }],
      patient: { reference: 'Patient/alice' },
      policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] },
      provision: { type: 'permit', actor: [{ role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'PRCP' }] }, reference: { reference: 'Practitioner/dr1' } }] },
    };
    const created = await call('POST', 'Consent', s.token, c);
    assert.equal(created.status, 201, diag(created));
    const id = created.body.id as string;
    const tdRes = await call('GET', `Consent/${id}/$consent-typed-data?action=grant`, alice);
    assert.equal(tdRes.status, 200, diag(tdRes));
    assert.equal(pstr(tdRes.body, 'key'), newKey.address);
    const td = JSON.parse(pstr(tdRes.body, 'typedData')!) as ConsentTypedData;
    const body = async (w: Wallet) => ({
      resourceType: 'Parameters',
      parameter: [
        { name: 'action', valueCode: 'grant' }, { name: 'signature', valueString: await signTd(w, td) },
        { name: 'deadline', valueString: td.message.deadline }, { name: 'nonce', valueString: td.message.nonce },
      ],
    });
    const byOld = await call('POST', `Consent/${id}/$consent-sign`, alice, await body(oldKey));
    assert.ok(byOld.status >= 400 && byOld.status < 500, diag(byOld));
    assert.match(byOld.body.issue[0].diagnostics, /not by the key bound/);
    const byNew = await call('POST', `Consent/${id}/$consent-sign`, alice, await body(newKey));
    assert.equal(byNew.status, 200, diag(byNew));
    assert.equal(pstr(byNew.body, 'status'), 'active');
  });

  it('a second proposal is cancelled by the current key with custos consent cancel-recovery', async () => {
    const third = newWallet();
    const proposed = await operator(['--address', third.address]);
    assert.equal(proposed.code, 0, proposed.stderr);
    assert.equal(pstr(await keyInfo(), 'recoveryKey'), third.address);

    const patientArgs = ['--rpc', rpcUrl, '--patient', 'alice', '--server', s.base, '--token-file', files.token!];
    // Only the key bound now may cancel.
    const wrong = await runCli(['consent', 'cancel-recovery', '--key', files.old!, ...patientArgs]);
    assert.equal(wrong.code, 1, wrong.stdout);
    assert.match(wrong.stderr, /only the key bound now/);

    const cancelled = await runCli(['consent', 'cancel-recovery', '--key', files.new!, ...patientArgs]);
    assert.equal(cancelled.code, 0, cancelled.stderr);
    const co = JSON.parse(cancelled.stdout);
    assert.equal(co.status, 'recovery-cancelled');
    assert.equal(co.cancelledRecoveryKey, third.address);
    assert.match(co.txHash, /^0x[0-9a-f]{64}$/);

    const after = await keyInfo();
    assert.equal(pstr(after, 'key'), newKey.address);
    assert.equal(param(after, 'recoveryKey'), undefined);
    assert.equal(param(after, 'recoveryExecutableAt'), undefined);
    // Nothing left to execute.
    const exec = await operator(['--address', third.address, '--execute']);
    assert.equal(exec.code, 1);
    assert.match(exec.stderr, /no pending recovery/);
  });

  it('recover refuses clearly without the server\'s DATA_DIR, and documents itself', async () => {
    const empty = tempDir('custos-consent-recovery-empty-');
    try {
      const r = await operator(['--address', newWallet().address], { DATA_DIR: empty });
      assert.equal(r.code, 2);
      assert.match(r.stderr, /no master key/);
      assert.equal(fs.existsSync(path.join(empty, 'keys', 'master.key')), false, 'no master key was created');
    } finally {
      fs.rmSync(empty, { recursive: true, force: true });
    }
    const help = await runCli(['consent', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /recover .*--execute|--execute/);
    assert.match(help.stdout, /cancel-recovery/);
  });
});
