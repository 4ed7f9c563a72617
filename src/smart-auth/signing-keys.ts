import fs from 'node:fs';
import path from 'node:path';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, type JWK } from 'jose';

/** The algorithm of access tokens and ID tokens. RS256 is what every OIDC/SMART client verifies. */
export const TOKEN_ALG = 'RS256';

interface StoredKey { jwk: JWK; createdAt: number }
interface KeyFile { keys: StoredKey[] }

export interface SigningKeys {
  /** Private JWKs, newest first: oidc-provider signs with the first one of a matching alg. */
  privateJwks: JWK[];
  /** Public JWKs of the same keys, for verifying tokens and for the jwks_uri. */
  publicJwks: JWK[];
  /** Whether this start generated a new key (first start or rotation). */
  rotated: boolean;
}

const DAY_MS = 24 * 3600 * 1000;
const PUBLIC_MEMBERS = ['kty', 'kid', 'alg', 'use', 'n', 'e', 'crv', 'x', 'y'] as const;

export function publicJwk(jwk: JWK): JWK {
  const out: JWK = {};
  for (const k of PUBLIC_MEMBERS) if (jwk[k] !== undefined) (out as Record<string, unknown>)[k] = jwk[k];
  return out;
}

async function newKey(now: number): Promise<StoredKey> {
  const { privateKey } = await generateKeyPair(TOKEN_ALG, { extractable: true, modulusLength: 2048 });
  const jwk = await exportJWK(privateKey);
  jwk.kid = await calculateJwkThumbprint(jwk);
  jwk.alg = TOKEN_ALG;
  jwk.use = 'sig';
  return { jwk, createdAt: now };
}

/**
 * Token signing keys in DATA_DIR/keys/signing-keys.json (mode 0600). A new key is generated
 * when the newest is older than `rotateAfterDays`; the previous key stays published (so tokens
 * it signed keep verifying) until it is two rotation periods old.
 */
export async function loadSigningKeys(dataDir: string, rotateAfterDays: number, now = Date.now()): Promise<SigningKeys> {
  const dir = path.join(dataDir, 'keys');
  const file = path.join(dir, 'signing-keys.json');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  let stored: KeyFile = { keys: [] };
  try {
    stored = JSON.parse(fs.readFileSync(file, 'utf8')) as KeyFile;
    if (!Array.isArray(stored.keys)) throw new Error(`${file} is not a signing key file`);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const period = rotateAfterDays * DAY_MS;
  let keys = [...stored.keys].sort((a, b) => b.createdAt - a.createdAt);
  let rotated = false;
  if (keys.length === 0 || now - keys[0]!.createdAt >= period) {
    keys.unshift(await newKey(now));
    rotated = true;
  }
  keys = keys.filter((k, i) => i === 0 || now - k.createdAt < 2 * period).slice(0, 3);
  if (rotated) {
    const tmp = `${file}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify({ keys }, null, 2), { mode: 0o600 });
    fs.renameSync(tmp, file);
  }
  const privateJwks = keys.map((k) => k.jwk);
  return { privateJwks, publicJwks: privateJwks.map(publicJwk), rotated };
}
