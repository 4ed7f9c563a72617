/**
 * Tamper detection (issue 6): re-reads every stored version, decrypts it, recomputes its content
 * hash and compares it with the recorded one; checks that every ledger batch's recorded hashes
 * still give its recorded root and (given a chain client) that confirmed roots are on chain; and
 * re-derives the search-index rows of current versions and compares them with the stored rows.
 *
 * Read-only. Findings name ids, versions, batches, hashes and parameter names only: never
 * resource content (index values are compared but not reported).
 */
import type { IndexRowTuple, IntegrityReader, LedgerBatch, MasterKeys, ScannedVersion } from '../store/index.js';
import { openSqliteReader } from '../store/index.js';
import { getTypeSearchParameters } from '../fhir/definitions.js';
import { AUDIT_SEQUENCE, AUDIT_SEQUENCE_URL } from '../fhir/audit-port.js';
import { versionHash } from './fhir-operations.js';
import { HASH_BYTES, MerkleTree } from './merkle.js';

export type IntegrityFindingKind = 'undecryptable' | 'hash_mismatch' | 'batch_root_mismatch' | 'root_missing_on_chain' | 'index_mismatch' | 'audit_sequence_gap';

export interface IntegrityFinding {
  kind: IntegrityFindingKind;
  resourceType?: string;
  id?: string;
  versionId?: number;
  batchId?: number;
  /** What differs, without PHI: ids, hashes, parameter names, counts. */
  detail: string;
}

export interface IntegrityReport {
  versionsChecked: number;
  /** Entries of the audit journal (AuditEvents) read, hashed and compared with their rows. */
  auditEventsChecked: number;
  batchesChecked: number;
  /** Current versions whose stored index rows were compared with rows re-derived from them. */
  indexesChecked: number;
  findings: IntegrityFinding[];
  /** Findings beyond `maxFindings` that were counted but not listed. */
  findingsOmitted: number;
  ok: boolean;
  durationMs: number;
  /** Whether confirmed batch roots were looked up on chain, and if not, why. */
  chain: { checked: boolean; rootsChecked: number; chainId?: number; contract?: string; otherContract?: number; skipped?: string };
}

export interface IntegrityProgress {
  phase: 'versions' | 'audit' | 'batches' | 'chain';
  versionsChecked: number;
  versionsTotal: number;
  auditEventsChecked: number;
  /** AuditEvents numbered when the scan began (the journal should hold each). */
  auditEventsTotal: number;
  batchesChecked: number;
}

/** What the scan needs from a chain client (AnchorRegistryClient; read-only use). */
export interface ChainRoots {
  readonly chainId: number;
  readonly address: string;
  anchoredAt(root: Buffer): Promise<{ leafCount: number } | undefined>;
}

export interface IntegrityScanOptions {
  /** The store to scan; or `file` + `keys` to open that SQLite database read-only for the scan. */
  store?: IntegrityReader;
  file?: string;
  keys?: MasterKeys;
  /** Checks that confirmed roots are on this chain; omitted = no chain check (`skipChain` says why). */
  chain?: ChainRoots;
  /** Why there is no chain check, for the report. */
  skipChain?: string;
  /** Versions per page (one read snapshot each; default 250). */
  pageSize?: number;
  /** Findings listed at most (the rest are counted; default 10,000). */
  maxFindings?: number;
  onProgress?: (p: IntegrityProgress) => void;
  signal?: AbortSignal;
}

const HEX64 = /^[0-9a-f]{64}$/;
/** A recorded hash as it may be reported: tampered columns could hold anything, so only real hashes are echoed. */
const shownHash = (h: string) => (HEX64.test(h) ? h : '(not a SHA-256 hex string)');
const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));
/** The scan runs beside the server: it gives the event loop a turn at least this often (ms). */
const SLICE_MS = 20;
const CHAIN_CONCURRENCY = 8;

export async function scanIntegrity(o: IntegrityScanOptions): Promise<IntegrityReport> {
  const started = Date.now();
  let opened: ReturnType<typeof openSqliteReader> | undefined;
  let store = o.store;
  if (!store) {
    if (!o.file || !o.keys) throw new Error('scanIntegrity needs a store, or a database file and its master keys');
    opened = openSqliteReader({ file: o.file, keys: o.keys });
    store = opened.integrity();
  }
  try {
    return await scan(store, o, started);
  } finally {
    opened?.close();
  }
}

