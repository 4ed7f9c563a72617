/** Failures of signing, relaying and the chain said in words a patient understands. */
import { Interface, isError } from 'ethers';
import { plainError } from '../components/notice.js';
import { FhirProblem } from '../session.js';
import { WalletLocked } from '../wallet/eip1193.js';
import { WrongPassphrase } from '../wallet/keystore.js';
import { REGISTRY_ABI } from './direct.js';

/** A problem the portal found itself before anything was sent. */
export class KeyProblem extends Error {}

const registry = new Interface(REGISTRY_ABI);

const CHAIN_DOWN = 'The consent ledger (the blockchain that records your permissions) cannot be reached right now. Nothing was changed; try again in a few minutes.';
export const EXPIRED = 'The signature came too late: a signature is only valid for a limited time. Nothing was changed; prepare it again and sign.';
const WRONG_KEY = 'This signature was made with a different key than the one linked to your record, so it was refused. Choose the linked key on the My key page (or link this one), then sign again.';
const REJECTED = 'You declined in your wallet, so nothing was signed or sent.';
const REVERTS: Record<string, string> = {
  NotKeyHolder: 'The ledger refused: this key is not the one linked to your record.',
  NotActive: 'The ledger says this permission is not in force (it may already be withdrawn).',
  AlreadyActive: 'The ledger says this permission is already in force.',
  NoKey: 'No key is linked to your record yet: link one on the My key page first.',
  NoRecovery: 'There is no pending key change to cancel any more.',
  Expired: EXPIRED,
  BadSignature: WRONG_KEY,
  BadNonce: 'This signature was already used or another one came first. Prepare it again and sign.',
};

export function consentError(err: unknown): string {
  if (err instanceof KeyProblem || err instanceof WrongPassphrase || err instanceof WalletLocked) return err.message;
  const code = (err as { code?: unknown; error?: { code?: unknown }; info?: { error?: { code?: unknown } } })?.code;
  const inner = (err as { error?: { code?: unknown } })?.error?.code ?? (err as { info?: { error?: { code?: unknown } } })?.info?.error?.code;
  if (code === 4001 || inner === 4001 || isError(err, 'ACTION_REJECTED')) return REJECTED;
  if (code === 4100 || code === -32002 || inner === 4100) return new WalletLocked().message;
  if (err instanceof FhirProblem) {
    const m = err.message;
    if (/deadline .*has passed/i.test(m)) return EXPIRED;
    if (/signature is by .*not by|must be approved by the key bound now|first key must sign its own binding/i.test(m)) return WRONG_KEY;
    if (/no signing key bound/i.test(m)) return REVERTS.NoKey!;
    if (/cannot be reached|ECONNREFUSED/i.test(m) || err.status === 503) return CHAIN_DOWN;
    if (/nonce/i.test(m)) return REVERTS.BadNonce!;
    if (/already active on chain/i.test(m)) return REVERTS.AlreadyActive!;
    if (/not active on chain/i.test(m)) return REVERTS.NotActive!;
    return plainError(err);
  }
  if (isError(err, 'CALL_EXCEPTION')) {
    const data = (err as { data?: string }).data;
    try {
      const parsed = data ? registry.parseError(data) : null;
      if (parsed && REVERTS[parsed.name]) return REVERTS[parsed.name]!;
    } catch { /* not one of the registry's errors */ }
    return 'The ledger refused the transaction. Nothing was changed.';
  }
  if (isError(err, 'INSUFFICIENT_FUNDS')) return 'Your key has no funds to pay the ledger for this transaction, so it was not sent. Ask your care provider; or withdraw through the server instead.';
  if (isError(err, 'NETWORK_ERROR') || isError(err, 'TIMEOUT') || isError(err, 'SERVER_ERROR') || /failed to fetch|fetch failed|network|failed to detect/i.test((err as Error)?.message ?? '')) return CHAIN_DOWN;
  return plainError(err);
}
