/**
 * "Is this value genuine?": the browser's own check of one resource version. The server supplies
 * the version and its proof; the browser recomputes the content hash, walks the Merkle audit path
 * to a root, and asks the chain (not the server) whether that root is anchored. Each step reports
 * passed, failed, waiting or not checked, in plain words.
 */
import { anchoredAt, chainId } from './chain.js';
import { contentHash } from './content-hash.js';
import { fromHex, shortHash, toHex } from './hex.js';
import { rootFromInclusionProof } from './merkle.js';
import { parseProof, type VersionProof } from './proof.js';

export type StepStatus = 'running' | 'passed' | 'failed' | 'waiting' | 'skipped';
export type StepKey = 'fetch' | 'hash' | 'path' | 'chain';

export interface Step { key: StepKey; title: string; status: StepStatus; detail?: string }

export const STEP_TITLES: Record<StepKey, string> = {
  fetch: 'The server gave this value and its proof',
  hash: 'Your browser worked out the value\'s fingerprint, and it matches the one recorded when the value was stored',
  path: 'The fingerprint leads, through the proof, to the seal of its batch',
  chain: 'The chain itself confirms that seal was recorded',
};

export interface CheckTarget { resourceType: string; id: string; versionId: string }

export interface CheckDeps {
  /** A FHIR GET relative to the base (the session's). */
  get(path: string): Promise<unknown>;
  chainRpcUrl: string | undefined;
  /** Text for an error (the portal's plainError). */
  describe(err: unknown): string;
  /** Called with the steps as they change. */
  onStep?(steps: Step[]): void;
}

export interface CheckResult { steps: Step[]; outcome: 'genuine' | 'failed' | 'not-anchored' }

const when = (unixSeconds: number) => new Date(unixSeconds * 1000).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' });