async function scan(store: IntegrityReader, o: IntegrityScanOptions, started: number): Promise<IntegrityReport> {
  const pageSize = Math.max(1, o.pageSize ?? 250);
  const maxFindings = Math.max(0, o.maxFindings ?? 10_000);
  const findings: IntegrityFinding[] = [];
  let omitted = 0;
  const report = (f: IntegrityFinding) => {
    if (findings.length < maxFindings) findings.push(f);
    else omitted++;
  };
  // The audit counter first: every number it has given out was committed before the extent is read.
  const auditCount = store.sequenceValue(AUDIT_SEQUENCE);
  const auditSeqs: number[] = [];
  const { count: versionsTotal, maxSeq } = store.versionExtent();
  let versionsChecked = 0;
  let auditEventsChecked = 0;
  let batchesChecked = 0;
  let indexesChecked = 0;
  const progress = (phase: IntegrityProgress['phase']) => o.onProgress?.({ phase, versionsChecked, versionsTotal, auditEventsChecked, auditEventsTotal: auditCount, batchesChecked });

  // Versions, in seq order, up to the last one stored when the scan began.
  for (let after = 0; ;) {
    o.signal?.throwIfAborted();
    const page = store.scanVersions(after, maxSeq, pageSize);
    if (page.length === 0) break;
    let slice = Date.now();
    for (const v of page) {
      checkVersion(store, v, report);
      if (v.current && v.version) indexesChecked++;
      if (v.resourceType === 'AuditEvent' && v.version?.resource) {
        const n = (v.version.resource as { extension?: Array<{ url?: string; valueInteger?: number }> }).extension?.find((x) => x.url === AUDIT_SEQUENCE_URL)?.valueInteger;
        if (n !== undefined) auditSeqs.push(n);
      }
      if (Date.now() - slice >= SLICE_MS) {
        await yieldToLoop();
        slice = Date.now();
      }
    }
    versionsChecked += page.length;
    after = page[page.length - 1]!.seq;
    progress('versions');
    await yieldToLoop();
  }

  // Current-version pointers must name a stored version (else the version row was removed).
  for (let after = 0; ;) {
    o.signal?.throwIfAborted();
    const page = store.currentPointers(after, 1000);
    if (page.length === 0) break;
    for (const c of page) {
      if (!c.stored) {
        report({ kind: 'index_mismatch', resourceType: c.resourceType, id: c.id, versionId: c.versionId, detail: `${c.resourceType}/${c.id}: its current version ${c.versionId} is not stored (the version row was removed)` });
      }
    }
    after = page[page.length - 1]!.pk;
    await yieldToLoop();
  }

  // The audit journal: each entry readable, hashing to its recorded hash, its rows what it says.
  for (let after = 0; ;) {
    o.signal?.throwIfAborted();
    const page = store.scanAuditJournal(after, pageSize);
    if (page.length === 0) break;
    let slice = Date.now();
    for (const v of page) {
      checkVersion(store, v, report);
      const n = (v.version?.resource as { extension?: Array<{ url?: string; valueInteger?: number }> } | undefined)?.extension?.find((x) => x.url === AUDIT_SEQUENCE_URL)?.valueInteger;
      if (n !== undefined) auditSeqs.push(n);
      if (Date.now() - slice >= SLICE_MS) {
        await yieldToLoop();
        slice = Date.now();
      }
    }
    auditEventsChecked += page.length;
    after = page[page.length - 1]!.seq;
    progress('audit');
    await yieldToLoop();
  }

  // The audit trail: AuditEvents 1..n, each once (a removed one leaves a gap).
  checkAuditSequence(auditSeqs, auditCount, report);

  // Batches: the recorded hashes of each range must still give the recorded root.
  const onChain: LedgerBatch[] = [];
  let otherContract = 0;
  for (let after = 0; ;) {
    o.signal?.throwIfAborted();
    const batches = store.batches(after, 100);
    if (batches.length === 0) break;
    for (const b of batches) {
      checkBatch(store, b, report);
      batchesChecked++;
      if (o.chain && b.status === 'confirmed') {
        if (b.chainId === o.chain.chainId && b.contract.toLowerCase() === o.chain.address.toLowerCase()) onChain.push(b);
        else otherContract++;
      }
      await yieldToLoop();
    }
    after = batches[batches.length - 1]!.id;
    progress('batches');
  }

  // Confirmed roots on chain.
  const chain: IntegrityReport['chain'] = { checked: false, rootsChecked: 0 };
  if (o.chain) {
    Object.assign(chain, { checked: true, chainId: o.chain.chainId, contract: o.chain.address }, otherContract ? { otherContract } : {});
    const missing: LedgerBatch[] = [];
    let next = 0;
    let failure: string | undefined;
    const worker = async () => {
      while (next < onChain.length && failure === undefined) {
        const b = onChain[next++]!;
        try {
          // A recorded root that is not 32 bytes cannot be on chain (and is reported as a root mismatch too).
          if (b.root.length !== HASH_BYTES || !(await o.chain!.anchoredAt(b.root))) missing.push(b);
          chain.rootsChecked++;
        } catch (err) {
          failure ??= ((err as Error).message ?? String(err)).split('\n')[0];
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(CHAIN_CONCURRENCY, onChain.length) }, worker));
    progress('chain');
    if (failure !== undefined) Object.assign(chain, { checked: false, skipped: `the chain stopped answering: ${failure}` });
    for (const b of missing.sort((x, y) => x.id - y.id)) {
      report({
        kind: 'root_missing_on_chain', batchId: b.id,
        detail: `batch ${b.id} (seq ${b.firstSeq}..${b.lastSeq}) is recorded as confirmed${b.txHash ? ` in tx ${b.txHash}` : ''}${b.blockNumber !== undefined ? ` at block ${b.blockNumber}` : ''}, `
          + `but contract ${o.chain.address} on chain ${o.chain.chainId} does not hold its root ${b.root.length === HASH_BYTES ? b.root.toString('hex') : '(not 32 bytes)'}`,
      });
    }
  } else if (o.skipChain) {
    chain.skipped = o.skipChain;
  }

  return {
    versionsChecked, auditEventsChecked, batchesChecked, indexesChecked, findings, findingsOmitted: omitted,
    ok: findings.length === 0 && omitted === 0, durationMs: Date.now() - started, chain,
  };
}

