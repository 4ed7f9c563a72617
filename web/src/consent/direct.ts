/**
 * Transactions the patient's key sends to the ConsentRegistry itself, with no server in between:
 * withdrawing a permission (revokeDirect) and cancelling an operator's key recovery.
 */
import { Contract } from 'ethers';
import type { KeyHolder } from '../wallet/holder.js';

export const REGISTRY_ABI = [
  'function revokeDirect(bytes32 pid, bytes32 consentHash)',
  'function cancelRecovery(bytes32 pid)',
  'error NoKey(bytes32 pid)',
  'error NotKeyHolder(bytes32 pid, address caller)',
  'error NotActive(bytes32 pid, bytes32 consentHash)',
  'error AlreadyActive(bytes32 pid, bytes32 consentHash)',
  'error NoRecovery(bytes32 pid)',
  'error Expired(uint256 deadline)',
  'error BadSignature()',
  'error BadNonce(uint256 expected, uint256 given)',
] as const;

export interface RegistryTarget { rpcUrl: string; contractAddress: string; pid: string }

async function send(holder: KeyHolder, t: RegistryTarget, passphrase: string | undefined, call: (c: Contract) => Promise<{ wait(): Promise<unknown> }>): Promise<void> {
  const signer = await holder.signer(t.rpcUrl, passphrase);
  const registry = new Contract(t.contractAddress, REGISTRY_ABI, signer);
  const tx = await call(registry);
  await tx.wait();
}

export function revokeDirect(holder: KeyHolder, t: RegistryTarget, consentHash: string, passphrase?: string): Promise<void> {
  return send(holder, t, passphrase, (c) => c.getFunction('revokeDirect')(t.pid, consentHash));
}

export function cancelRecovery(holder: KeyHolder, t: RegistryTarget, passphrase?: string): Promise<void> {
  return send(holder, t, passphrase, (c) => c.getFunction('cancelRecovery')(t.pid));
}
