/**
 * `custos verify --resource <file> --proof <file> --rpc <url> [--json]`: the standalone verifier
 * (issue 6, "Proofs and verification"). It does not talk to the FHIR server; it trusts only the
 * arithmetic and the chain:
 *
 *   resource file --(hash)--> proof.contentHash --(path)--> proof.root --(chain)--> the contract
 *
 *   hash      SHA-256 over the RFC 8785 canonical JSON of the resource equals the proof's contentHash
 *   resource  the resource's type, id and meta.versionId are the proof's `resource` reference
 *   path      the audit path walked up from leafHash(contentHash) at leafIndex in a tree of treeSize
 *             leads to the proof's root (RFC 9162)
 *   chain     the node at --rpc is the proof's chain, and the AnchorRegistry at the proof's contract
 *             address holds that root, for a tree of exactly treeSize leaves (an inclusion proof does
 *             not pin the tree size on its own), in the proof's block (and batch, tx, time if given)
 *
 * Every step is checked on its own, so the report says exactly which link is broken. Exit 0 only if
 * all hold, 1 if any fails (or the proof is still pending), 2 on a usage error. It prints ids and
 * hashes only, never the resource's contents (PHI).
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { getAddress } from 'ethers';
import { contentHash } from '../store/index.js';
import { AnchorRegistryClient } from './anchor-registry.js';
import { rootFromInclusionProof } from './merkle.js';

export const VERIFY_USAGE = `Usage: custos verify --resource <file> --proof <file> --rpc <url> [--json]

Checks a resource version against its ledger proof and the chain, without the FHIR server.

  --resource <file>  The resource as returned by vread: GET [type]/[id]/_history/[vid]
  --proof <file>     Its proof: the Parameters from GET [type]/[id]/_history/[vid]/$verify
  --rpc <url>        JSON-RPC URL (http/https) of a node of the chain named in the proof
                     (the embedded node's URL is in GET /fhir/$ledger-status, rpcUrl)
  --json             Print one JSON object: { ok, resource, status, steps: [{ step, ok, detail }] }
  -h, --help         Show this help

Steps (each reported ok or FAILED):
  hash      SHA-256 of the resource's RFC 8785 canonical JSON equals the proof's contentHash
  resource  The resource's type, id and meta.versionId match the proof's resource reference
  path      The audit path from that hash (leafIndex, treeSize) leads to the proof's root (RFC 9162)
  chain     The node is the proof's chain; the contract at contractAddress holds the root,
            anchored for exactly treeSize leaves, in the proof's block

Exit status: 0 all steps hold, 1 a step failed (or the proof is pending: not anchored yet),
2 usage error. Only ids and hashes are printed, never the resource's contents.

Example:
  custos verify --resource obs.json --proof obs.proof.json --rpc http://127.0.0.1:8545
`;

/** How long the whole chain step may take (connect, chain id, contract calls). */
const CHAIN_TIMEOUT_MS = 10_000;

export type StepName = 'hash' | 'resource' | 'path' | 'chain';
export interface StepResult {
  step: StepName;
  ok: boolean;
  detail: string;
}
export interface VerifyReport {
  ok: boolean;
  /** The proof's resource reference (Type/id/_history/vid), when it has a valid one. */
  resource?: string;
  /** The proof's status as the server gave it (pending / anchored / mismatch). */
  status?: string;
  steps: StepResult[];
}

class UsageError extends Error {}

const HEX32 = /^(?:0x)?[0-9a-fA-F]{64}$/;
const TYPE_RE = /^[A-Z][A-Za-z]{0,63}$/;
const ID_RE = /^[A-Za-z0-9\-.]{1,64}$/;
const REFERENCE_RE = /(?:^|\/)([A-Z][A-Za-z]{0,63})\/([A-Za-z0-9\-.]{1,64})\/_history\/([A-Za-z0-9\-.]{1,64})$/;