function checkVersion(store: IntegrityReader, v: ScannedVersion, report: (f: IntegrityFinding) => void): void {
  const who = { resourceType: v.resourceType, id: v.id, versionId: v.versionId };
  if (!v.version) {
    report({ kind: 'undecryptable', ...who, detail: `${v.resourceType}/${v.id}/_history/${v.versionId} cannot be read: ${v.error ?? 'unknown reason'}` });
    return;
  }
  const recomputed = versionHash(v.version);
  if (recomputed !== v.contentHash) {
    report({ kind: 'hash_mismatch', ...who, detail: `${v.resourceType}/${v.id}/_history/${v.versionId}: recorded content hash ${shownHash(v.contentHash)}, recomputed ${recomputed}` });
  }
  if (!v.current) return;
  let expected: IndexRowTuple[];
  try {
    expected = v.deleted || !v.version.resource ? [] : store.derivedIndexRows(v.version.resource);
  } catch {
    report({ kind: 'index_mismatch', ...who, detail: `${v.resourceType}/${v.id}: its index rows could not be derived from the stored resource` });
    return;
  }
  const diff = compareRows(expected, v.indexRows ?? [], paramNamer(v.resourceType));
  if (diff) report({ kind: 'index_mismatch', ...who, detail: `${v.resourceType}/${v.id}/_history/${v.versionId}: stored index rows differ from the resource: ${diff}` });
}

function checkBatch(store: IntegrityReader, b: LedgerBatch, report: (f: IntegrityFinding) => void): void {
  const where = `batch ${b.id} (seq ${b.firstSeq}..${b.lastSeq}, ${b.status})`;
  const leaves = store.leaves(b);
  if (leaves.length !== b.size) {
    report({ kind: 'batch_root_mismatch', batchId: b.id, detail: `${where} was recorded with ${b.size} versions, its range now holds ${leaves.length}` });
    return;
  }
  const bad = leaves.find((l) => l.hash.length !== HASH_BYTES);
  if (bad) {
    report({ kind: 'batch_root_mismatch', batchId: b.id, detail: `${where}: the recorded content hash at seq ${bad.seq} is not a SHA-256 hex string, so the batch cannot give its root` });
    return;
  }
  const root = new MerkleTree(leaves.map((l) => l.hash)).root;
  if (!root.equals(b.root)) {
    report({ kind: 'batch_root_mismatch', batchId: b.id, detail: `${where}: its recorded content hashes give root ${root.toString('hex')}, the recorded (anchored) root is ${b.root.length === HASH_BYTES ? b.root.toString('hex') : '(not 32 bytes)'}` });
  }
}

