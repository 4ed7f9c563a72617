// ConsentRegistry against a real anvil and the real compiled contract, with real EIP-712 signatures.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { JsonRpcProvider, Network, Signature, TypedDataEncoder, Wallet, hexlify, type Log } from 'ethers';
import { ConsentRegistryClient, ConsentRegistryError, pseudonymousId, type ConsentTypedData } from '../src/consent/consent-registry.js';
import { fund, loadOrCreateKey, startLocalNode, type LocalNode } from '../src/ledger/anvil.js';
import { tempDir } from './helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'build-contracts.mjs')], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });

const SECP256K1_N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
const RECOVERY_DELAY = 7 * 24 * 3600;

let node: LocalNode;
let dir: string;
let provider: JsonRpcProvider;
let server: ConsentRegistryClient; // deployer: owner/operator and relayer
const clients: ConsentRegistryClient[] = [];
const secret = randomBytes(32);
const gas: Record<string, bigint> = {};

function track(c: ConsentRegistryClient): ConsentRegistryClient {
  clients.push(c);
  return c;
}
/** A fresh patient wallet (funded, so it can also send direct calls). */
async function patient(): Promise<Wallet> {
  const w = Wallet.createRandom();
  await fund(node.rpcUrl, w.address);
  return new Wallet(w.privateKey);
}
function newPid(): string {
  return pseudonymousId(secret, `Patient/${randomBytes(8).toString('hex')}`);
}
function newHash(): string {
  return hexlify(randomBytes(32));
}
/** Signs the payload exactly as a wallet would (eth_signTypedData_v4 semantics). */
async function sign(w: Wallet, td: ConsentTypedData): Promise<string> {
  // The payload must survive JSON (it is what the server hands out).
  const t = JSON.parse(JSON.stringify(td)) as ConsentTypedData;
  const { EIP712Domain: _d, ...types } = t.types;
  return w.signTypedData(t.domain, types, t.message);
}
async function now(): Promise<number> {
  const b = await provider.getBlock('latest');
  return b!.timestamp;
}
async function deadline(offset = 3600): Promise<number> {
  return (await now()) + offset;
}
async function rejectsWith(p: Promise<unknown>, reason: string): Promise<ConsentRegistryError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof ConsentRegistryError, `expected ConsentRegistryError ${reason}, got ${String(err)}`);
    assert.equal(err.reason, reason, err.message);
    return err;
  }
  assert.fail(`expected a ${reason} revert`);
}
async function events(txHash: string): Promise<Array<{ name: string; args: unknown[] }>> {
  const r = await provider.getTransactionReceipt(txHash);
  return r!.logs.map((l: Log) => {
    const parsed = server.interface.parseLog(l)!;
    return { name: parsed.name, args: [...parsed.args] };
  });
}
async function bind(pid: string, w: Wallet): Promise<string> {
  const td = server.typedData('BindKey', { pid, key: w.address, nonce: await server.nonceOf(pid), deadline: await deadline() });
  const r = await server.bindKey(pid, w.address, BigInt(td.message.deadline!), await sign(w, td));
  return r.txHash;
}
async function signedGrant(w: Wallet, pid: string, hash: string, kind: 'Grant' | 'Revoke' = 'Grant', dl?: number) {
  const nonce = await server.nonceOf(pid);
  const d = dl ?? (await deadline());
  const td = server.typedData(kind, { pid, consentHash: hash, nonce, deadline: d });
  return { nonce, deadline: d, td, sig: await sign(w, td) };
}

before(async () => {
  dir = tempDir('custos-consent-');
  node = await startLocalNode({ stateDir: path.join(dir, 'anvil') });
  provider = new JsonRpcProvider(node.rpcUrl, Network.from(node.chainId), { staticNetwork: true, cacheTimeout: -1 });
  const key = loadOrCreateKey(path.join(dir, 'keys', 'server'));
  await fund(node.rpcUrl, new Wallet(key).address);
  server = track(await ConsentRegistryClient.deploy(node.rpcUrl, key, RECOVERY_DELAY, { pollingIntervalMs: 50 }));
});

after(async () => {
  for (const c of clients) c.close();
  provider?.destroy();
  await node?.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
  if (Object.keys(gas).length) process.stderr.write(`ConsentRegistry gas: ${JSON.stringify(Object.fromEntries(Object.entries(gas).map(([k, v]) => [k, Number(v)])))}\n`);
});