/** A value from an input file, shown only if it has the shape of an id (never free text). */
function shown(value: unknown, re: RegExp): string {
  if (value === undefined) return '(none)';
  return typeof value === 'string' && re.test(value) ? value : '(not a valid id)';
}

const bare = (hex: string): string => hex.replace(/^0x/i, '').toLowerCase();

// ---------------------------------------------------------------------------------------------
// Reading the files

function readJson(file: string, what: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EISDIR' ? 'it is a directory' : code === 'EACCES' ? 'permission denied' : (code ?? (err as Error).message);
    throw new UsageError(`cannot read the ${what} file ${file}: ${why}`);
  }
  try {
    return JSON.parse(text.replace(/^\uFEFF/, '')) as unknown;
  } catch {
    // JSON.parse's message quotes the text around the error: it could be PHI, so it is not shown.
    throw new UsageError(`the ${what} file ${file} is not valid JSON`);
  }
}

interface Param {
  name?: unknown;
  [k: string]: unknown;
}

/** The proof's parameters by name, with the checks every step shares. */
class Proof {
  private readonly params: Param[];
  constructor(readonly json: Record<string, unknown>) {
    this.params = (Array.isArray(json.parameter) ? (json.parameter as unknown[]) : []).filter((p): p is Param => typeof p === 'object' && p !== null);
  }

  all(name: string): Param[] {
    return this.params.filter((p) => p.name === name);
  }

  /** The single parameter `name`; throws (a message for the step's detail) when there are two. */
  one(name: string): Param | undefined {
    const found = this.all(name);
    if (found.length > 1) throw new Error(`the proof has ${found.length} "${name}" parameters (expected one)`);
    return found[0];
  }

  /** A required 32-byte hex string (valueString); throws a message for the step's detail otherwise. */
  hash(name: string, why = ''): string {
    const p = this.one(name);
    if (!p) throw new Error(`the proof has no ${name}${why}`);
    if (typeof p.valueString !== 'string' || !HEX32.test(p.valueString)) throw new Error(`the proof's ${name} is not a 32-byte hex string`);
    return bare(p.valueString);
  }

  /** A required non-negative integer; throws a message for the step's detail otherwise. */
  int(name: string, why = ''): number {
    const p = this.one(name);
    if (!p) throw new Error(`the proof has no ${name}${why}`);
    const v = p.valueInteger ?? p.valueUnsignedInt ?? p.valuePositiveInt ?? p.valueInteger64;
    const n = typeof v === 'string' && /^\d{1,15}$/.test(v) ? Number(v) : v;
    if (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) throw new Error(`the proof's ${name} is not a non-negative integer`);
    return n;
  }

  status(): string | undefined {
    const s = this.all('status')[0]?.valueCode;
    return typeof s === 'string' ? s : undefined;
  }

  reason(): string | undefined {
    const r = this.all('reason')[0]?.valueString;
    // The server's own words (no PHI), but from a file: keep it short and on one line.
    return typeof r === 'string' ? r.replace(/\s+/g, ' ').slice(0, 200) : undefined;
  }

  /** Type, id and version of the proof's `resource` reference; throws a message otherwise. */
  reference(): { type: string; id: string; versionId: string } {
    const p = this.one('resource');
    if (!p) throw new Error('the proof has no resource reference');
    const ref = (p.valueReference as { reference?: unknown } | undefined)?.reference;
    const m = typeof ref === 'string' ? REFERENCE_RE.exec(ref) : null;
    if (!m) throw new Error('the proof\'s resource is not a reference of the form Type/id/_history/vid');
    return { type: m[1]!, id: m[2]!, versionId: m[3]! };
  }
}