/**
 * Parameter names as reported: a stored row's param column may have been changed to anything, so
 * only names of the type's search parameters (and their derived `:text` rows) are echoed.
 */
function paramNamer(resourceType: string): (param: string) => string {
  let known: Record<string, unknown> = {};
  try {
    known = getTypeSearchParameters(resourceType);
  } catch { /* an unknown type: no names */ }
  return (param) => (Object.hasOwn(known, param.replace(/:text$/, '')) ? param : '<not a search parameter of this type>');
}

function encodeValue(v: string | number | null): string {
  if (v === null) return '-';
  if (typeof v === 'number') return `n${Object.is(v, -0) ? 0 : v}`;
  return `s${v}`;
}

/**
 * Compares two lists of index rows as multisets of (table, param, columns...) tuples. Undefined
 * when equal; otherwise per table and parameter how many rows were added, removed or changed
 * (a removed and an added row of the same parameter count as one changed).
 */
export function compareRows(expected: IndexRowTuple[], stored: IndexRowTuple[], nameOf: (param: string) => string = (p) => p): string | undefined {
  const key = (t: IndexRowTuple) => `${t.table}\u0000${t.param}\u0000${t.values.map(encodeValue).join('\u0000')}`;
  const counts = new Map<string, { t: IndexRowTuple; n: number }>();
  for (const t of stored) {
    const k = key(t);
    const c = counts.get(k);
    if (c) c.n++;
    else counts.set(k, { t, n: 1 });
  }
  const byParam = new Map<string, { missing: number; added: number }>();
  const tally = (t: IndexRowTuple) => {
    const k = `${t.table} ${nameOf(t.param)}`;
    let e = byParam.get(k);
    if (!e) byParam.set(k, (e = { missing: 0, added: 0 }));
    return e;
  };
  for (const t of expected) {
    const c = counts.get(key(t));
    if (c && c.n > 0) c.n--;
    else tally(t).missing++;
  }
  for (const { t, n } of counts.values()) if (n > 0) tally(t).added += n;
  if (byParam.size === 0) return undefined;
  return [...byParam.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, e]) => {
    const changed = Math.min(e.missing, e.added);
    const parts = [
      changed ? `${changed} changed` : '',
      e.added - changed ? `${e.added - changed} added` : '',
      e.missing - changed ? `${e.missing - changed} removed` : '',
    ].filter(Boolean);
    return `${k} (${parts.join(', ')})`;
  }).join('; ');
}

/** Reports numbers in 1..count that no AuditEvent carries, or that several do (a removed or copied one). */
export function checkAuditSequence(seqs: number[], count: number, report: (f: IntegrityFinding) => void): void {
  const seen = new Map<number, number>();
  for (const n of seqs) if (n <= count) seen.set(n, (seen.get(n) ?? 0) + 1);
  const missing: number[] = [];
  for (let n = 1; n <= count; n++) if (!seen.has(n)) missing.push(n);
  const ranges: string[] = [];
  for (let i = 0; i < missing.length;) {
    let j = i;
    while (j + 1 < missing.length && missing[j + 1] === missing[j]! + 1) j++;
    ranges.push(i === j ? `${missing[i]}` : `${missing[i]}-${missing[j]}`);
    i = j + 1;
  }
  if (ranges.length) report({ kind: 'audit_sequence_gap', detail: `the audit trail has ${count} AuditEvents, but number(s) ${ranges.slice(0, 20).join(', ')}${ranges.length > 20 ? ', ...' : ''} are missing (removed from the database)` });
  for (const [n, times] of seen) if (times > 1) report({ kind: 'audit_sequence_gap', detail: `AuditEvent number ${n} appears ${times} times` });
}
