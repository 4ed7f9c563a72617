import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import request from 'supertest';
import type { Observation, Parameters, ParametersParameter, Patient, Resource } from '@medplum/fhirtypes';
import { FHIR_JSON, freePort, runCli, tempDir, testApp } from './helpers.js';
import { MerkleTree, rootFromInclusionProof } from '../src/ledger/index.js';

type TestApp = Awaited<ReturnType<typeof testApp>>;
interface Step { step: string; ok: boolean; detail: string }
interface Report { ok: boolean; resource?: string; status?: string; steps: Step[] }
interface Run { code: number | null; stdout: string; stderr: string }

/** The CLI runs from source, as a real process: `node --import tsx src/cli.ts verify ...` in the repo root. */
function cli(args: string[]): Promise<Run> {
  return runCli(['verify', ...args]);
}

const clone = <T>(v: T): T => structuredClone(v);
const param = (p: Parameters, name: string) => p.parameter?.find((x) => x.name === name);
/** A copy of the proof with parameter `name` replaced (or removed when `value` is undefined). */
function withParam(p: Parameters, name: string, value: ParametersParameter | undefined): Parameters {
  const out = clone(p);
  const i = out.parameter!.findIndex((x) => x.name === name);
  assert.ok(i >= 0, `proof has ${name}`);
  if (value) out.parameter![i] = value;
  else out.parameter!.splice(i, 1);
  return out;
}

