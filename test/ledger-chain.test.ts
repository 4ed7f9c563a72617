// The chain side of ledger anchoring against a real anvil and the real compiled AnchorRegistry.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Contract, Interface, JsonRpcProvider, Network, Wallet, type InterfaceAbi } from 'ethers';
import { AnchorRegistryClient, AnchorRegistryError } from '../src/ledger/anchor-registry.js';
import { anvilBinary, fund, isWellKnownDevKey, loadOrCreateKey, startLocalNode, type LocalNode } from '../src/ledger/anvil.js';
import { ARTIFACTS_DIR, artifactsDirFor, loadArtifact } from '../src/ledger/contract-artifacts.js';
import { freePort, tempDir } from './helpers.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ZERO_ADDRESS = '0x0000000000000000000000000000000000000000';

// The contract must be compiled; the script is a no-op when dist/contracts is up to date.
execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'build-contracts.mjs')], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
const artifact = loadArtifact('AnchorRegistry');
const iface = new Interface(artifact.abi as InterfaceAbi);

const nodes: LocalNode[] = [];
const dirs: string[] = [];
function tmp(): string {
  const d = tempDir('custos-chain-');
  dirs.push(d);
  return d;
}
const clients: AnchorRegistryClient[] = [];
const providers: JsonRpcProvider[] = [];

async function node(opts: Parameters<typeof startLocalNode>[0]): Promise<LocalNode> {
  const n = await startLocalNode(opts);
  nodes.push(n);
  return n;
}
function track<T extends AnchorRegistryClient>(c: T): T {
  clients.push(c);
  return c;
}
function provider(rpcUrl: string, chainId = 31337): JsonRpcProvider {
  const p = new JsonRpcProvider(rpcUrl, Network.from(chainId), { staticNetwork: true });
  providers.push(p);
  return p;
}
async function newKey(dir: string, name: string, rpcUrl: string): Promise<string> {
  const key = loadOrCreateKey(path.join(dir, 'keys', name));
  await fund(rpcUrl, new Wallet(key).address);
  return key;
}
async function rejectsWith(p: Promise<unknown>, reason: string, args?: unknown[]): Promise<AnchorRegistryError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof AnchorRegistryError, `expected AnchorRegistryError ${reason}, got ${String(err)}`);
    assert.equal(err.reason, reason, err.message);
    if (args) assert.deepEqual(err.args, args);
    return err;
  }
  assert.fail(`expected a ${reason} revert`);
}
async function answers(rpcUrl: string): Promise<boolean> {
  try {
    await fetch(rpcUrl, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}', signal: AbortSignal.timeout(1000) });
    return true;
  } catch {
    return false;
  }
}