describe('pseudonymousId and typed data', () => {
  it('pseudonymousId is HMAC-SHA-256 as 0x bytes32, stable per secret and reference', () => {
    const a = pseudonymousId(secret, 'Patient/1');
    assert.match(a, /^0x[0-9a-f]{64}$/);
    assert.equal(a, pseudonymousId(secret, 'Patient/1'));
    assert.notEqual(a, pseudonymousId(secret, 'Patient/2'));
    assert.notEqual(a, pseudonymousId(randomBytes(32), 'Patient/1'));
  });

  it('typedData is JSON-safe, matches the contract domain separator, and validates input', async () => {
    const td = server.typedData('Grant', { pid: newPid(), consentHash: newHash(), nonce: 3n, deadline: 1_900_000_000 });
    assert.deepEqual(JSON.parse(JSON.stringify(td)), td);
    assert.equal(td.primaryType, 'Grant');
    assert.equal(td.domain.chainId, String(node.chainId));
    assert.equal(td.domain.verifyingContract, server.address);
    assert.equal(td.message.nonce, '3');
    assert.deepEqual(Object.keys(td.types).sort(), ['EIP712Domain', 'Grant']);
    assert.equal(TypedDataEncoder.hashDomain(td.domain), await server.domainSeparator());
    assert.throws(() => server.typedData('Grant', { pid: '0x12', consentHash: newHash(), nonce: 0, deadline: 1 }), /pid/);
    assert.throws(() => server.typedData('BindKey', { pid: newPid(), key: 'nope', nonce: 0, deadline: 1 }));
  });
});

describe('binding a key', () => {
  it('binds with a signature by the key itself, relayed by the server; emits KeyBound', async () => {
    const w = await patient();
    const pid = newPid();
    assert.equal(await server.keyOf(pid), undefined);
    const tx = await bind(pid, w);
    assert.equal(await server.keyOf(pid), w.address);
    assert.equal(await server.nonceOf(pid), 1n);
    assert.deepEqual(await events(tx), [{ name: 'KeyBound', args: [pid, w.address] }]);
  });

  it('rejects a first binding signed by another key, and an expired one', async () => {
    const w = await patient();
    const forger = await patient();
    const pid = newPid();
    const td = server.typedData('BindKey', { pid, key: w.address, nonce: 0, deadline: await deadline() });
    await rejectsWith(server.bindKey(pid, w.address, BigInt(td.message.deadline!), await sign(forger, td)), 'BadSignature');
    const old = server.typedData('BindKey', { pid, key: w.address, nonce: 0, deadline: (await now()) - 1 });
    await rejectsWith(server.bindKey(pid, w.address, BigInt(old.message.deadline!), await sign(w, old)), 'Expired');
    assert.equal(await server.keyOf(pid), undefined);
  });

  it('rebinds with a signature by the current key; a signature by the new key alone is rejected', async () => {
    const w1 = await patient();
    const w2 = await patient();
    const pid = newPid();
    await bind(pid, w1);
    const td = server.typedData('BindKey', { pid, key: w2.address, nonce: await server.nonceOf(pid), deadline: await deadline() });
    await rejectsWith(server.bindKey(pid, w2.address, BigInt(td.message.deadline!), await sign(w2, td)), 'BadSignature');
    const r = await server.bindKey(pid, w2.address, BigInt(td.message.deadline!), await sign(w1, td));
    assert.equal(await server.keyOf(pid), w2.address);
    assert.deepEqual(await events(r.txHash), [{ name: 'KeyBound', args: [pid, w2.address] }]);
    // The old key can no longer grant.
    const hash = newHash();
    const g = await signedGrant(w1, pid, hash);
    await rejectsWith(server.grant(pid, hash, g.nonce, g.deadline, g.sig), 'BadSignature');
    const g2 = await signedGrant(w2, pid, hash);
    await server.grant(pid, hash, g2.nonce, g2.deadline, g2.sig);
    assert.equal(await server.isActive(pid, hash), true);
  });
});

