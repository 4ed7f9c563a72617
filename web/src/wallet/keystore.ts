/**
 * The key the portal creates and keeps for the patient: an Ethereum JSON keystore (ethers),
 * encrypted with the patient's passphrase, in this browser's localStorage. Only the encrypted
 * keystore is stored; the passphrase is asked whenever a signature is needed and never kept.
 */
import { decryptKeystoreJson, encryptKeystoreJson, getAddress, isKeystoreJson, Wallet } from 'ethers';

const STORAGE_KEY = 'custos-keystore';
export const MIN_PASSPHRASE = 10;

/**
 * scrypt cost: N = 2^16, r = 8, p = 1 (64 MiB, about half a second on a laptop). ethers' default
 * N = 2^17 doubles both the wait and the memory, which a phone feels on every signature; the
 * keystore never leaves the device except as the patient's own backup file.
 */
export const SCRYPT = { N: 1 << 16, r: 8, p: 1 } as const;

export interface StoredKey { address: string; json: string }

export function storedKey(): StoredKey | undefined {
  const json = localStorage.getItem(STORAGE_KEY);
  if (!json) return undefined;
  try { return { address: keystoreAddress(json), json }; } catch { return undefined; }
}

/** The address a keystore file says it holds; throws when the text is not a JSON keystore. */
export function keystoreAddress(json: string): string {
  if (!isKeystoreJson(json)) throw new Error('This file is not a key backup made by the portal (an encrypted JSON keystore).');
  const address = (JSON.parse(json) as { address?: string }).address;
  if (typeof address !== 'string') throw new Error('This key backup does not say which key it holds.');
  return getAddress(address.startsWith('0x') ? address.toLowerCase() : `0x${address.toLowerCase()}`);
}

export async function createKey(passphrase: string): Promise<StoredKey> {
  checkPassphrase(passphrase);
  const w = Wallet.createRandom();
  const json = await encryptKeystoreJson({ address: w.address, privateKey: w.privateKey }, passphrase, { scrypt: SCRYPT });
  localStorage.setItem(STORAGE_KEY, json);
  return { address: w.address, json };
}

/** Restores a backup file: it must open with the passphrase before it replaces anything. */
export async function restoreKey(json: string, passphrase: string): Promise<StoredKey> {
  const address = keystoreAddress(json);
  await openKeystore(json, passphrase);
  localStorage.setItem(STORAGE_KEY, json);
  return { address, json };
}

export function forgetKey(): void { localStorage.removeItem(STORAGE_KEY); }

export class WrongPassphrase extends Error {
  constructor() { super('That passphrase does not open your key. Check it (capital letters count) and try again.'); }
}

export async function openKeystore(json: string, passphrase: string): Promise<Wallet> {
  try {
    const account = await decryptKeystoreJson(json, passphrase);
    return new Wallet(account.privateKey);
  } catch (err) {
    if (/password/i.test((err as Error).message)) throw new WrongPassphrase();
    throw err;
  }
}

export function checkPassphrase(passphrase: string): void {
  if (passphrase.length < MIN_PASSPHRASE) throw new Error(`Choose a passphrase of at least ${MIN_PASSPHRASE} characters: a few words you will remember are best.`);
}

export function backupFileName(address: string): string {
  return `custos-key-${address.slice(2, 10).toLowerCase()}.json`;
}