describe('custos verify (standalone verifier, embedded anvil, real contract)', () => {
  let t: TestApp;
  let rpc: string;
  let dir: string;
  let n = 0;
  /** Versions fetched over HTTP after anchoring: the vread body and its $verify proof. */
  const anchored: { resource: Resource; proof: Parameters }[] = [];
  const PATIENT_NAME = 'Zebedee-Quincunx';

  const obs = (value: number): Observation => ({ resourceType: 'Observation', status: 'final', code: { text: 'spo2' }, valueQuantity: { value, unit: '%' } });
  async function create(r: Resource): Promise<string> {
    const res = await request(t.app).post(`/fhir/${r.resourceType}`).set('content-type', FHIR_JSON).send(JSON.stringify(r));
    assert.equal(res.status, 201, res.text);
    return res.body.id as string;
  }
  async function fetchVersion(type: string, id: string): Promise<{ resource: Resource; proof: Parameters }> {
    const vread = await request(t.app).get(`/fhir/${type}/${id}/_history/1`);
    assert.equal(vread.status, 200, vread.text);
    const proof = await request(t.app).get(`/fhir/${type}/${id}/_history/1/$verify`);
    assert.equal(proof.status, 200, proof.text);
    return { resource: vread.body as Resource, proof: proof.body as Parameters };
  }
  /** Writes the resource and proof (as given: objects as JSON, strings verbatim) to temp files. */
  function files(resource: unknown, proof: unknown): { resource: string; proof: string } {
    const base = path.join(dir, `case-${++n}`);
    const write = (file: string, v: unknown) => { fs.writeFileSync(file, typeof v === 'string' ? v : JSON.stringify(v, null, 2)); return file; };
    return { resource: write(`${base}.resource.json`, resource), proof: write(`${base}.proof.json`, proof) };
  }
  /** Runs the verifier with --json on these inputs; returns the exit code and the parsed report. */
  async function verify(resource: unknown, proof: unknown, opts: { rpc?: string; label?: string } = {}): Promise<Run & { report: Report; failed: string[] }> {
    const f = files(resource, proof);
    const run = await cli(['--resource', f.resource, '--proof', f.proof, '--rpc', opts.rpc ?? rpc, '--json']);
    assert.equal(run.stderr, '', `${opts.label ? `${opts.label}: ` : ''}nothing on stderr`);
    const report = JSON.parse(run.stdout) as Report;
    return { ...run, report, failed: report.steps.filter((s) => !s.ok).map((s) => s.step) };
  }
  const step = (r: Report, name: string) => r.steps.find((s) => s.step === name)!;
  const leafIndexOf = (p: Parameters) => param(p, 'leafIndex')!.valueInteger!;
  /** The anchored version at leaf 0 of its batch (treeSize 5): sizes 6..8 give it the same path and root. */
  const leafZero = () => anchored.find((a) => leafIndexOf(a.proof) === 0)!;

  before(async () => {
    // Batches are cut on size (5) or by flush(): one Patient + 4 Observations make one batch of 5.
    // No worker threads: this app only serves the proofs the verifier checks, and each worker
    // loads the FHIR definitions, seconds of CPU that the verifier processes need on a small machine.
    t = await testApp({ LEDGER: 'embedded', LEDGER_BATCH_SIZE: '5', LEDGER_BATCH_MS: '60000', WRITE_WORKERS: '0', READ_WORKERS: '0' });
    rpc = t.ledger.status().rpcUrl!;
    assert.match(rpc, /^http:\/\/127\.0\.0\.1:\d+/);
    dir = tempDir('custos-verify-');
    const refs: [string, string][] = [['Patient', await create({ resourceType: 'Patient', name: [{ family: PATIENT_NAME }], gender: 'female' } as Patient)]];
    for (let i = 0; i < 4; i++) refs.push(['Observation', await create(obs(95 + i))]);
    await t.ledger.flush();
    for (const [type, id] of refs) anchored.push(await fetchVersion(type, id));
    for (const a of anchored) assert.equal(param(a.proof, 'status')?.valueCode, 'anchored', JSON.stringify(a.proof));
    assert.ok(leafZero(), 'one version is leaf 0');
    assert.equal(param(leafZero().proof, 'treeSize')?.valueInteger, 5);
  });
  after(async () => {
    await t?.close();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('verifies an untouched Observation and Patient: exit 0, every step ok', async () => {
    // Independent processes: run them at once, then check each in order, naming the version.
    const label = (a: (typeof anchored)[number]) => `${a.resource.resourceType}/${a.resource.id}`;
    const runs = await Promise.all(anchored.map((a) => verify(a.resource, a.proof, { label: label(a) })));
    for (const [i, a] of anchored.entries()) {
      const r = runs[i]!;
      assert.equal(r.code, 0, `${label(a)}: ${r.stdout}`);
      assert.deepEqual(r.failed, [], label(a));
      assert.deepEqual(r.report.steps.map((s) => [s.step, s.ok]), [['hash', true], ['resource', true], ['path', true], ['chain', true]], label(a));
      assert.equal(r.report.ok, true, label(a));
      assert.match(step(r.report, 'chain').detail, new RegExp(`anchored in 0x[0-9a-fA-F]{40} on chain ${t.ledger.chain!.chainId} for 5 leaves, block ${param(a.proof, 'blockNumber')!.valueInteger}`), label(a));
    }
  });

  it('prints one line per step in text mode, and never the resource contents', async () => {
    const patient = anchored.find((a) => a.resource.resourceType === 'Patient')!;
    const f = files(patient.resource, patient.proof);
    const changed = clone(patient.resource) as Patient;
    changed.name![0]!.family = `${PATIENT_NAME}x`;
    const f2 = files(changed, patient.proof);
    // Two independent processes: the untouched Patient and a changed one, at once.
    const [ok, bad] = await Promise.all([
      cli(['--resource', f.resource, '--proof', f.proof, '--rpc', rpc]),
      cli(['--resource', f2.resource, '--proof', f2.proof, '--rpc', rpc]),
    ]);
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    const lines = ok.stdout.trimEnd().split('\n');
    assert.equal(lines[0], `custos verify Patient/${patient.resource.id}/_history/1`);
    for (const [i, s] of ['hash', 'resource', 'path', 'chain'].entries()) assert.match(lines[i + 1]!, new RegExp(`^\\s+${s}\\s+ok\\s+\\S`));
    assert.match(lines[5]!, /^verified/);
    assert.doesNotMatch(ok.stdout, new RegExp(PATIENT_NAME));

    assert.equal(bad.code, 1, bad.stdout + bad.stderr);
    assert.match(bad.stdout, /^\s+hash\s+FAILED\s+the resource hashes to [0-9a-f]{64}, the proof's contentHash is [0-9a-f]{64}/m);
    assert.match(bad.stdout, /^\s+chain\s+ok/m);
    assert.match(bad.stdout, /NOT verified: failed step: hash/);
    assert.doesNotMatch(bad.stdout + bad.stderr, new RegExp(PATIENT_NAME));
  });

  it('a modified resource (one value changed): exit 1, the hash step fails and the rest still hold', async () => {
    const a = anchored.find((x) => x.resource.resourceType === 'Observation')!;
    const changed = clone(a.resource) as Observation;
    changed.valueQuantity!.value = changed.valueQuantity!.value! + 1;
    const r = await verify(changed, a.proof);
    assert.equal(r.code, 1);
    assert.deepEqual(r.failed, ['hash']);
    assert.match(step(r.report, 'hash').detail, new RegExp(`the proof's contentHash is ${param(a.proof, 'contentHash')!.valueString}`));
    assert.equal(r.report.ok, false);
  });

  it('the resource of another version or id: exit 1, the resource step names what differs', async () => {
    const [a, b] = anchored.filter((x) => x.resource.resourceType === 'Observation');
    const v2 = clone(a!.resource);
    v2.meta = { ...v2.meta, versionId: '2' };
    // Two independent processes, at once: another id, and another version.
    const [r, r2] = await Promise.all([verify(b!.resource, a!.proof, { label: 'another id' }), verify(v2, a!.proof, { label: 'another version' })]);
    assert.equal(r.code, 1);
    assert.ok(r.failed.includes('resource'), JSON.stringify(r.report));
    assert.match(step(r.report, 'resource').detail, new RegExp(`id: expected ${a!.resource.id}, found ${b!.resource.id}`));
    assert.equal(r2.code, 1);
    assert.deepEqual(r2.failed, ['hash', 'resource']);
    assert.match(step(r2.report, 'resource').detail, /meta\.versionId: expected 1, found 2/);
  });

  it('a tampered audit path element: exit 1, the path step fails (the root itself is on chain)', async () => {
    const a = anchored[1]!;
    const p = clone(a.proof);
    const el = p.parameter!.find((x) => x.name === 'auditPath')!;
    el.valueString = `${el.valueString!.slice(0, -1)}${el.valueString!.endsWith('0') ? '1' : '0'}`;
    const r = await verify(a.resource, p);
    assert.equal(r.code, 1);
    assert.deepEqual(r.failed, ['path']);
    assert.match(step(r.report, 'path').detail, /leads to root [0-9a-f]{64}, the proof's root is/);
  });

  it('a wrong treeSize that breaks the path: exit 1, the path step fails', async () => {
    const a = leafZero();
    const r = await verify(a.resource, withParam(a.proof, 'treeSize', { name: 'treeSize', valueInteger: 4 }));
    assert.equal(r.code, 1);
    assert.ok(r.failed.includes('path'), JSON.stringify(r.report));
    assert.match(step(r.report, 'path').detail, /the audit path has 3 hashes; leaf 0 of a tree of 4 needs 2/);
    // The chain anchored this root for 5 leaves, and says so too.
    assert.match(step(r.report, 'chain').detail, /tree of 5 leaves, the proof's treeSize is 4/);
  });

  it('a wrong treeSize the path cannot catch: exit 1, only the chain leaf-count check fails', async () => {
    const a = leafZero();
    const hash = Buffer.from(param(a.proof, 'contentHash')!.valueString!, 'hex');
    const auditPath = a.proof.parameter!.filter((x) => x.name === 'auditPath').map((x) => Buffer.from(x.valueString!, 'hex'));
    // Leaf 0 of 6 has the same audit path and root as leaf 0 of 5: the proof alone cannot tell.
    assert.equal(rootFromInclusionProof(hash, 0, 6, auditPath)?.toString('hex'), param(a.proof, 'root')!.valueString);
    const r = await verify(a.resource, withParam(a.proof, 'treeSize', { name: 'treeSize', valueInteger: 6 }));
    assert.equal(r.code, 1);
    assert.deepEqual(r.failed, ['chain']);
    assert.match(step(r.report, 'chain').detail, /leaf count: the chain anchored this root for a tree of 5 leaves, the proof's treeSize is 6/);
  });

  it('a consistent proof for a root that is not on chain: exit 1, the chain step fails', async () => {
    const a = anchored[2]!;
    const hash = Buffer.from(param(a.proof, 'contentHash')!.valueString!, 'hex');
    const tree = new MerkleTree([randomBytes(32), hash, randomBytes(32)]);
    let p = withParam(a.proof, 'leafIndex', { name: 'leafIndex', valueInteger: 1 });
    p = withParam(p, 'treeSize', { name: 'treeSize', valueInteger: 3 });
    p = withParam(p, 'root', { name: 'root', valueString: tree.root.toString('hex') });
    p.parameter = p.parameter!.filter((x) => x.name !== 'auditPath');
    const at = p.parameter.findIndex((x) => x.name === 'root');
    p.parameter.splice(at, 0, ...tree.inclusionProof(1).map((h) => ({ name: 'auditPath', valueString: h.toString('hex') })));
    const r = await verify(a.resource, p);
    assert.equal(r.code, 1);
    assert.deepEqual(r.failed, ['chain']);
    assert.match(step(r.report, 'chain').detail, new RegExp(`root ${tree.root.toString('hex')} is not anchored in the contract`));
  });

  it('a wrong contract address: exit 1, the chain step fails', async () => {
    const a = anchored[0]!;
    const r = await verify(a.resource, withParam(a.proof, 'contractAddress', { name: 'contractAddress', valueString: `0x${'12'.repeat(20)}` }));
    assert.equal(r.code, 1);
    assert.deepEqual(r.failed, ['chain']);
    assert.match(step(r.report, 'chain').detail, /No contract code at 0x1212/);
  });

  it('a proof for another chain id: exit 1, the chain step fails', async () => {
    const a = anchored[0]!;
    const r = await verify(a.resource, withParam(a.proof, 'chainId', { name: 'chainId', valueString: '1' }));
    assert.equal(r.code, 1);
    assert.deepEqual(r.failed, ['chain']);
    assert.match(step(r.report, 'chain').detail, new RegExp(`is chain ${t.ledger.chain!.chainId}, the proof's chainId is 1`));
  });

  it('an unreachable RPC (closed port): exit 1, the chain step fails, quickly', async () => {
    const a = anchored[0]!;
    const started = Date.now();
    const r = await verify(a.resource, a.proof, { rpc: `http://127.0.0.1:${await freePort()}` });
    assert.equal(r.code, 1);
    assert.deepEqual(r.failed, ['chain']);
    assert.match(step(r.report, 'chain').detail, /Cannot reach the EVM JSON-RPC endpoint/);
    assert.ok(Date.now() - started < 15_000);
  });

  it('a pending proof: exit 1, "not anchored yet"', async () => {
    const id = await create(obs(42));
    const v = await fetchVersion('Observation', id);
    assert.equal(param(v.proof, 'status')?.valueCode, 'pending');
    const f = files(v.resource, v.proof);
    // Two independent processes, at once: --json and text mode.
    const [r, text] = await Promise.all([verify(v.resource, v.proof, { label: '--json' }), cli(['--resource', f.resource, '--proof', f.proof, '--rpc', rpc])]);
    assert.equal(r.code, 1);
    assert.deepEqual(r.failed, ['path', 'chain']);
    assert.equal(r.report.status, 'pending');
    for (const s of ['path', 'chain']) assert.match(step(r.report, s).detail, /^not anchored yet/);
    assert.equal(text.code, 1);
    assert.match(text.stdout, /NOT verified: not anchored yet/);
  });

  it('--json prints one object { ok, resource, status, steps: [{ step, ok, detail }] }', async () => {
    const a = anchored[3]!;
    const r = await verify(a.resource, a.proof);
    assert.equal(r.code, 0);
    assert.equal(r.stdout.trim().split('\n').length, 1, 'one line');
    assert.deepEqual(Object.keys(r.report).sort(), ['ok', 'resource', 'status', 'steps']);
    assert.equal(r.report.ok, true);
    assert.equal(r.report.resource, `${a.resource.resourceType}/${a.resource.id}/_history/1`);
    assert.equal(r.report.status, 'anchored');
    assert.deepEqual(r.report.steps.map((s) => s.step), ['hash', 'resource', 'path', 'chain']);
    for (const s of r.report.steps) {
      assert.deepEqual(Object.keys(s).sort(), ['detail', 'ok', 'step']);
      assert.equal(typeof s.ok, 'boolean');
      assert.equal(typeof s.detail, 'string');
    }
  });

  it('usage errors: exit 2 with a message and the usage on stderr; --help: exit 0', async () => {
    const a = anchored[0]!;
    const good = files(a.resource, a.proof);
    const notJson = files(`{"resourceType":"Patient","name":"${PATIENT_NAME}"`, a.proof).resource;
    const outcome = files(a.resource, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'not-supported', diagnostics: 'Ledger anchoring is turned off' }] }).proof;
    const cases: [string[], RegExp][] = [
      [[], /missing --resource, --proof, --rpc/],
      [['--resource', good.resource, '--proof', good.proof], /missing --rpc/],
      [['--resource', good.resource, '--proof', good.proof, '--rpc', rpc, '--frobnicate'], /Unknown option '--frobnicate'/],
      [['--resource', good.resource, '--proof', good.proof, '--rpc', rpc, 'extra'], /positional argument/],
      [['--resource', good.resource, '--proof', good.proof, '--rpc'], /argument missing/],
      [['--resource', path.join(dir, 'nope.json'), '--proof', good.proof, '--rpc', rpc], /cannot read the --resource file .*nope\.json: no such file/],
      [['--resource', notJson, '--proof', good.proof, '--rpc', rpc], /the --resource file .* is not valid JSON/],
      [['--resource', good.resource, '--proof', good.resource, '--rpc', rpc], /the --proof file .* is a (Patient|Observation), not a Parameters/],
      [['--resource', good.resource, '--proof', outcome, '--rpc', rpc], /is a OperationOutcome \("Ledger anchoring is turned off"\), not a Parameters/],
      [['--resource', good.resource, '--proof', good.proof, '--rpc', 'ws://127.0.0.1:1'], /--rpc must be an http\(s\) JSON-RPC URL/],
    ];
    // The runs are independent processes: start them all at once, then check each in order, every
    // message naming its case (the arguments), so a failure says which one.
    const [help, shortHelp, ...runs] = await Promise.all([cli(['--help']), cli(['-h']), ...cases.map(([args]) => cli(args))]);
    for (const [i, [args, message]] of cases.entries()) {
      const r = runs[i]!;
      const label = `case ${i + 1} (verify ${args.join(' ') || '<no arguments>'})`;
      assert.equal(r.code, 2, `${label}: exit code; stdout: ${r.stdout} stderr: ${r.stderr}`);
      assert.match(r.stderr, message, `${label}: the message on stderr`);
      assert.match(r.stderr, /Usage: custos verify --resource <file> --proof <file> --rpc <url> \[--json\]/, `${label}: the usage on stderr`);
      assert.equal(r.stdout, '', `${label}: nothing on stdout`);
      assert.doesNotMatch(r.stderr, new RegExp(PATIENT_NAME), `${label}: no file contents in messages`);
    }
    assert.equal(help.code, 0, `--help: exit code; stderr: ${help.stderr}`);
    assert.match(help.stdout, /^Usage: custos verify/, '--help: the usage on stdout');
    assert.equal(shortHelp.code, 0, `-h: exit code; stderr: ${shortHelp.stderr}`);
  });
});