after(async () => {
  for (const c of clients) c.close();
  for (const p of providers) p.destroy();
  await Promise.all(nodes.map((n) => n.stop()));
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

describe('contract artifacts', () => {
  it('resolves dist/contracts from src (tsx) and from dist, and says to build when missing', async () => {
    assert.equal(artifactsDirFor('file:///repo/src/ledger/contract-artifacts.ts'), path.resolve('/repo/dist/contracts'));
    assert.equal(artifactsDirFor('file:///repo/dist/ledger/contract-artifacts.js'), path.resolve('/repo/dist/contracts'));
    assert.equal(ARTIFACTS_DIR, path.join(ROOT, 'dist', 'contracts'));
    assert.equal(artifact.contractName, 'AnchorRegistry');
    assert.match(artifact.bytecode, /^0x[0-9a-f]+$/);
    assert.ok(artifact.deployedBytecode.length > 100);
    assert.equal(artifact.compiler.settings.evmVersion, 'cancun');
    assert.ok(iface.getFunction('anchor') && iface.getEvent('Anchored') && iface.getError('AlreadyAnchored'));
    assert.throws(() => loadArtifact('NoSuchContract'), /npm run build/);
    assert.throws(() => loadArtifact('AnchorRegistry', tmp()), /not found: run `npm run build`/);
    // The compiled module (present after `npm run build`) finds the same directory.
    const compiled = path.join(ROOT, 'dist', 'ledger', 'contract-artifacts.js');
    if (fs.existsSync(compiled)) {
      const mod = (await import(pathToFileURL(compiled).href)) as typeof import('../src/ledger/contract-artifacts.js');
      assert.equal(mod.ARTIFACTS_DIR, ARTIFACTS_DIR);
      assert.equal(mod.loadArtifact('AnchorRegistry').bytecode, artifact.bytecode);
    }
  });
});

describe('local node helpers', () => {
  it('finds the anvil binary inside the npm package', () => {
    const bin = anvilBinary();
    assert.match(bin, /node_modules[\\/]@foundry-rs[\\/]anvil-[a-z0-9]+-[a-z0-9]+[\\/]bin[\\/]anvil/);
    fs.accessSync(bin, fs.constants.X_OK);
  });

  it('loadOrCreateKey makes a 0600 key file, returns the same key again, never a well-known dev key', () => {
    const dir = tmp();
    const file = path.join(dir, 'keys', 'ledger.key');
    const key = loadOrCreateKey(file);
    assert.match(key, /^0x[0-9a-f]{64}$/);
    if (process.platform !== 'win32') {
      assert.equal(fs.statSync(file).mode & 0o777, 0o600);
      assert.equal(fs.statSync(path.dirname(file)).mode & 0o777, 0o700);
    }
    assert.equal(loadOrCreateKey(file), key);
    assert.equal(isWellKnownDevKey(key), false);
    // anvil's account 0 key is recognised and refused when found in a key file.
    const dev = '0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80';
    assert.equal(isWellKnownDevKey(dev), true);
    const devFile = path.join(dir, 'dev.key');
    fs.writeFileSync(devFile, dev, { mode: 0o600 });
    assert.throws(() => loadOrCreateKey(devFile), /well-known development key/);
    fs.writeFileSync(devFile, 'not a key');
    assert.throws(() => loadOrCreateKey(devFile), /does not hold a private key/);
    assert.notEqual(loadOrCreateKey(path.join(dir, 'other.key')), key);
    assert.deepEqual(fs.readdirSync(path.dirname(file)), ['ledger.key']); // no temp files left
  });
});

describe('AnchorRegistry on anvil', () => {
  let dir: string;
  let local: LocalNode;
  let ownerKey: string;
  let registry: AnchorRegistryClient;
  let rpc: JsonRpcProvider;

  before(async () => {
    dir = tmp();
    local = await node({ stateDir: path.join(dir, 'chain') });
    ownerKey = await newKey(dir, 'ledger.key', local.rpcUrl);
    registry = track(await AnchorRegistryClient.deploy(local.rpcUrl, ownerKey));
    rpc = provider(local.rpcUrl);
  });

  it('deploys with the data-dir key as owner and anchorer, on the fixed chain id', async () => {
    assert.equal(local.chainId, 31337);
    assert.equal(local.rpcUrl, `http://127.0.0.1:${local.port}`);
    assert.equal(local.stateFile, path.join(dir, 'chain', 'anvil-state.json'));
    assert.equal(registry.chainId, 31337);
    const owner = new Wallet(ownerKey).address;
    assert.equal(registry.anchorer, owner);
    assert.equal(await registry.owner(), owner);
    assert.equal(await registry.isAnchorer(owner), true);
    assert.notEqual(await rpc.getCode(registry.address), '0x');
    // No pre-funded well-known dev accounts on this node.
    assert.deepEqual(await rpc.send('eth_accounts', []), []);
  });

  it('anchors a root: receipt, anchoredAt (block, time, count, batch), the Anchored event, anchorTx', async () => {
    const root = randomBytes(32);
    const rec = await registry.anchor(root, 2000, 42n);
    const block = await rpc.getBlock(rec.blockNumber);
    assert.ok(block);
    assert.equal(rec.blockTime, block.timestamp);
    assert.ok(Math.abs(rec.blockTime - Date.now() / 1000) < 60);
    assert.deepEqual(await registry.anchoredAt(root), { blockNumber: rec.blockNumber, blockTime: rec.blockTime, leafCount: 2000, batchId: 42n });
    assert.deepEqual(await registry.anchorTx(root), rec);

    const logs = await rpc.getLogs({ address: registry.address, fromBlock: 0, toBlock: 'latest', topics: [iface.getEvent('Anchored')!.topicHash, `0x${root.toString('hex')}`] });
    assert.equal(logs.length, 1);
    assert.equal(logs[0]!.transactionHash, rec.txHash);
    const ev = iface.parseLog(logs[0]!);
    assert.equal(ev?.name, 'Anchored');
    assert.equal(ev!.args.root, `0x${root.toString('hex')}`);
    assert.equal(ev!.args.batchId, 42n);
    assert.equal(ev!.args.leafCount, 2000n);
    assert.equal(ev!.args.anchorer, registry.anchorer);
  });

  it('answers zeros for an unknown root (undefined from the client)', async () => {
    const unknown = randomBytes(32);
    assert.equal(await registry.anchoredAt(unknown), undefined);
    assert.equal(await registry.anchorTx(unknown), undefined);
    const raw = new Contract(registry.address, iface, rpc);
    assert.deepEqual([...(await raw.getFunction('anchoredAt').staticCall(unknown))], [0n, 0n, 0n, 0n]);
  });

  it('rejects duplicates, zero roots and zero leaf counts with decoded custom errors', async () => {
    const root = randomBytes(32);
    const first = await registry.anchor(root, 10, 1n);
    await rejectsWith(registry.anchor(root, 10, 2n), 'AlreadyAnchored', [`0x${root.toString('hex')}`, BigInt(first.blockNumber)]);
    await rejectsWith(registry.anchor(Buffer.alloc(32), 10, 3n), 'ZeroRoot', []);
    await rejectsWith(registry.anchor(randomBytes(32), 0, 4n), 'ZeroLeafCount', []);
    assert.equal((await registry.anchoredAt(root))?.batchId, 1n); // the duplicate changed nothing
    await assert.rejects(registry.anchor(randomBytes(31) as Buffer, 1, 1n), /32 bytes/);
    await assert.rejects(registry.anchor(randomBytes(32), 1, -1n), /uint64/);
    // A failed send does not wedge the nonce: the next anchor goes through.
    const ok = await registry.anchor(randomBytes(32), 1, 5n);
    assert.ok(ok.blockNumber > first.blockNumber);
  });

  it('only anchorers anchor; only the owner sets anchorers; changes emit AnchorerSet', async () => {
    const otherKey = await newKey(dir, 'other.key', local.rpcUrl);
    const other = track(await AnchorRegistryClient.connect({ rpcUrl: local.rpcUrl, privateKey: otherKey, address: registry.address, expectedChainId: 31337 }));
    assert.equal(await registry.isAnchorer(other.anchorer!), false);
    await rejectsWith(other.anchor(randomBytes(32), 5, 1n), 'NotAnchorer', [other.anchorer]);
    await rejectsWith(other.setAnchorer(other.anchorer!, true), 'NotOwner', [other.anchorer]);
    await rejectsWith(other.estimateAnchorGas(), 'NotAnchorer');

    await registry.setAnchorer(other.anchorer!, true);
    assert.equal(await registry.isAnchorer(other.anchorer!), true);
    const root = randomBytes(32);
    await other.anchor(root, 5, 9n);
    assert.equal((await registry.anchoredAt(root))?.leafCount, 5);
    const [log] = await rpc.getLogs({ address: registry.address, fromBlock: 0, toBlock: 'latest', topics: [iface.getEvent('Anchored')!.topicHash, `0x${root.toString('hex')}`] });
    assert.equal(iface.parseLog(log!)!.args.anchorer, other.anchorer);
    // An anchorer that is not the owner still cannot manage anchorers.
    await rejectsWith(other.setAnchorer(other.anchorer!, false), 'NotOwner');

    await registry.setAnchorer(other.anchorer!, false);
    await rejectsWith(other.anchor(randomBytes(32), 5, 2n), 'NotAnchorer');
    const changes = (await rpc.getLogs({ address: registry.address, fromBlock: 0, toBlock: 'latest', topics: [iface.getEvent('AnchorerSet')!.topicHash] }))
      .map((l) => iface.parseLog(l)!.args).map((a) => [a.account as string, a.allowed as boolean]);
    assert.deepEqual(changes, [[registry.anchorer, true], [other.anchorer, true], [other.anchorer, false]]);
  });

  it('transferOwnership hands anchorer management over (owner only)', async () => {
    const ownerWallet = new Wallet(ownerKey, rpc);
    const fresh = track(await AnchorRegistryClient.deploy(local.rpcUrl, ownerKey));
    const nextKey = await newKey(dir, 'next-owner.key', local.rpcUrl);
    const next = track(await AnchorRegistryClient.connect({ rpcUrl: local.rpcUrl, privateKey: nextKey, address: fresh.address }));
    const raw = new Contract(fresh.address, iface, ownerWallet);
    await (await raw.getFunction('transferOwnership').send(next.anchorer)).wait();
    assert.equal(await fresh.owner(), next.anchorer);
    await rejectsWith(fresh.setAnchorer(next.anchorer!, true), 'NotOwner');
    await next.setAnchorer(next.anchorer!, true);
    await next.anchor(randomBytes(32), 1, 1n);
    // The old owner stays an anchorer until removed.
    await fresh.anchor(randomBytes(32), 1, 2n);
    const asNext = new Contract(fresh.address, iface, new Wallet(nextKey, rpc));
    await rejectsWith(asNext.getFunction('transferOwnership').staticCall(ZERO_ADDRESS).catch((e: unknown) => Promise.reject(fromRaw(e))), 'ZeroAddress');
    await rejectsWith(raw.getFunction('transferOwnership').staticCall(next.anchorer).catch((e: unknown) => Promise.reject(fromRaw(e))), 'NotOwner', [ownerWallet.address]);
    await rejectsWith(next.setAnchorer(ZERO_ADDRESS, true), 'ZeroAddress');
  });

  it('costs well under 100k gas per anchor transaction (< 50 gas per version at 2,000 versions)', async (t) => {
    const gasUsed: bigint[] = [];
    for (let i = 0; i < 5; i++) {
      const rec = await registry.anchor(randomBytes(32), 2000, BigInt(1000 + i));
      const receipt = await rpc.getTransactionReceipt(rec.txHash);
      gasUsed.push(receipt!.gasUsed);
    }
    const max = gasUsed.reduce((a, b) => (a > b ? a : b));
    const estimate = await registry.estimateAnchorGas();
    t.diagnostic(`gas per anchor tx: ${gasUsed.join(', ')} (estimate ${estimate}); per version at 2,000: ${(Number(max) / 2000).toFixed(1)}`);
    assert.ok(max < 100_000n, `anchor used ${max} gas`);
    assert.ok(Number(max) / 2000 < 50);
    assert.ok(estimate >= max - 2000n && estimate < 100_000n, `estimate ${estimate}`);
  });

  it('serialises concurrent anchors from one client (distinct nonces, all mined)', async () => {
    const roots = Array.from({ length: 6 }, () => randomBytes(32));
    const recs = await Promise.all(roots.map((r, i) => registry.anchor(r, i + 1, BigInt(i))));
    assert.equal(new Set(recs.map((r) => r.txHash)).size, roots.length);
    for (const [i, r] of roots.entries()) assert.equal((await registry.anchoredAt(r))?.leafCount, i + 1);
  });

  it('a read-only client reads but cannot send', async () => {
    const ro = track(await AnchorRegistryClient.connect({ rpcUrl: local.rpcUrl, address: registry.address.toLowerCase() }));
    assert.equal(ro.anchorer, undefined);
    assert.equal(ro.address, registry.address);
    const root = randomBytes(32);
    await registry.anchor(root, 3, 3n);
    assert.equal((await ro.anchoredAt(root))?.leafCount, 3);
    assert.ok((await ro.estimateAnchorGas()) < 100_000n); // estimated as the owner
    await assert.rejects(ro.anchor(randomBytes(32), 1, 1n), /read-only/);
  });

  it('connect checks the chain id and the code at the address', async () => {
    await assert.rejects(AnchorRegistryClient.connect({ rpcUrl: local.rpcUrl, address: registry.address, expectedChainId: 1 }), /Chain id mismatch: .* is chain 31337, expected 1/);
    await assert.rejects(AnchorRegistryClient.connect({ rpcUrl: local.rpcUrl, address: new Wallet(ownerKey).address }), /No contract code at/);
    await assert.rejects(AnchorRegistryClient.connect({ rpcUrl: `http://127.0.0.1:${await freePort()}`, address: registry.address }), /Cannot reach the EVM JSON-RPC endpoint/);
  });
});

describe('local node lifecycle', () => {
  it('keeps the contract and its anchors across a restart with the same state dir', async () => {
    const dir = tmp();
    const stateDir = path.join(dir, 'chain');
    const first = await node({ stateDir });
    const key = await newKey(dir, 'ledger.key', first.rpcUrl);
    const reg = await AnchorRegistryClient.deploy(first.rpcUrl, key);
    const root = randomBytes(32);
    const rec = await reg.anchor(root, 77, 7n);
    reg.close();
    await first.stop();
    await first.stop(); // idempotent
    assert.deepEqual(await first.exited, { code: 0, signal: null });
    assert.equal(await answers(first.rpcUrl), false);
    assert.ok(fs.statSync(first.stateFile).size > 0);

    const second = await node({ stateDir, port: await freePort() });
    const again = track(await AnchorRegistryClient.connect({ rpcUrl: second.rpcUrl, privateKey: key, address: reg.address, expectedChainId: 31337 }));
    assert.deepEqual(await again.anchoredAt(root), { blockNumber: rec.blockNumber, blockTime: rec.blockTime, leafCount: 77, batchId: 7n });
    assert.deepEqual(await again.anchorTx(root), rec);
    const next = await again.anchor(randomBytes(32), 1, 8n); // nonce continues
    assert.ok(next.blockNumber > rec.blockNumber);
    await rejectsWith(again.anchor(root, 77, 7n), 'AlreadyAnchored');
  });

  it('a fresh state dir is an empty chain: connect fails clearly; redeploying with the same key gives the same address and an old client recovers its nonce', async () => {
    const dir = tmp();
    const port = await freePort();
    const first = await node({ stateDir: path.join(dir, 'a'), port });
    const key = await newKey(dir, 'ledger.key', first.rpcUrl);
    const reg = track(await AnchorRegistryClient.deploy(first.rpcUrl, key));
    for (let i = 0; i < 3; i++) await reg.anchor(randomBytes(32), 1, BigInt(i)); // nonce 3 now
    const root = randomBytes(32);
    await reg.anchor(root, 5, 5n);
    await first.stop();

    // Same port, no state: the chain restarted from scratch.
    const reset = await node({ stateDir: path.join(dir, 'b'), port });
    await assert.rejects(
      AnchorRegistryClient.connect({ rpcUrl: reset.rpcUrl, privateKey: key, address: reg.address, expectedChainId: 31337 }),
      /No contract code at .*chain was reset/,
    );
    await fund(reset.rpcUrl, reg.anchorer!);
    const redeployed = track(await AnchorRegistryClient.deploy(reset.rpcUrl, key));
    assert.equal(redeployed.address, reg.address);
    // The old client (same URL) re-reads the nonce (0 -> 1 now) instead of using its own idea of it.
    assert.equal(await reg.anchoredAt(root), undefined);
    const re = await reg.anchor(root, 5, 5n);
    assert.equal((await redeployed.anchoredAt(root))?.blockNumber, re.blockNumber);

    const custom = await node({ stateDir: path.join(dir, 'c'), chainId: 4242 });
    assert.equal(custom.chainId, 4242);
    await assert.rejects(AnchorRegistryClient.connect({ rpcUrl: custom.rpcUrl, address: reg.address, expectedChainId: 31337 }), /is chain 4242, expected 31337/);
  });

  it('recovers from a state file cut short: restores the state saved at the previous start, else starts empty', async () => {
    const dir = tmp();
    const stateDir = path.join(dir, 'chain');
    const a = await node({ stateDir });
    const key = await newKey(dir, 'ledger.key', a.rpcUrl);
    const reg = await AnchorRegistryClient.deploy(a.rpcUrl, key);
    const early = randomBytes(32);
    await reg.anchor(early, 1, 1n);
    reg.close();
    await a.stop();

    const b = await node({ stateDir }); // loads the state and keeps it as .bak
    assert.ok(fs.existsSync(`${b.stateFile}.bak`));
    const regB = await AnchorRegistryClient.connect({ rpcUrl: b.rpcUrl, privateKey: key, address: reg.address });
    const late = randomBytes(32);
    await regB.anchor(late, 2, 2n);
    regB.close();
    await b.stop();

    const full = fs.readFileSync(b.stateFile);
    fs.writeFileSync(b.stateFile, full.subarray(0, Math.floor(full.length / 2))); // a crash mid-dump
    const c = await node({ stateDir });
    const regC = track(await AnchorRegistryClient.connect({ rpcUrl: c.rpcUrl, address: reg.address }));
    assert.equal((await regC.anchoredAt(early))?.leafCount, 1);
    assert.equal(await regC.anchoredAt(late), undefined); // anchored after the backup: to be re-anchored
    assert.equal(fs.readdirSync(stateDir).filter((f) => f.includes('.corrupt-')).length, 1);
    await c.stop();

    // Both the state file and its backup unreadable: an empty chain.
    fs.writeFileSync(c.stateFile, '{"block":');
    fs.writeFileSync(`${c.stateFile}.bak`, '{"block":');
    const d = await node({ stateDir });
    assert.equal(await provider(d.rpcUrl).getCode(reg.address), '0x');
  });

  it('fails with anvil\'s own message when a given port is taken', async () => {
    const n = await node({ stateDir: tmp() });
    await assert.rejects(startLocalNode({ stateDir: tmp(), port: n.port }), /anvil failed to start.*Address already in use/s);
  });

  it('does not outlive its parent: a SIGKILLed parent leaves no anvil, and the state is dumped', async () => {
    const dir = tmp();
    const script = path.join(dir, 'parent.mts');
    fs.writeFileSync(script, `
      import { startLocalNode } from ${JSON.stringify(pathToFileURL(path.join(ROOT, 'src', 'ledger', 'anvil.ts')).href)};
      const n = await startLocalNode({ stateDir: ${JSON.stringify(path.join(dir, 'chain'))} });
      process.stdout.write(JSON.stringify({ rpcUrl: n.rpcUrl, stateFile: n.stateFile }) + '\\n');
      setInterval(() => {}, 1000);
    `);
    const parent = spawn(process.execPath, ['--import', 'tsx', script], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    try {
      const line = await new Promise<string>((resolve, reject) => {
        let out = '';
        parent.stdout.setEncoding('utf8');
        parent.stdout.on('data', (d: string) => {
          out += d;
          if (out.includes('\n')) resolve(out.split('\n')[0]!);
        });
        parent.once('exit', (code) => reject(new Error(`parent exited early (${code})`)));
        setTimeout(() => reject(new Error('parent did not report its node')), 15_000).unref();
      });
      const { rpcUrl, stateFile } = JSON.parse(line) as { rpcUrl: string; stateFile: string };
      assert.equal(await answers(rpcUrl), true);
      assert.equal(fs.existsSync(stateFile), false); // first periodic dump is 10 s away
      parent.kill('SIGKILL');
      const deadline = Date.now() + 5000;
      while ((await answers(rpcUrl)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.equal(await answers(rpcUrl), false, 'anvil still answers after its parent was killed');
      for (let i = 0; i < 40 && !fs.existsSync(stateFile); i++) await new Promise((r) => setTimeout(r, 50));
      assert.ok(fs.existsSync(stateFile), 'anvil dumped its state on the way out');
    } finally {
      if (parent.exitCode === null && parent.signalCode === null) parent.kill('SIGKILL');
    }
  });
});

/** For raw ethers sends in the tests: decode the custom error as the client does. */
function fromRaw(e: unknown): unknown {
  const data = (e as { data?: string }).data;
  const parsed = data ? iface.parseError(data) : null;
  return parsed ? new AnchorRegistryError(parsed.name as never, [...parsed.args], parsed.name) : e;
}