function loadInputs(resourceFile: string, proofFile: string): { resource: Record<string, unknown>; proof: Proof } {
  const resource = readJson(resourceFile, '--resource');
  if (typeof resource !== 'object' || resource === null || Array.isArray(resource)) {
    throw new UsageError(`the --resource file ${resourceFile} is not a FHIR resource (a JSON object)`);
  }
  const proof = readJson(proofFile, '--proof');
  if (typeof proof !== 'object' || proof === null || Array.isArray(proof)) {
    throw new UsageError(`the --proof file ${proofFile} is not a FHIR Parameters resource (a JSON object)`);
  }
  const p = proof as Record<string, unknown>;
  if (p.resourceType !== 'Parameters' || !Array.isArray(p.parameter)) {
    let found = typeof p.resourceType === 'string' && TYPE_RE.test(p.resourceType) ? `a ${p.resourceType}` : 'not a FHIR resource';
    if (p.resourceType === 'OperationOutcome') {
      // e.g. the server's answer when the ledger is off or the version is unknown.
      const diag = (p.issue as { diagnostics?: unknown }[] | undefined)?.[0]?.diagnostics;
      if (typeof diag === 'string') found += ` ("${diag.replace(/\s+/g, ' ').slice(0, 200)}")`;
    }
    throw new UsageError(`the --proof file ${proofFile} is ${found}, not a Parameters with parameters (the output of $verify)`);
  }
  return { resource: resource as Record<string, unknown>, proof: new Proof(p) };
}

// ---------------------------------------------------------------------------------------------
// The steps

function step(name: StepName, run: () => string): StepResult {
  try {
    return { step: name, ok: true, detail: run() };
  } catch (err) {
    return { step: name, ok: false, detail: (err as Error).message };
  }
}

function checkHash(resource: Record<string, unknown>, proof: Proof): StepResult {
  return step('hash', () => {
    const expected = proof.hash('contentHash');
    let found: string;
    try {
      found = contentHash(resource);
    } catch (err) {
      throw new Error(`the resource cannot be canonicalized (RFC 8785): ${(err as Error).message}`);
    }
    if (found !== expected) throw new Error(`the resource hashes to ${found}, the proof's contentHash is ${expected}: the resource is not the version the proof is for (changed?)`);
    return `SHA-256 of the canonical resource is ${found}, the proof's contentHash`;
  });
}

function checkResource(resource: Record<string, unknown>, proof: Proof): StepResult {
  return step('resource', () => {
    const ref = proof.reference();
    const meta = resource.meta as { versionId?: unknown } | undefined;
    const versionId = typeof meta === 'object' && meta !== null ? meta.versionId : undefined;
    const wrong: string[] = [];
    if (resource.resourceType !== ref.type) wrong.push(`type: expected ${ref.type}, found ${shown(resource.resourceType, TYPE_RE)}`);
    if (resource.id !== ref.id) wrong.push(`id: expected ${ref.id}, found ${shown(resource.id, ID_RE)}`);
    if (versionId !== ref.versionId) wrong.push(`meta.versionId: expected ${ref.versionId}, found ${shown(versionId, ID_RE)}`);
    if (wrong.length) throw new Error(`the resource is not the proof's ${ref.type}/${ref.id}/_history/${ref.versionId}: ${wrong.join('; ')}`);
    return `${ref.type}/${ref.id} version ${ref.versionId}, as the proof's resource reference`;
  });
}

/** Number of hashes in PATH(index, D[size]) (RFC 9162), as MerkleTree.inclusionProof builds it. */
function pathLength(index: number, size: number): number {
  let n = 0;
  for (let m = index, len = size; len > 1; m = Math.floor(m / 2), len = Math.ceil(len / 2)) {
    if ((m % 2 === 0 ? m + 1 : m - 1) < len) n++;
  }
  return n;
}

/** When the proof is pending or lacks a root: why, in the words the report uses. */
function notAnchored(proof: Proof): string | undefined {
  const status = proof.status();
  const reason = proof.reason();
  if (status === 'pending') return `not anchored yet: the proof's status is pending${reason ? ` (${reason})` : ''}; get a new proof from $verify once its batch is anchored`;
  if (proof.all('root').length === 0) return `the proof has no root (status ${status ?? 'missing'}${reason ? `: ${reason}` : ''})`;
  return undefined;
}

