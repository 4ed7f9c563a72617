import { createPublicKey, randomBytes, type JsonWebKey, type KeyObject } from 'node:crypto';
import type { AuthDb } from './auth-db.js';
import type { MasterKeys } from '../store/index.js';
import { open, seal } from '../store/crypto.js';
import { PasswordHasher, sharedPasswordHasher } from './passwords.js';

export type ClientType = 'public' | 'confidential' | 'backend';

export interface ClientRecord {
  clientId: string;
  type: ClientType;
  name?: string;
  redirectUris: string[];
  scope: string;
  jwks?: { keys: object[] };
  jwksUri?: string;
  actor?: string;
  trusted: boolean;
  createdAt: Date;
  revokedAt?: Date;
}

export interface NewClient {
  type: ClientType;
  name?: string;
  redirectUris?: string[];
  scope: string;
  jwks?: { keys: object[] };
  jwksUri?: string;
  actor?: string;
  trusted?: boolean;
}

export interface UserRecord {
  accountId: string;
  username: string;
  fhirUser: string;
  breakGlass: boolean;
  createdAt: Date;
  disabledAt?: Date;
}

export interface NewUser {
  username: string;
  password: string;
  fhirUser: string;
  breakGlass?: boolean;
}

const CLIENT_TYPES: readonly ClientType[] = ['public', 'confidential', 'backend'];
const RESOURCE_SCOPE = /^(patient|user|system)\/(\*|[A-Z][A-Za-z]+)\.(read|write|\*|c?r?u?d?s?)(\?\S+)?$/;
const OTHER_SCOPES = new Set(['openid', 'fhirUser', 'profile', 'launch', 'launch/patient', 'launch/encounter', 'offline_access', 'online_access']);
const FHIR_USER = /^(Patient|Practitioner)\/[A-Za-z0-9\-.]{1,64}$/;
const ACTOR = /^(Organization|Device|Practitioner)\/[A-Za-z0-9\-.]{1,64}$/;
const USERNAME = /^[A-Za-z0-9._@-]{1,64}$/;
const MIN_PASSWORD = 8;
const MAX_PASSWORD = 1024;
const MAX_NAME = 200;
/** JWK members that only private or symmetric keys carry. */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k', 'oth', 'priv'];
/** What a backend key may verify: RS384 (RSA) or ES384 (P-384); ES256 for P-256 keys. */
const CURVE_ALG: Record<string, string> = { 'P-256': 'ES256', 'P-384': 'ES384' };
const MIN_RSA_BITS = 2048;

/**
 * Verifies against this (a real scrypt hash of a random, discarded password) when the username is
 * unknown, so that unknown and known usernames cost the same.
 */
const DUMMY_HASH = 'scrypt$32768$8$1$uzmmJiAZt8WgOMu7xhZCNg$W5CGva3cVyMB_DG3ijj0YT3oGKhc_h0XEV5xP6GTa3k';

/** A rejected value (bad client or user data); other errors (database, keys) are plain Errors. */
export class ValidationError extends Error {
  override name = 'ValidationError';
}

function fail(message: string): never {
  throw new ValidationError(message);
}

function randomId(prefix: string): string {
  // 16 random bytes = exactly 22 base64url characters (128 bits).
  return prefix + randomBytes(16).toString('base64url');
}

const secretAad = (clientId: string) => `client-secret/${clientId}`;

