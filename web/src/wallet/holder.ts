/**
 * Who holds the patient's signing key in this browser: the portal's own encrypted key, or an
 * injected wallet. Pages sign through this one interface; the private key never leaves the browser.
 */
import { BrowserProvider, JsonRpcProvider, type Signer } from 'ethers';
import { injectedWallet, walletAccount, type Eip1193 } from './eip1193.js';
import { openKeystore, storedKey } from './keystore.js';

/** EIP-712 typed data as the server prepares it (`$consent-key`, `$consent-typed-data`). */
export interface TypedData {
  domain: { name: string; version: string; chainId: string; verifyingContract: string };
  types: Record<string, Array<{ name: string; type: string }>>;
  primaryType: string;
  message: Record<string, string>;
}

export type HolderKind = 'portal' | 'wallet';

export interface KeyHolder {
  kind: HolderKind;
  /** Known at once for the portal key; for a wallet after it shared its account. */
  address?: string;
  /** Whether signing needs the passphrase. */
  needsPassphrase: boolean;
  /** The signing account (asks the wallet to share it, or opens the keystore with the passphrase). */
  account(passphrase?: string): Promise<string>;
  signTypedData(td: TypedData, passphrase?: string): Promise<string>;
  /** A signer that sends transactions to the chain itself. */
  signer(rpcUrl: string, passphrase?: string): Promise<Signer>;
}

const CHOICE_KEY = 'custos-key-choice';

export function chosenKind(): HolderKind | undefined {
  const v = localStorage.getItem(CHOICE_KEY);
  return v === 'portal' || v === 'wallet' ? v : undefined;
}

export function choose(kind: HolderKind): void { localStorage.setItem(CHOICE_KEY, kind); }

/** The key the patient chose (or the only one there is); undefined when there is none. */
export function currentHolder(): KeyHolder | undefined {
  const kind = chosenKind();
  const portal = portalHolder();
  const wallet = walletHolder();
  if (kind === 'wallet' && wallet) return wallet;
  if (kind === 'portal' && portal) return portal;
  return portal ?? wallet;
}

export function portalHolder(): KeyHolder | undefined {
  const stored = storedKey();
  if (!stored) return undefined;
  const open = async (passphrase?: string) => openKeystore(stored.json, passphrase ?? '');
  return {
    kind: 'portal', address: stored.address, needsPassphrase: true,
    account: async (passphrase) => (await open(passphrase)).address,
    signTypedData: async (td, passphrase) => {
      const { EIP712Domain: _domain, ...types } = td.types;
      return (await open(passphrase)).signTypedData(td.domain, types, td.message);
    },
    signer: async (rpcUrl, passphrase) => (await open(passphrase)).connect(new JsonRpcProvider(rpcUrl, undefined, { batchMaxCount: 1 })),
  };
}

export function walletHolder(wallet: Eip1193 | undefined = injectedWallet()): KeyHolder | undefined {
  if (!wallet) return undefined;
  return {
    kind: 'wallet', needsPassphrase: false,
    account: () => walletAccount(wallet),
    signTypedData: async (td) => {
      const address = await walletAccount(wallet);
      return await wallet.request({ method: 'eth_signTypedData_v4', params: [address, JSON.stringify(td)] }) as string;
    },
    signer: async () => new BrowserProvider(wallet).getSigner(await walletAccount(wallet)),
  };
}

export function shortAddress(a: string): string {
  return `${a.slice(0, 6)}…${a.slice(-4)}`;
}
