/** The server's consent operations as the portal uses them (src/consent/chain-operations.ts, explain.ts). */
import type { Session } from '../session.js';
import type { TypedData } from '../wallet/holder.js';
import { param, parametersOf, type Parameters } from './params.js';

export interface KeyState {
  pid: string;
  key?: string;
  contractAddress: string;
  chainId: string;
  recoveryKey?: string;
  recoveryExecutableAt?: string;
}

export async function keyState(session: Session): Promise<KeyState> {
  const p = await session.get<Parameters>(`Patient/${session.patientId}/$consent-key`);
  const s: KeyState = { pid: param(p, 'pid')!, contractAddress: param(p, 'contractAddress')!, chainId: param(p, 'chainId')! };
  for (const k of ['key', 'recoveryKey', 'recoveryExecutableAt'] as const) { const v = param(p, k); if (v) s[k] = v; }
  return s;
}

export interface BindOffer { typedData: TypedData; signer: string; deadline: string; nonce: string }

export async function bindOffer(session: Session, address: string): Promise<BindOffer | undefined> {
  const p = await session.get<Parameters>(`Patient/${session.patientId}/$consent-key?address=${encodeURIComponent(address)}`);
  const td = param(p, 'typedData');
  if (!td) return undefined; // already bound
  return { typedData: JSON.parse(td) as TypedData, signer: param(p, 'signer')!, deadline: param(p, 'deadline')!, nonce: param(p, 'nonce')! };
}

export function bindKey(session: Session, address: string, offer: BindOffer, signature: string): Promise<Parameters> {
  return session.post<Parameters>(`Patient/${session.patientId}/$consent-key`, parametersOf({ address, deadline: offer.deadline, nonce: offer.nonce, signature }));
}

export type Action = 'grant' | 'revoke';

export interface SignOffer { typedData: TypedData; key: string; deadline: string; nonce: string; consentHash: string }

export async function signOffer(session: Session, consentId: string, action: Action): Promise<SignOffer> {
  const p = await session.get<Parameters>(`Consent/${consentId}/$consent-typed-data?action=${action}`);
  return { typedData: JSON.parse(param(p, 'typedData')!) as TypedData, key: param(p, 'key')!, deadline: param(p, 'deadline')!, nonce: param(p, 'nonce')!, consentHash: param(p, 'consentHash')! };
}

export function relay(session: Session, consentId: string, action: Action, offer: SignOffer, signature: string): Promise<Parameters> {
  return session.post<Parameters>(`Consent/${consentId}/$consent-sign`, parametersOf({ action, signature, deadline: offer.deadline, nonce: offer.nonce, consentHash: offer.consentHash }));
}

/** active | pending-signature | revoked | hash-mismatch | off */
export interface ChainStatus { status: string; consentHash: string; pid?: string; reason?: string }

export async function chainStatus(session: Session, consentId: string): Promise<ChainStatus> {
  const p = await session.get<Parameters>(`Consent/${consentId}/$consent-status`);
  const s: ChainStatus = { status: param(p, 'status') ?? 'unknown', consentHash: param(p, 'consentHash') ?? '' };
  const pid = param(p, 'pid'); if (pid) s.pid = pid;
  const reason = param(p, 'reason'); if (reason) s.reason = reason;
  return s;
}

/** Asks $consent-status until the chain shows `want` (the relay already waited for the block; a direct transaction may lag). */
export async function waitForStatus(session: Session, consentId: string, want: string, tries = 40): Promise<ChainStatus> {
  let last = await chainStatus(session, consentId);
  for (let i = 0; i < tries && last.status !== want; i++) {
    await new Promise((r) => setTimeout(r, 500));
    last = await chainStatus(session, consentId);
  }
  return last;
}

/** The chain's JSON-RPC URL: from the portal's settings, else from the server's ledger status. */
export async function chainRpcUrl(session: Session): Promise<string | undefined> {
  if (session.config.chainRpcUrl) return session.config.chainRpcUrl;
  try { return param(await session.get<Parameters>('$ledger-status'), 'rpcUrl'); } catch { return undefined; }
}

export type Decision = 'permit' | 'deny' | 'depends-on-data';

export async function explainAccess(session: Session, actor: string, resource: string): Promise<{ decision: Decision; basis?: string }> {
  const p = await session.get<Parameters>(`Patient/${session.patientId}/$explain-access?actor=${encodeURIComponent(actor)}&resource=${encodeURIComponent(resource)}`);
  const out: { decision: Decision; basis?: string } = { decision: param(p, 'decision') as Decision };
  const basis = param(p, 'basis'); if (basis) out.basis = basis;
  return out;
}