function httpUrl(raw: unknown, what: string): URL {
  if (typeof raw !== 'string' || raw === '') fail(`${what} must be a non-empty string`);
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    fail(`${what} "${raw}" is not an absolute URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') fail(`${what} "${raw}" must be an http(s) URL`);
  if (/\s/.test(raw)) fail(`${what} "${raw}" must not contain whitespace`);
  return url;
}

/** Scope syntax check (light: the authorization server decides what a token gets). Returns the normalized string. */
export function validateScope(scope: unknown, type: ClientType): string {
  if (typeof scope !== 'string' || scope.trim() === '') fail('scope must be a non-empty, space-separated list of scopes');
  const tokens = scope.trim().split(/\s+/);
  for (const t of tokens) {
    const m = RESOURCE_SCOPE.exec(t);
    if (m) {
      if (m[3] === '') fail(`scope "${t}" names no permission (read, write, * or a subset of cruds)`);
      if (type === 'backend' && m[1] !== 'system') fail(`backend clients may only have system/ scopes, got "${t}"`);
      continue;
    }
    if (OTHER_SCOPES.has(t)) {
      if (type === 'backend') fail(`backend clients may only have system/ scopes, got "${t}"`);
      continue;
    }
    fail(`invalid scope "${t}"`);
  }
  return [...new Set(tokens)].join(' ');
}

function validateJwk(key: unknown, i: number): void {
  const where = `jwks.keys[${i}]`;
  if (!key || typeof key !== 'object' || Array.isArray(key)) fail(`${where} must be a JWK object`);
  const jwk = key as Record<string, unknown>;
  const priv = PRIVATE_MEMBERS.filter((m) => m in jwk);
  if (priv.length) fail(`${where} holds private key material (${priv.join(', ')}); register the PUBLIC key only`);
  if (jwk.use !== undefined && jwk.use !== 'sig') fail(`${where} has "use": ${JSON.stringify(jwk.use)}; a signing key needs "sig" or no "use"`);
  if (jwk.key_ops !== undefined && (!Array.isArray(jwk.key_ops) || !jwk.key_ops.includes('verify'))) fail(`${where} has "key_ops" without "verify"`);
  if (jwk.ext !== undefined && typeof jwk.ext !== 'boolean') fail(`${where} has a non-boolean "ext"`);
  if (jwk.kid !== undefined && typeof jwk.kid !== 'string') fail(`${where} has a non-string "kid"`);
  let expectedAlg: string;
  if (jwk.kty === 'RSA') {
    expectedAlg = 'RS384';
  } else if (jwk.kty === 'EC') {
    const alg = CURVE_ALG[String(jwk.crv)];
    if (!alg) fail(`${where} is an EC key on ${JSON.stringify(jwk.crv)}; only P-384 (ES384) and P-256 are accepted`);
    expectedAlg = alg;
  } else {
    fail(`${where} has kty ${JSON.stringify(jwk.kty)}; only RSA (RS384) and EC (ES384) public keys are accepted`);
  }
  if (jwk.alg !== undefined && jwk.alg !== expectedAlg) fail(`${where} has "alg": ${JSON.stringify(jwk.alg)}; a ${jwk.kty} key here must be ${expectedAlg} or have no "alg"`);
  // Import it as a public key (the same checks WebCrypto/jose make: well-formed members, point on the curve).
  // Import it as a public key (the checks WebCrypto/jose make: well-formed members, point on the curve).
  const members = jwk.kty === 'RSA' ? ['n', 'e'] : ['crv', 'x', 'y'];
  for (const m of members) if (typeof jwk[m] !== 'string' || jwk[m] === '') fail(`${where} lacks "${m}"`);
  let imported: KeyObject;
  try {
    const material = Object.fromEntries([['kty', jwk.kty], ...members.map((m) => [m, jwk[m]])]) as JsonWebKey;
    imported = createPublicKey({ key: material, format: 'jwk' });
  } catch (err) {
    fail(`${where} is not a valid ${String(jwk.kty)} public key: ${(err as Error).message}`);
  }
  if (imported.type !== 'public') fail(`${where} is not a public key`);
  if (jwk.kty === 'RSA' && (imported.asymmetricKeyDetails?.modulusLength ?? 0) < MIN_RSA_BITS) {
    fail(`${where} is an RSA key of ${imported.asymmetricKeyDetails?.modulusLength} bits; at least ${MIN_RSA_BITS} are required`);
  }
}

export function validateJwks(jwks: unknown): { keys: object[] } {
  if (!jwks || typeof jwks !== 'object' || Array.isArray(jwks)) fail('jwks must be a JWK Set: {"keys": [...]}');
  const keys = (jwks as { keys?: unknown }).keys;
  if (!Array.isArray(keys) || keys.length === 0) fail('jwks must be a JWK Set with at least one key: {"keys": [...]}');
  keys.forEach(validateJwk);
  const kids = keys.map((k) => (k as { kid?: string }).kid).filter((k) => k !== undefined);
  if (new Set(kids).size !== kids.length) fail('jwks has two keys with the same "kid"');
  return jwks as { keys: object[] };
}

interface ClientRow {
  client_id: string;
  type: ClientType;
  name: string | null;
  redirect_uris: string;
  scope: string;
  jwks: string | null;
  jwks_uri: string | null;
  secret: Buffer | null;
  actor: string | null;
  trusted: number;
  created_at: number;
  revoked_at: number | null;
}

interface UserRow {
  account_id: string;
  username: string;
  password_hash: string;
  fhir_user: string;
  break_glass: number;
  created_at: number;
  disabled_at: number | null;
}

function toClient(r: ClientRow): ClientRecord {
  const c: ClientRecord = {
    clientId: r.client_id,
    type: r.type,
    redirectUris: JSON.parse(r.redirect_uris) as string[],
    scope: r.scope,
    trusted: r.trusted !== 0,
    createdAt: new Date(r.created_at),
  };
  if (r.name !== null) c.name = r.name;
  if (r.jwks !== null) c.jwks = JSON.parse(r.jwks) as { keys: object[] };
  if (r.jwks_uri !== null) c.jwksUri = r.jwks_uri;
  if (r.actor !== null) c.actor = r.actor;
  if (r.revoked_at !== null) c.revokedAt = new Date(r.revoked_at);
  return c;
}

function toUser(r: UserRow): UserRecord {
  const u: UserRecord = {
    accountId: r.account_id,
    username: r.username,
    fhirUser: r.fhir_user,
    breakGlass: r.break_glass !== 0,
    createdAt: new Date(r.created_at),
  };
  if (r.disabled_at !== null) u.disabledAt = new Date(r.disabled_at);
  return u;
}

const CLIENT_COLS = 'client_id, type, name, redirect_uris, scope, jwks, jwks_uri, secret, actor, trusted, created_at, revoked_at';
const USER_COLS = 'account_id, username, password_hash, fhir_user, break_glass, created_at, disabled_at';

/** OAuth clients and user accounts for SMART auth, in auth.db. Client secrets are sealed with the KEK. */
export class Registry {
  /** `hasher`: where passwords are hashed and checked (the server's bounded one; else a shared one). */
  constructor(private readonly db: AuthDb, private readonly keys: MasterKeys, private readonly hasher: PasswordHasher = sharedPasswordHasher()) {}

  addClient(c: NewClient): { client: ClientRecord; clientSecret?: string } {
    if (!c || typeof c !== 'object') fail('client must be an object');
    if (!CLIENT_TYPES.includes(c.type)) fail(`client type must be one of ${CLIENT_TYPES.join(', ')}`);
    const scope = validateScope(c.scope, c.type);
    let name: string | null = null;
    if (c.name !== undefined) {
      if (typeof c.name !== 'string' || c.name.trim() === '' || c.name.length > MAX_NAME || /[\u0000-\u001f\u007f]/.test(c.name)) {
        fail(`name must be 1-${MAX_NAME} printable characters`);
      }
      name = c.name;
    }
    if (c.actor !== undefined && (typeof c.actor !== 'string' || !ACTOR.test(c.actor))) {
      fail(`actor must be a reference like Organization/<id>, Device/<id> or Practitioner/<id>, got ${JSON.stringify(c.actor)}`);
    }
    if (c.trusted !== undefined && typeof c.trusted !== 'boolean') fail('trusted must be a boolean');
    const redirectUris = c.redirectUris ?? [];
    if (!Array.isArray(redirectUris)) fail('redirectUris must be an array');
    let jwks: { keys: object[] } | undefined;
    let jwksUri: string | undefined;
    if (c.jwks !== undefined && c.jwksUri !== undefined) fail('give one of jwks (inline public keys) or jwksUri, not both');
    if (c.type === 'public' && (c.jwks !== undefined || c.jwksUri !== undefined)) fail('public clients take no jwks or jwksUri (they have no credentials)');
    if (c.jwks !== undefined) jwks = validateJwks(c.jwks);
    if (c.jwksUri !== undefined) {
      httpUrl(c.jwksUri, 'jwksUri');
      jwksUri = c.jwksUri;
    }
    if (c.type === 'backend') {
      if (redirectUris.length) fail('backend clients take no redirect URIs');
      if (c.jwks === undefined && c.jwksUri === undefined) fail('backend clients need exactly one of jwks (inline public keys) or jwksUri');
    } else {
      if (redirectUris.length === 0) fail(`${c.type} clients need at least one redirect URI`);
      for (const u of redirectUris) {
        httpUrl(u, 'redirect URI');
        if (u.includes('#')) fail(`redirect URI "${u}" must not contain a fragment`);
      }
    }
    const clientId = randomId('c-');
    // A confidential client with keys authenticates with private_key_jwt (client-confidential-asymmetric); else with a secret.
    const clientSecret = c.type === 'confidential' && !jwks && !jwksUri ? randomBytes(32).toString('base64url') : undefined;
    const sealed = clientSecret === undefined ? null : seal(this.keys.kek, Buffer.from(clientSecret, 'utf8'), secretAad(clientId));
    const now = Date.now();
    this.db.prepare(`INSERT INTO client (${CLIENT_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)`).run(
      clientId, c.type, name, JSON.stringify([...new Set(redirectUris)]), scope,
      jwks === undefined ? null : JSON.stringify(jwks), jwksUri ?? null, sealed, c.actor ?? null, c.trusted ? 1 : 0, now,
    );
    const client = this.getClient(clientId)!;
    delete client.clientSecret;
    return clientSecret === undefined ? { client } : { client, clientSecret };
  }

  getClient(clientId: string): (ClientRecord & { clientSecret?: string }) | undefined {
    const r = this.db.prepare(`SELECT ${CLIENT_COLS} FROM client WHERE client_id = ?`).get(clientId) as ClientRow | undefined;
    if (!r) return undefined;
    const c: ClientRecord & { clientSecret?: string } = toClient(r);
    if (r.secret !== null) c.clientSecret = open(this.keys.kek, r.secret, secretAad(r.client_id)).toString('utf8');
    return c;
  }

  listClients(): ClientRecord[] {
    const rows = this.db.prepare(`SELECT ${CLIENT_COLS} FROM client ORDER BY created_at, client_id`).all() as ClientRow[];
    return rows.map(toClient);
  }

  /**
   * A client the server registers for itself (the patient portal), kept under `key`: made on the
   * first call, and on later calls brought to `spec`'s name, redirect URIs and scope (the public
   * URL may have changed). A revoked one is replaced, so an operator can reset it.
   */
  ensureOwnClient(key: string, spec: NewClient): ClientRecord {
    const metaKey = `own-client/${key}`;
    const id = this.db.prepare('SELECT value FROM meta WHERE key = ?').pluck().get(metaKey) as string | undefined;
    const current = id === undefined ? undefined : this.getClient(id);
    if (current && !current.revokedAt && current.type === spec.type) {
      const scope = validateScope(spec.scope, spec.type);
      this.db.prepare('UPDATE client SET name = ?, redirect_uris = ?, scope = ? WHERE client_id = ?')
        .run(spec.name ?? null, JSON.stringify([...new Set(spec.redirectUris ?? [])]), scope, current.clientId);
      return this.getClient(current.clientId)!;
    }
    const { client } = this.addClient(spec);
    this.db.prepare('INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value').run(metaKey, client.clientId);
    return client;
  }

  revokeClient(clientId: string): boolean {
    // A second revoke keeps the first time.
    const r = this.db.prepare('UPDATE client SET revoked_at = coalesce(revoked_at, ?) WHERE client_id = ?').run(Date.now(), clientId);
    return r.changes > 0;
  }

  async addUser(u: NewUser): Promise<UserRecord> {
    if (!u || typeof u !== 'object') fail('user must be an object');
    if (typeof u.username !== 'string' || !USERNAME.test(u.username)) fail('username must be 1-64 characters from A-Z a-z 0-9 . _ @ -');
    if (typeof u.password !== 'string' || [...u.password].length < MIN_PASSWORD) fail(`password must be at least ${MIN_PASSWORD} characters`);
    if (u.password.length > MAX_PASSWORD) fail(`password must be at most ${MAX_PASSWORD} characters`);
    if (typeof u.fhirUser !== 'string' || !FHIR_USER.test(u.fhirUser)) fail(`fhirUser must be Patient/<id> or Practitioner/<id>, got ${JSON.stringify(u.fhirUser)}`);
    if (u.breakGlass !== undefined && typeof u.breakGlass !== 'boolean') fail('breakGlass must be a boolean');
    if (this.getUserByUsername(u.username)) fail(`username "${u.username}" is already taken`);
    const hash = await this.hasher.hash(u.password);
    const accountId = randomId('u-');
    try {
      this.db.prepare(`INSERT INTO user_account (${USER_COLS}) VALUES (?, ?, ?, ?, ?, ?, NULL)`).run(
        accountId, u.username, hash, u.fhirUser, u.breakGlass ? 1 : 0, Date.now(),
      );
    } catch (err) {
      // Another process may have taken the name while we were hashing.
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_UNIQUE') fail(`username "${u.username}" is already taken`);
      throw err;
    }
    return this.getUser(accountId)!;
  }

  getUserByUsername(username: string): UserRecord | undefined {
    const r = this.userRowByUsername(username);
    return r && toUser(r);
  }

  getUser(accountId: string): UserRecord | undefined {
    const r = this.db.prepare(`SELECT ${USER_COLS} FROM user_account WHERE account_id = ?`).get(accountId) as UserRow | undefined;
    return r && toUser(r);
  }

  listUsers(): UserRecord[] {
    const rows = this.db.prepare(`SELECT ${USER_COLS} FROM user_account ORDER BY created_at, account_id`).all() as UserRow[];
    return rows.map(toUser);
  }

  /**
   * The user for these credentials, or undefined (unknown user, wrong password, disabled account).
   * Throws PasswordBusyError when too many checks are waiting already.
   */
  async authenticate(username: string, password: string): Promise<UserRecord | undefined> {
    const r = typeof username === 'string' ? this.userRowByUsername(username) : undefined;
    // Always run one scrypt verification, so the response time does not tell whether the user exists.
    const ok = await this.hasher.verify(typeof password === 'string' ? password : '', r ? r.password_hash : DUMMY_HASH);
    if (!r || !ok || r.disabled_at !== null) return undefined;
    return toUser(r);
  }

  private userRowByUsername(username: string): UserRow | undefined {
    return this.db.prepare(`SELECT ${USER_COLS} FROM user_account WHERE username = ?`).get(username) as UserRow | undefined;
  }
}
