/** The Parameters of `$verify` (src/ledger/fhir-operations.ts proofParameters) as a plain object. */
export interface VersionProof {
  status: 'pending' | 'anchored' | 'mismatch' | string;
  reason?: string;
  contentHash?: string;
  leafIndex?: number;
  treeSize?: number;
  auditPath: string[];
  root?: string;
  chainId?: number;
  contractAddress?: string;
  txHash?: string;
  blockNumber?: number;
}

interface Param { name: string; valueString?: string; valueCode?: string; valueInteger?: number }

export function parseProof(p: { resourceType?: string; parameter?: Param[] }): VersionProof {
  if (p?.resourceType !== 'Parameters') throw new Error('The server answered something other than a proof.');
  const ps = p.parameter ?? [];
  const one = (n: string) => ps.find((x) => x.name === n);
  const s = (n: string) => one(n)?.valueString;
  const i = (n: string) => one(n)?.valueInteger;
  const chain = s('chainId');
  const proof: VersionProof = { status: one('status')?.valueCode ?? 'unknown', auditPath: ps.filter((x) => x.name === 'auditPath').map((x) => x.valueString ?? '') };
  const set = <K extends keyof VersionProof>(k: K, v: VersionProof[K] | undefined) => { if (v !== undefined) proof[k] = v; };
  set('reason', s('reason'));
  set('contentHash', s('contentHash'));
  set('leafIndex', i('leafIndex'));
  set('treeSize', i('treeSize'));
  set('root', s('root'));
  set('chainId', chain === undefined ? undefined : Number(chain));
  set('contractAddress', s('contractAddress'));
  set('txHash', s('txHash'));
  set('blockNumber', i('blockNumber'));
  return proof;
}