describe('grant and revoke', () => {
  it('grants and revokes with valid signatures relayed by the server; events; replay rejected (BadNonce)', async () => {
    const w = await patient();
    const pid = newPid();
    await bind(pid, w);
    const hash = newHash();
    assert.equal(await server.isActive(pid, hash), false);
    const g = await signedGrant(w, pid, hash);
    const gr = await server.grant(pid, hash, g.nonce, g.deadline, g.sig);
    gas.grant = gr.gasUsed;
    assert.equal(await server.isActive(pid, hash), true);
    assert.equal(await server.nonceOf(pid), g.nonce + 1n);
    assert.deepEqual(await events(gr.txHash), [{ name: 'ConsentGranted', args: [pid, hash] }]);
    const replay = await rejectsWith(server.grant(pid, hash, g.nonce, g.deadline, g.sig), 'BadNonce');
    assert.deepEqual(replay.args, [g.nonce + 1n, g.nonce]);

    const rv = await signedGrant(w, pid, hash, 'Revoke');
    const rr = await server.revoke(pid, hash, rv.nonce, rv.deadline, rv.sig);
    gas.revoke = rr.gasUsed;
    assert.equal(await server.isActive(pid, hash), false);
    assert.deepEqual(await events(rr.txHash), [{ name: 'ConsentRevoked', args: [pid, hash] }]);
    await rejectsWith(server.revoke(pid, hash, rv.nonce, rv.deadline, rv.sig), 'BadNonce');
    // A Grant signature cannot be used as a Revoke (different type hash).
    const g3 = await signedGrant(w, pid, hash);
    await rejectsWith(server.revoke(pid, hash, g3.nonce, g3.deadline, g3.sig), 'BadSignature');
  });

  it('rejects an expired deadline', async () => {
    const w = await patient();
    const pid = newPid();
    await bind(pid, w);
    const hash = newHash();
    const g = await signedGrant(w, pid, hash, 'Grant', (await now()) - 1);
    await rejectsWith(server.grant(pid, hash, g.nonce, g.deadline, g.sig), 'Expired');
    assert.equal(await server.isActive(pid, hash), false);
  });

  it('rejects a signature by another address, a tampered message, a malleable (high-s) signature, and an unbound patient', async () => {
    const w = await patient();
    const other = await patient();
    const pid = newPid();
    const hash = newHash();
    const unbound = await signedGrant(w, pid, hash);
    await rejectsWith(server.grant(pid, hash, unbound.nonce, unbound.deadline, unbound.sig), 'NoKey');
    await bind(pid, w);
    const g = await signedGrant(other, pid, hash);
    await rejectsWith(server.grant(pid, hash, g.nonce, g.deadline, g.sig), 'BadSignature');
    const ok = await signedGrant(w, pid, hash);
    await rejectsWith(server.grant(pid, newHash(), ok.nonce, ok.deadline, ok.sig), 'BadSignature');
    const s = Signature.from(ok.sig);
    const highS = `0x${(SECP256K1_N - BigInt(s.s)).toString(16).padStart(64, '0')}`;
    const malleable = `${s.r}${highS.slice(2)}${(s.v === 27 ? 28 : 27).toString(16)}`;
    await rejectsWith(server.grant(pid, hash, ok.nonce, ok.deadline, malleable), 'BadSignature');
    await rejectsWith(server.grant(pid, hash, ok.nonce, ok.deadline, '0x1234'), 'BadSignature');
    assert.equal(await server.isActive(pid, hash), false);
    await server.grant(pid, hash, ok.nonce, ok.deadline, ok.sig);
    assert.equal(await server.isActive(pid, hash), true);
  });

  it('rejects a signature made for another chain id (domain)', async () => {
    const w = await patient();
    const pid = newPid();
    await bind(pid, w);
    const hash = newHash();
    const nonce = await server.nonceOf(pid);
    const d = await deadline();
    const td = server.typedData('Grant', { pid, consentHash: hash, nonce, deadline: d });
    const wrongChain = { ...td, domain: { ...td.domain, chainId: '1' } };
    await rejectsWith(server.grant(pid, hash, nonce, d, await sign(w, wrongChain)), 'BadSignature');
    const wrongContract = { ...td, domain: { ...td.domain, verifyingContract: w.address } };
    await rejectsWith(server.grant(pid, hash, nonce, d, await sign(w, wrongContract)), 'BadSignature');
  });

  it("lets the patient's own address grant and revoke directly; nobody else", async () => {
    const w = await patient();
    const pid = newPid();
    await bind(pid, w);
    const hash = newHash();
    const g = await signedGrant(w, pid, hash);
    await server.grant(pid, hash, g.nonce, g.deadline, g.sig);
    const own = track(await ConsentRegistryClient.connect({ rpcUrl: node.rpcUrl, address: server.address, privateKey: w.privateKey, expectedChainId: node.chainId, pollingIntervalMs: 50 }));
    await rejectsWith(server.revokeDirect(pid, hash), 'NotKeyHolder');
    const r = await own.revokeDirect(pid, hash);
    gas.revokeDirect = r.gasUsed;
    assert.equal(await server.isActive(pid, hash), false);
    assert.deepEqual(await events(r.txHash), [{ name: 'ConsentRevoked', args: [pid, hash] }]);
    await rejectsWith(own.revokeDirect(pid, hash), 'NotActive');
    const r2 = await own.grantDirect(pid, hash);
    assert.deepEqual(await events(r2.txHash), [{ name: 'ConsentGranted', args: [pid, hash] }]);
    assert.equal(await server.isActive(pid, hash), true);
  });
});

