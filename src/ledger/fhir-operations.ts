import type { Parameters, ParametersParameter } from '@medplum/fhirtypes';
import { FhirError, type FhirResponse, type RouterOptions } from '../fhir/index.js';
import { contentHash, type Store, type StoredVersion } from '../store/index.js';
import type { LedgerService, VersionProof } from './service.js';
import { scanIntegrity, type IntegrityReport } from './integrity.js';

/** The hash a version was written with, recomputed from what the store returns now. */
export function versionHash(v: StoredVersion): string {
  if (v.deleted) return contentHash({ resourceType: v.resourceType, id: v.id, meta: { versionId: String(v.versionId), lastUpdated: v.lastUpdated }, deleted: true });
  return contentHash(v.resource);
}

const str = (name: string, value: string | undefined): ParametersParameter[] => (value === undefined ? [] : [{ name, valueString: value }]);
const int = (name: string, value: number | undefined): ParametersParameter[] => (value === undefined ? [] : [{ name, valueInteger: value }]);

export function proofParameters(p: VersionProof): Parameters {
  return {
    resourceType: 'Parameters',
    parameter: [
      { name: 'resource', valueReference: { reference: `${p.resourceType}/${p.id}/_history/${p.versionId}` } },
      { name: 'status', valueCode: p.status },
      ...str('reason', p.reason),
      { name: 'contentHash', valueString: p.contentHash },
      ...(p.recomputedHash !== undefined && p.recomputedHash !== p.contentHash ? str('recomputedHash', p.recomputedHash) : []),
      ...int('batchId', p.batchId),
      ...int('leafIndex', p.leafIndex),
      ...int('treeSize', p.treeSize),
      ...(p.auditPath ?? []).map((h) => ({ name: 'auditPath', valueString: h })),
      ...str('root', p.root),
      ...str('chainId', p.chainId === undefined ? undefined : String(p.chainId)),
      ...str('contractAddress', p.contract),
      ...str('txHash', p.txHash),
      ...int('blockNumber', p.blockNumber),
      ...(p.blockTime !== undefined ? [{ name: 'blockTime', valueInstant: new Date(p.blockTime * 1000).toISOString() }] : []),
    ],
  };
}

/** An integrity report as Parameters: ok, counts, and one `finding` part per finding. */
export function integrityParameters(r: IntegrityReport): Parameters {
  return {
    resourceType: 'Parameters',
    parameter: [
      { name: 'ok', valueBoolean: r.ok },
      { name: 'versionsChecked', valueInteger: r.versionsChecked },
      { name: 'auditEventsChecked', valueInteger: r.auditEventsChecked },
      { name: 'batchesChecked', valueInteger: r.batchesChecked },
      { name: 'indexesChecked', valueInteger: r.indexesChecked },
      { name: 'findingCount', valueInteger: r.findings.length + r.findingsOmitted },
      { name: 'durationMs', valueInteger: r.durationMs },
      {
        name: 'chain',
        part: [
          { name: 'checked', valueBoolean: r.chain.checked }, { name: 'rootsChecked', valueInteger: r.chain.rootsChecked },
          ...str('chainId', r.chain.chainId === undefined ? undefined : String(r.chain.chainId)), ...str('contractAddress', r.chain.contract),
          ...int('otherContract', r.chain.otherContract), ...str('skipped', r.chain.skipped),
        ],
      },
      ...r.findings.map((f) => ({
        name: 'finding',
        part: [
          { name: 'kind', valueCode: f.kind },
          ...(f.resourceType !== undefined ? [{ name: 'resourceType', valueCode: f.resourceType }] : []),
          ...str('id', f.id), ...int('versionId', f.versionId), ...int('batchId', f.batchId),
          { name: 'detail', valueString: f.detail },
        ],
      })),
    ],
  };
}

/** $verify (instance and version), $ledger-status and $integrity-check (admin only, see ScopePolicy), for the FHIR router. */
export function ledgerOperations(ledger: LedgerService, store: Store): NonNullable<RouterOptions['operations']> {
  const verify = async (_req: unknown, t: { resourceType: string; id: string; version?: number }): Promise<FhirResponse> => {
    if (ledger.mode === 'off') throw new FhirError(400, 'not-supported', 'Ledger anchoring is turned off on this server (LEDGER=off): there are no proofs to verify');
    let v: StoredVersion | undefined;
    let unreadable: string | undefined;
    try {
      v = t.version === undefined ? await store.read(t.resourceType, t.id) : await store.vread(t.resourceType, t.id, t.version);
    } catch (err) {
      // A body that no longer decrypts (AES-GCM tag) has been changed in the database.
      unreadable = (err as Error).message;
    }
    const versionId = v?.versionId ?? t.version ?? store.ledger().currentVersion(t.resourceType, t.id);
    if (!v && !unreadable) throw new FhirError(404, 'not-found', t.version === undefined ? `${t.resourceType}/${t.id} is not known` : `${t.resourceType}/${t.id} has no version ${t.version}`);
    if (versionId === undefined) throw new FhirError(404, 'not-found', `${t.resourceType}/${t.id} is not known`);
    const proof = await ledger.proof(t.resourceType, t.id, versionId, v ? versionHash(v) : 'unreadable');
    if (!proof) throw new FhirError(404, 'not-found', `${t.resourceType}/${t.id} has no version ${versionId}`);
    if (unreadable) Object.assign(proof, { status: 'mismatch', reason: 'the stored version cannot be decrypted: its bytes were changed', recomputedHash: undefined });
    return { status: 200, body: proofParameters(proof) };
  };
  const status = async (): Promise<FhirResponse> => {
    const s = ledger.status();
    const parameter: ParametersParameter[] = [
      { name: 'mode', valueCode: s.mode },
      ...str('chainId', s.chainId === undefined ? undefined : String(s.chainId)),
      ...str('rpcUrl', s.rpcUrl),
      ...str('contractAddress', s.contract),
      ...str('anchorer', s.anchorer),
      { name: 'backlog', valueInteger: s.backlog },
      ...(s.lastBatch ? [{
        name: 'lastBatch',
        part: [
          { name: 'batchId', valueInteger: s.lastBatch.id }, { name: 'size', valueInteger: s.lastBatch.size }, { name: 'status', valueCode: s.lastBatch.status },
          ...str('txHash', s.lastBatch.txHash), ...int('blockNumber', s.lastBatch.blockNumber),
          ...(s.lastBatch.blockTime !== undefined ? [{ name: 'blockTime', valueInstant: new Date(s.lastBatch.blockTime * 1000).toISOString() }] : []),
        ],
      }] : []),
      ...str('lastError', s.lastError),
    ];
    return { status: 200, body: { resourceType: 'Parameters', parameter } };
  };
  let scanning = false;
  const integrity = async (): Promise<FhirResponse> => {
    if (scanning) throw new FhirError(409, 'conflict', 'An integrity scan is already running on this server; try again when it has finished');
    scanning = true;
    try {
      const report = await scanIntegrity({
        store: store.integrity(), maxFindings: 1000,
        ...(ledger.chain ? { chain: ledger.chain } : { skipChain: ledger.mode === 'off' ? 'ledger anchoring is off' : 'no chain client' }),
      });
      return { status: 200, body: integrityParameters(report) };
    } finally {
      scanning = false;
    }
  };
  return { instance: { $verify: verify }, system: { '$ledger-status': status, '$integrity-check': integrity } };
}
