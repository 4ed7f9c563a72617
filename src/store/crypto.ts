import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const NONCE = 12;
const TAG = 16;

/** Keys derived from the one master secret: the KEK wraps data keys, the index key blinds index values. */
export interface MasterKeys {
  kek: Buffer;
  indexKey: Buffer;
}

/**
 * Master key from config (base64, 32 bytes) or from DATA_DIR/keys/master.key, which is
 * generated on first start with mode 0600.
 */
export function loadMasterKeys(dataDir: string, fromEnv?: string): MasterKeys {
  let master: Buffer;
  if (fromEnv) {
    master = Buffer.from(fromEnv, 'base64');
    if (master.length !== 32) throw new Error('CUSTOS_MASTER_KEY must be 32 bytes, base64-encoded');
  } else {
    const dir = path.join(dataDir, 'keys');
    const file = path.join(dir, 'master.key');
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    try {
      master = Buffer.from(fs.readFileSync(file, 'utf8').trim(), 'base64');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      master = randomBytes(32);
      // 'wx' so two processes starting on a fresh dir cannot both write a key.
      try {
        fs.writeFileSync(file, master.toString('base64') + '\n', { mode: 0o600, flag: 'wx' });
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        master = Buffer.from(fs.readFileSync(file, 'utf8').trim(), 'base64');
      }
    }
    if (master.length !== 32) throw new Error(`${file} does not hold a 32-byte base64 key`);
  }
  const derive = (info: string) => Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), info, 32));
  return { kek: derive('custos/kek/v1'), indexKey: derive('custos/index-blinding/v1') };
}

// Nonces are cut from one larger CSPRNG draw: a randomBytes call per write cost more than the
// encryption. Each nonce is still fresh random output, never handed out twice.
const NONCE_POOL = NONCE * 512;
let noncePool = Buffer.alloc(0);
let nonceAt = NONCE_POOL;

function freshNonce(): Buffer {
  if (nonceAt + NONCE > noncePool.length) {
    noncePool = randomBytes(NONCE_POOL);
    nonceAt = 0;
  }
  const nonce = noncePool.subarray(nonceAt, nonceAt + NONCE);
  nonceAt += NONCE;
  return nonce;
}

/** AES-256-GCM; output is nonce || tag || ciphertext. */
export function seal(key: Buffer, plaintext: Buffer, aad: string): Buffer {
  const nonce = freshNonce();
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  cipher.setAAD(Buffer.from(aad, 'utf8'));
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return Buffer.concat([nonce, cipher.getAuthTag(), ct]);
}

export function open(key: Buffer, sealed: Buffer, aad: string): Buffer {
  const nonce = sealed.subarray(0, NONCE);
  const tag = sealed.subarray(NONCE, NONCE + TAG);
  const decipher = createDecipheriv('aes-256-gcm', key, nonce);
  decipher.setAAD(Buffer.from(aad, 'utf8'));
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([decipher.update(sealed.subarray(NONCE + TAG)), decipher.final()]);
  } catch (err) {
    throw new Error(`${SEALED_DATA_DAMAGED}: ${aad}`, { cause: err });
  }
}

/** Begins the message of every failed open (AES-GCM authentication): the bytes or the key are not those sealed. */
export const SEALED_DATA_DAMAGED = 'sealed data failed its integrity check';

export function newDataKey(): Buffer {
  return randomBytes(32);
}

export const bodyAad = (type: string, id: string, version: number) => `${type}/${id}/${version}`;
export const keyAad = (scope: string, keyId: number) => `data-key/${scope}/${keyId}`;