describe('operator recovery', () => {
  it('only the owner proposes; effective only after the delay; cancellable by the current key; events', async () => {
    const w1 = await patient();
    const w2 = await patient();
    const pid = newPid();
    await bind(pid, w1);
    const own = track(await ConsentRegistryClient.connect({ rpcUrl: node.rpcUrl, address: server.address, privateKey: w1.privateKey, pollingIntervalMs: 50 }));
    await rejectsWith(own.proposeRecovery(pid, w2.address), 'NotOwner');

    const p1 = await server.proposeRecovery(pid, w2.address);
    const ev1 = await events(p1.txHash);
    assert.equal(ev1.length, 1);
    assert.equal(ev1[0]!.name, 'RecoveryProposed');
    const executableAt = Number(ev1[0]!.args[2]);
    assert.equal(executableAt, (await now()) + RECOVERY_DELAY);
    assert.deepEqual(ev1[0]!.args.slice(0, 2), [pid, w2.address]);
    await rejectsWith(server.executeRecovery(pid), 'RecoveryNotReady');

    // Cancelled by the current key: nothing to execute even after the delay.
    await rejectsWith(server.cancelRecovery(pid), 'NotKeyHolder');
    const c = await own.cancelRecovery(pid);
    assert.deepEqual(await events(c.txHash), [{ name: 'RecoveryCancelled', args: [pid] }]);
    assert.equal(await server.pendingRecovery(pid), undefined);

    await server.proposeRecovery(pid, w2.address);
    await provider.send('evm_increaseTime', [RECOVERY_DELAY - 100]);
    await provider.send('evm_mine', []);
    await rejectsWith(server.executeRecovery(pid), 'RecoveryNotReady');
    assert.equal(await server.keyOf(pid), w1.address);
    await provider.send('evm_increaseTime', [200]);
    await provider.send('evm_mine', []);
    const nonceBefore = await server.nonceOf(pid);
    const ex = await server.executeRecovery(pid);
    assert.deepEqual(await events(ex.txHash), [{ name: 'KeyBound', args: [pid, w2.address] }]);
    assert.equal(await server.keyOf(pid), w2.address);
    assert.equal(await server.nonceOf(pid), nonceBefore + 1n);
    await rejectsWith(server.executeRecovery(pid), 'NoRecovery');

    // The new key grants; the old one cannot.
    const hash = newHash();
    const bad = await signedGrant(w1, pid, hash);
    await rejectsWith(server.grant(pid, hash, bad.nonce, bad.deadline, bad.sig), 'BadSignature');
    const g = await signedGrant(w2, pid, hash);
    await server.grant(pid, hash, g.nonce, g.deadline, g.sig);
    assert.equal(await server.isActive(pid, hash), true);
  });

  it('refuses recovery for a patient with no key', async () => {
    await rejectsWith(server.proposeRecovery(newPid(), Wallet.createRandom().address), 'NoKey');
  });
});

describe('connect', () => {
  it('refuses a wrong chain id and an address without code; reads without a key', async () => {
    await assert.rejects(ConsentRegistryClient.connect({ rpcUrl: node.rpcUrl, address: server.address, expectedChainId: 1 }), /Chain id mismatch/);
    await assert.rejects(ConsentRegistryClient.connect({ rpcUrl: node.rpcUrl, address: Wallet.createRandom().address }), /No contract code/);
    const ro = track(await ConsentRegistryClient.connect({ rpcUrl: node.rpcUrl, address: server.address }));
    assert.equal(await ro.owner(), server.sender);
    await assert.rejects(ro.grantDirect(newPid(), newHash()), /read-only/);
  });
});
