/** An injected EIP-1193 wallet (window.ethereum: MetaMask, Rabby, a hardware wallet's bridge...). */
import { getAddress } from 'ethers';

export interface Eip1193 { request(args: { method: string; params?: unknown[] }): Promise<unknown> }

export class WalletLocked extends Error {
  constructor() { super('Your wallet is locked or did not share an account with the portal. Unlock it and try again.'); }
}

export function injectedWallet(): Eip1193 | undefined {
  const eth = (window as unknown as { ethereum?: Eip1193 }).ethereum;
  return eth && typeof eth.request === 'function' ? eth : undefined;
}

/** The wallet's first account; asks the wallet to share it (the patient approves in the wallet). */
export async function walletAccount(wallet: Eip1193): Promise<string> {
  const accounts = await wallet.request({ method: 'eth_requestAccounts' }) as string[] | undefined;
  if (!Array.isArray(accounts) || accounts.length === 0 || typeof accounts[0] !== 'string') throw new WalletLocked();
  return getAddress(accounts[0].toLowerCase());
}