function checkPath(proof: Proof): StepResult {
  return step('path', () => {
    const pending = notAnchored(proof);
    if (pending) throw new Error(pending);
    const hash = proof.hash('contentHash');
    const leafIndex = proof.int('leafIndex');
    const treeSize = proof.int('treeSize');
    const root = proof.hash('root');
    const elements = proof.all('auditPath');
    const path: Buffer[] = elements.map((p, i) => {
      if (typeof p.valueString !== 'string' || !HEX32.test(p.valueString)) throw new Error(`auditPath element ${i} is not a 32-byte hex string`);
      return Buffer.from(bare(p.valueString), 'hex');
    });
    if (treeSize === 0 || leafIndex >= treeSize) throw new Error(`leafIndex ${leafIndex} is not in a tree of ${treeSize} leaves`);
    const expectedLength = pathLength(leafIndex, treeSize);
    const computed = rootFromInclusionProof(Buffer.from(hash, 'hex'), leafIndex, treeSize, path);
    if (!computed) throw new Error(`the audit path has ${path.length} hashes; leaf ${leafIndex} of a tree of ${treeSize} needs ${expectedLength}`);
    const found = computed.toString('hex');
    if (found !== root) throw new Error(`the audit path from leaf ${leafIndex} of ${treeSize} leads to root ${found}, the proof's root is ${root}`);
    return `the audit path (${path.length} hashes) from leaf ${leafIndex} of ${treeSize} leads to the proof's root ${root}`;
  });
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The RPC URL as printed: origin only, since a provider URL's path or user part may hold an API key. */
function redactedUrl(rpc: string): string {
  try {
    const u = new URL(rpc);
    return u.pathname === '/' && !u.search && !u.username && !u.password ? u.origin : `${u.origin}/…`;
  } catch {
    return '(rpc)';
  }
}

/** One line of an ethers / fetch error, with the RPC URL redacted. */
function errorLine(err: unknown, rpc: string): string {
  const e = err as { shortMessage?: unknown; message?: unknown };
  const text = typeof e?.shortMessage === 'string' ? e.shortMessage : typeof e?.message === 'string' ? e.message : String(err);
  return text.split(rpc).join(redactedUrl(rpc)).split('\n')[0]!.slice(0, 300);
}

async function checkChain(proof: Proof, rpc: string): Promise<StepResult> {
  let needs: { root: string; chainId: number; contract: string; treeSize: number; blockNumber: number; batchId?: number; txHash?: string; blockTime?: number };
  try {
    const pending = notAnchored(proof);
    if (pending) throw new Error(pending);
    const chainParam = proof.one('chainId');
    if (!chainParam) throw new Error('the proof has no chainId');
    const rawChain = chainParam.valueString ?? chainParam.valueInteger ?? chainParam.valueInteger64;
    const chainId = typeof rawChain === 'string' && /^\d{1,15}$/.test(rawChain) ? Number(rawChain) : rawChain;
    if (typeof chainId !== 'number' || !Number.isSafeInteger(chainId) || chainId <= 0) throw new Error('the proof\'s chainId is not a positive integer');
    const addrParam = proof.one('contractAddress');
    if (!addrParam) throw new Error('the proof has no contractAddress');
    let contract: string;
    try {
      if (typeof addrParam.valueString !== 'string' || !/^0x[0-9a-fA-F]{40}$/.test(addrParam.valueString)) throw new Error();
      contract = getAddress(addrParam.valueString);
    } catch {
      throw new Error('the proof\'s contractAddress is not an EVM address (0x and 40 hex digits, valid checksum)');
    }
    const txParam = proof.one('txHash');
    const txHash = txParam?.valueString;
    if (txParam && (typeof txHash !== 'string' || !/^0x[0-9a-fA-F]{64}$/.test(txHash))) throw new Error('the proof\'s txHash is not a 32-byte 0x hex string');
    const timeParam = proof.one('blockTime');
    let blockTime: number | undefined;
    if (timeParam) {
      const ms = typeof timeParam.valueInstant === 'string' ? Date.parse(timeParam.valueInstant) : NaN;
      if (!Number.isFinite(ms)) throw new Error('the proof\'s blockTime is not an instant');
      blockTime = Math.floor(ms / 1000);
    }
    needs = {
      root: proof.hash('root'),
      chainId,
      contract,
      treeSize: proof.int('treeSize'),
      blockNumber: proof.int('blockNumber'),
      batchId: proof.one('batchId') ? proof.int('batchId') : undefined,
      txHash: txHash as string | undefined,
      blockTime,
    };
  } catch (err) {
    return { step: 'chain', ok: false, detail: (err as Error).message };
  }

  const where = redactedUrl(rpc);
  let client: AnchorRegistryClient | undefined;
  let gaveUp = false;
  const deadline = Date.now() + CHAIN_TIMEOUT_MS;
  const left = () => Math.max(1, deadline - Date.now());
  try {
    try {
      const connecting = AnchorRegistryClient.connect({ rpcUrl: rpc, address: needs.contract });
      // Don't leak the provider when the timeout wins the race.
      connecting.then((c) => { if (gaveUp) c.close(); }, () => undefined);
      client = await withTimeout(connecting, left(), `the node at ${where}`);
    } catch (err) {
      gaveUp = true;
      throw new Error(`cannot use the AnchorRegistry at ${needs.contract} through ${where}: ${errorLine(err, rpc)}`);
    }
    const c = client;
    if (c.chainId !== needs.chainId) throw new Error(`the node at ${where} is chain ${c.chainId}, the proof's chainId is ${needs.chainId}`);
    const root = Buffer.from(needs.root, 'hex');
    let rec: Awaited<ReturnType<AnchorRegistryClient['anchoredAt']>>;
    try {
      rec = await withTimeout(c.anchoredAt(root), left(), `the node at ${where}`);
    } catch (err) {
      throw new Error(`anchoredAt failed: ${errorLine(err, rpc)}`);
    }
    if (!rec) throw new Error(`root ${needs.root} is not anchored in the contract ${c.address} on chain ${c.chainId}`);
    const wrong: string[] = [];
    if (rec.leafCount !== needs.treeSize) wrong.push(`leaf count: the chain anchored this root for a tree of ${rec.leafCount} leaves, the proof's treeSize is ${needs.treeSize}`);
    if (rec.blockNumber !== needs.blockNumber) wrong.push(`block: the chain anchored this root in block ${rec.blockNumber}, the proof's blockNumber is ${needs.blockNumber}`);
    if (needs.batchId !== undefined && rec.batchId !== BigInt(needs.batchId)) wrong.push(`batch: the chain has batch ${rec.batchId}, the proof's batchId is ${needs.batchId}`);
    if (needs.blockTime !== undefined && rec.blockTime !== needs.blockTime) {
      wrong.push(`block time: the chain has ${new Date(rec.blockTime * 1000).toISOString()}, the proof's blockTime is ${new Date(needs.blockTime * 1000).toISOString()}`);
    }
    let tx = '';
    if (needs.txHash !== undefined && wrong.length === 0) {
      let found: Awaited<ReturnType<AnchorRegistryClient['anchorTx']>>;
      try {
        found = await withTimeout(c.anchorTx(root), left(), `the node at ${where}`);
      } catch (err) {
        throw new Error(`cannot find the transaction that anchored root ${needs.root}: ${errorLine(err, rpc)}`);
      }
      if (!found || found.txHash.toLowerCase() !== needs.txHash.toLowerCase()) wrong.push(`transaction: the root was anchored by ${found?.txHash ?? '(none found)'}, the proof's txHash is ${needs.txHash}`);
      else tx = `, tx ${found.txHash}`;
    }
    if (wrong.length) throw new Error(`root ${needs.root} is anchored in ${c.address} on chain ${c.chainId}, but ${wrong.join('; ')}`);
    return {
      step: 'chain',
      ok: true,
      detail: `root ${needs.root} is anchored in ${c.address} on chain ${c.chainId} for ${rec.leafCount} leaves, block ${rec.blockNumber} (${new Date(rec.blockTime * 1000).toISOString()})${tx}`,
    };
  } catch (err) {
    return { step: 'chain', ok: false, detail: (err as Error).message };
  } finally {
    client?.close();
  }
}

/** Runs every step on parsed inputs (exported for tests and embedding; the CLI wraps it). */
export async function verifyProof(resource: Record<string, unknown>, proofJson: Record<string, unknown>, rpc: string): Promise<VerifyReport> {
  const proof = new Proof(proofJson);
  const steps = [checkHash(resource, proof), checkResource(resource, proof), checkPath(proof), await checkChain(proof, rpc)];
  let reference: string | undefined;
  try {
    const r = proof.reference();
    reference = `${r.type}/${r.id}/_history/${r.versionId}`;
  } catch {
    /* reported by the resource step */
  }
  const status = proof.status();
  return { ok: steps.every((s) => s.ok), ...(reference ? { resource: reference } : {}), ...(status && /^[a-z-]{1,32}$/.test(status) ? { status } : {}), steps };
}

function textReport(r: VerifyReport): string {
  const lines = [`custos verify ${r.resource ?? '(proof without a valid resource reference)'}`];
  for (const s of r.steps) lines.push(`  ${s.step.padEnd(10)}${(s.ok ? 'ok' : 'FAILED').padEnd(8)}${s.detail}`);
  const failed = r.steps.filter((s) => !s.ok).map((s) => s.step);
  if (r.ok) lines.push('verified: the resource is the version the proof is for, and its hash is anchored on chain');
  else if (r.status === 'pending') lines.push(`NOT verified: not anchored yet (failed: ${failed.join(', ')})`);
  else lines.push(`NOT verified: failed step${failed.length > 1 ? 's' : ''}: ${failed.join(', ')}`);
  return `${lines.join('\n')}\n`;
}

function usageError(message: string): number {
  process.stderr.write(`custos verify: ${message}\n\n${VERIFY_USAGE}`);
  return 2;
}

/** `custos verify ...`: the exit code (0 verified, 1 a step failed, 2 usage error). */
export async function runVerifyCommand(argv: string[]): Promise<number> {
  let values: { resource?: string; proof?: string; rpc?: string; json?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        resource: { type: 'string' },
        proof: { type: 'string' },
        rpc: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (err) {
    if (argv.includes('--help') || argv.includes('-h')) {
      process.stdout.write(VERIFY_USAGE);
      return 0;
    }
    return usageError((err as Error).message);
  }
  if (values.help) {
    process.stdout.write(VERIFY_USAGE);
    return 0;
  }
  const missing = (['resource', 'proof', 'rpc'] as const).filter((k) => !values[k]);
  if (missing.length) return usageError(`missing ${missing.map((k) => `--${k}`).join(', ')}`);
  const rpc = values.rpc!;
  let rpcUrl: URL;
  try {
    rpcUrl = new URL(rpc);
  } catch {
    return usageError('--rpc is not a URL (e.g. http://127.0.0.1:8545)');
  }
  if (rpcUrl.protocol !== 'http:' && rpcUrl.protocol !== 'https:') return usageError(`--rpc must be an http(s) JSON-RPC URL, not ${rpcUrl.protocol}`);

  let inputs: ReturnType<typeof loadInputs>;
  try {
    inputs = loadInputs(values.resource!, values.proof!);
  } catch (err) {
    if (err instanceof UsageError) return usageError(err.message);
    throw err;
  }
  const report = await verifyProof(inputs.resource, inputs.proof.json, rpc);
  process.stdout.write(values.json ? `${JSON.stringify(report)}\n` : textReport(report));
  return report.ok ? 0 : 1;
}