export async function checkVersion(t: CheckTarget, deps: CheckDeps): Promise<CheckResult> {
  const steps: Step[] = (Object.keys(STEP_TITLES) as StepKey[]).map((key) => ({ key, title: STEP_TITLES[key], status: 'running' }));
  const set = (key: StepKey, status: StepStatus, detail?: string) => {
    const i = steps.findIndex((s) => s.key === key);
    steps[i] = { key, title: STEP_TITLES[key], status, ...(detail !== undefined ? { detail } : {}) };
    deps.onStep?.(steps.map((s) => ({ ...s })));
  };
  const skipRest = (from: StepKey, detail: string) => {
    for (const s of steps.slice(steps.findIndex((x) => x.key === from))) if (s.status === 'running') set(s.key, 'skipped', detail);
  };
  const done = (outcome: CheckResult['outcome']): CheckResult => ({ steps, outcome });
  deps.onStep?.(steps.map((s) => ({ ...s })));

  // 1. The version and its proof, from the server.
  const ref = `${t.resourceType}/${encodeURIComponent(t.id)}/_history/${encodeURIComponent(t.versionId)}`;
  let proof: VersionProof;
  try {
    proof = parseProof(await deps.get(`${ref}/$verify`) as Parameters<typeof parseProof>[0]);
  } catch (err) {
    set('fetch', 'failed', `The server gave no proof for this value: ${serverError(err, deps)}`);
    skipRest('hash', 'Not checked, because the step before failed.');
    return done('failed');
  }
  let resource: unknown;
  try {
    resource = await deps.get(ref);
  } catch (err) {
    const server = proof.reason ? ` The server itself reports: ${proof.reason}.` : '';
    set('fetch', 'failed', `The server could not give back this value as it was stored: ${serverError(err, deps)}.${server}`);
    skipRest('hash', 'Not checked, because the step before failed.');
    return done('failed');
  }
  set('fetch', 'passed', `Version ${t.versionId} of this record.`);

  // 2. The fingerprint, recomputed here.
  let mine: string;
  try {
    mine = await contentHash(resource);
  } catch (err) {
    set('hash', 'failed', `The value could not be fingerprinted: ${(err as Error).message}`);
    skipRest('path', 'Not checked, because the step before failed.');
    return done('failed');
  }
  const hashOk = mine === proof.contentHash;
  if (hashOk) set('hash', 'passed', `Fingerprint ${shortHash(mine)}`);
  else set('hash', 'failed', `This value's fingerprint is ${shortHash(mine)}, but the one recorded when it was stored is ${shortHash(proof.contentHash ?? 'missing')}: the value or its record was changed after it was stored.`);

  // 3. The audit path, walked from the browser's own hash.
  if (proof.status === 'pending' && hashOk) {
    set('path', 'waiting', 'Not anchored yet, try again in a minute: the server seals new values in batches on the chain.');
    skipRest('chain', 'Not checked yet: the value is not anchored yet.');
    return done('not-anchored');
  }
  if (proof.leafIndex === undefined || proof.treeSize === undefined || !proof.root) {
    const why = proof.reason ? ` (the server reports: ${proof.reason})` : '';
    set('path', hashOk ? 'failed' : 'skipped', `The server gave no proof path for this value${why}.`);
    skipRest('chain', 'Not checked: there is no seal to ask the chain about.');
    return done('failed');
  }
  let root: Uint8Array | undefined;
  try {
    root = await rootFromInclusionProof(fromHex(mine), proof.leafIndex, proof.treeSize, proof.auditPath.map(fromHex));
  } catch {
    root = undefined;
  }
  const rootHex = root ? toHex(root) : undefined;
  if (!rootHex) {
    set('path', 'failed', 'The proof path is malformed: it cannot lead from this value to any seal.');
    skipRest('chain', 'Not checked, because the step before failed.');
    return done('failed');
  }
  if (rootHex !== proof.root.replace(/^0x/, '').toLowerCase()) {
    set('path', 'failed', `The proof leads to the seal ${shortHash(rootHex)}, not to the batch's seal ${shortHash(proof.root)}.`);
    skipRest('chain', 'Not checked, because the step before failed.');
    return done('failed');
  }
  set('path', 'passed', `Seal ${shortHash(rootHex)}, value ${proof.leafIndex + 1} of ${proof.treeSize} in its batch.`);

  // 4. The chain, asked directly.
  if (!deps.chainRpcUrl || !proof.contractAddress) {
    set('chain', 'failed', 'The portal does not know where to reach the chain, so it cannot ask it.');
    return done('failed');
  }
  try {
    const id = await chainId(deps.chainRpcUrl);
    if (proof.chainId !== undefined && id !== proof.chainId) {
      set('chain', 'failed', `The chain the portal reaches is chain ${id}, but the proof names chain ${proof.chainId}.`);
      return done('failed');
    }
    const anchor = await anchoredAt(deps.chainRpcUrl, proof.contractAddress, rootHex);
    if (!anchor) {
      set('chain', 'failed', `The chain has no record of the seal ${shortHash(rootHex)}.`);
      return done('failed');
    }
    if (anchor.leafCount !== proof.treeSize) {
      set('chain', 'failed', `The chain recorded this seal for ${anchor.leafCount} values, but the proof says ${proof.treeSize}.`);
      return done('failed');
    }
    set('chain', 'passed', `Recorded on ${when(anchor.timestamp)} in block ${anchor.blockNumber} of chain ${id}.`);
  } catch (err) {
    set('chain', 'failed', (err as Error).message);
    return done('failed');
  }
  return done(steps.every((s) => s.status === 'passed') ? 'genuine' : 'failed');
}

function statusOf(err: unknown): number {
  const s = (err as { status?: unknown }).status;
  return typeof s === 'number' ? s : 0;
}

function serverError(err: unknown, deps: CheckDeps): string {
  if (statusOf(err) >= 500) {
    return /integrity check/.test((err as Error).message ?? '')
      ? 'the server found that its stored copy was changed outside the server (it failed its integrity check)'
      : 'the server met an error while reading its stored copy, which is what a stored copy that was changed or damaged gives';
  }
  return deps.describe(err);
}
