import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as jose from 'jose';
import { openAuthDb, type AuthDb } from '../src/smart-auth/auth-db.js';
import { hashPassword, verifyPassword } from '../src/smart-auth/passwords.js';
import { Registry, ValidationError, type NewClient } from '../src/smart-auth/registry.js';
import { loadMasterKeys, type MasterKeys } from '../src/store/index.js';

/**
 * The CLI runs as a real process from the TypeScript source (node --import tsx src/cli.ts), so the
 * test needs no build and always exercises the current code through the real `custos` entry point.
 */
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CLI = path.join(ROOT, 'src', 'cli.ts');

const dirs: string[] = [];
function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-registry-'));
  dirs.push(d);
  return d;
}
after(() => { for (const d of dirs) fs.rmSync(d, { recursive: true, force: true }); });

interface Run { status: number | null; stdout: string; stderr: string }
function custos(dataDir: string, ...args: string[]): Run {
  const r = spawnSync(process.execPath, ['--import', 'tsx', CLI, ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, DATA_DIR: dataDir, CUSTOS_MASTER_KEY: '' },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The same, without blocking, so independent invocations can run side by side. */
function custosAsync(dataDir: string, ...args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], {
      cwd: ROOT,
      env: { ...process.env, DATA_DIR: dataDir, CUSTOS_MASTER_KEY: '' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    child.once('error', reject);
    child.once('close', (status) => resolve({ status, stdout, stderr }));
  });
}

function publicJwk(kind: 'rsa' | 'ec384' | 'ec256' | 'ec521' | 'ed25519' | 'rsa1024', extra: Record<string, unknown> = {}): Record<string, unknown> {
  const pair = kind === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 })
    : kind === 'rsa1024' ? generateKeyPairSync('rsa', { modulusLength: 1024 })
    : kind === 'ed25519' ? generateKeyPairSync('ed25519')
    : generateKeyPairSync('ec', { namedCurve: kind === 'ec384' ? 'P-384' : kind === 'ec256' ? 'P-256' : 'P-521' });
  return { ...pair.publicKey.export({ format: 'jwk' }), ...extra };
}

function privateJwk(kind: 'rsa' | 'ec384'): Record<string, unknown> {
  const pair = kind === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ec', { namedCurve: 'P-384' });
  return pair.privateKey.export({ format: 'jwk' }) as Record<string, unknown>;
}

const CLIENT_ID = /^c-[A-Za-z0-9_-]{22}$/;

describe('custos client / user CLI', () => {
  const dataDir = path.join(tempDir(), 'fresh', 'data');
  let jwksFile: string;
  let confidential: { client_id: string; client_secret: string };
  let backend: { client_id: string };
  let publicId: string;

  before(() => {
    jwksFile = path.join(path.dirname(dataDir), 'keys.json');
    fs.mkdirSync(path.dirname(jwksFile), { recursive: true });
    fs.writeFileSync(jwksFile, JSON.stringify({ keys: [publicJwk('ec384', { kid: 'dev-1', alg: 'ES384' }), publicJwk('rsa', { kid: 'dev-2' })] }));
  });

  it('adds a public client (text output), creating DATA_DIR 0700 and auth.db 0600', () => {
    const r = custos(dataDir, 'client', 'add', '--type', 'public', '--redirect-uri', 'https://app.example/cb',
      '--redirect-uri', 'http://localhost:3000/cb', '--scope', 'launch/patient openid fhirUser patient/*.rs', '--name', 'Vitals app');
    assert.equal(r.status, 0, r.stderr);
    const m = /client_id:\s+(c-[A-Za-z0-9_-]{22})\b/.exec(r.stdout);
    assert.ok(m, r.stdout);
    publicId = m[1]!;
    assert.doesNotMatch(r.stdout, /secret/i, 'a public client has no secret');
    assert.equal(fs.statSync(dataDir).mode & 0o777, 0o700);
    assert.equal(fs.statSync(path.join(dataDir, 'auth.db')).mode & 0o777, 0o600);
  });

  it('adds a confidential client with --json: exactly one JSON object with the secret', () => {
    const r = custos(dataDir, 'client', 'add', '--type', 'confidential', '--redirect-uri', 'https://ehr-app.example/callback',
      '--scope', 'launch openid fhirUser user/*.rs offline_access', '--json');
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout); // throws if stdout is anything but one JSON value
    assert.equal(typeof out, 'object');
    assert.match(out.client_id, CLIENT_ID);
    assert.match(out.client_secret, /^[A-Za-z0-9_-]{43}$/, '32 random bytes, base64url');
    assert.equal(out.type, 'confidential');
    assert.equal(out.scope, 'launch openid fhirUser user/*.rs offline_access');
    assert.deepEqual(out.redirect_uris, ['https://ehr-app.example/callback']);
    confidential = out;
  });

  it('says in text mode that a confidential secret is shown only once', () => {
    const r = custos(dataDir, 'client', 'add', '--type', 'confidential', '--redirect-uri', 'https://x.example/cb', '--scope', 'openid');
    assert.equal(r.status, 0, r.stderr);
    assert.match(r.stdout, /client_secret:\s+[A-Za-z0-9_-]{43}\n/);
    assert.match(r.stdout, /only (this )?once/i);
  });

  it('adds backend clients from a JWKS file (with actor, trusted) and from a jwks URL', () => {
    const r = custos(dataDir, 'client', 'add', '--type', 'backend', '--jwks', jwksFile, '--scope', 'system/Observation.cruds system/Device.rs',
      '--name', 'Gateway 7', '--actor', 'Device/gw-7', '--trusted', '--json');
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.match(out.client_id, CLIENT_ID);
    assert.equal(out.client_secret, undefined, 'backend clients authenticate with keys, not a secret');
    assert.equal(out.actor, 'Device/gw-7');
    assert.equal(out.trusted, true);
    assert.deepEqual(out.redirect_uris, []);
    assert.deepEqual(out.jwks.keys.map((k: { kid: string }) => k.kid), ['dev-1', 'dev-2']);
    backend = out;
    const u = custos(dataDir, 'client', 'add', '--type', 'backend', '--jwks', 'https://device.example/.well-known/jwks.json', '--scope', 'system/*.rs', '--json');
    assert.equal(u.status, 0, u.stderr);
    const viaUrl = JSON.parse(u.stdout);
    assert.equal(viaUrl.jwks_uri, 'https://device.example/.well-known/jwks.json');
    assert.equal(viaUrl.jwks, undefined);
    assert.equal(viaUrl.trusted, false);
  });

  it('lists clients as JSON and as a table, never with secrets', () => {
    const j = custos(dataDir, 'client', 'list', '--json');
    assert.equal(j.status, 0, j.stderr);
    const list = JSON.parse(j.stdout) as Array<Record<string, unknown>>;
    assert.ok(Array.isArray(list));
    assert.equal(list.length, 5);
    assert.ok(list.some((c) => c.client_id === confidential.client_id));
    assert.ok(list.every((c) => !('client_secret' in c) && !('secret' in c)));
    assert.ok(!j.stdout.includes(confidential.client_secret));
    const t = custos(dataDir, 'client', 'list');
    assert.equal(t.status, 0, t.stderr);
    assert.ok(!t.stdout.includes(confidential.client_secret));
    const lines = t.stdout.trimEnd().split('\n');
    assert.equal(lines.length, 6, t.stdout);
    assert.match(lines[0]!, /CLIENT_ID\s+TYPE\s+STATUS\s+TRUSTED/);
    // Aligned: every row's TYPE column starts where the header's does.
    const typeCol = lines[0]!.indexOf('TYPE');
    for (const l of lines.slice(1)) assert.match(l.slice(typeCol), /^(public|confidential|backend)\s/, l);
    const backendLine = lines.find((l) => l.startsWith(backend.client_id))!;
    assert.match(backendLine, /\bbackend\s+active\s+yes\b/);
    assert.match(lines.find((l) => l.startsWith(publicId))!, /\bpublic\s+active\s+no\s+Vitals app\b/);
  });

  it('revokes a client: marked in both listings; an unknown id exits 1; no id is a usage error', () => {
    const r = custos(dataDir, 'client', 'revoke', publicId);
    assert.equal(r.status, 0, r.stderr);
    const list = JSON.parse(custos(dataDir, 'client', 'list', '--json').stdout) as Array<{ client_id: string; revoked_at?: string }>;
    const revoked = list.find((c) => c.client_id === publicId)!;
    assert.ok(revoked.revoked_at && !Number.isNaN(Date.parse(revoked.revoked_at)));
    assert.equal(list.filter((c) => c.revoked_at).length, 1);
    assert.match(custos(dataDir, 'client', 'list').stdout.split('\n').find((l) => l.startsWith(publicId))!, /REVOKED/);
    const unknown = custos(dataDir, 'client', 'revoke', 'c-doesnotexistdoesnotexi');
    assert.equal(unknown.status, 1);
    assert.match(unknown.stderr, /no client/);
    assert.equal(custos(dataDir, 'client', 'revoke').status, 2);
  });

  it('rejects unknown options, missing values and bad input with exit 2 and changes nothing', async () => {
    const [unknown, missing, invalid, noFile, fragment, noType, frob, bare, extra] = await Promise.all([
      custosAsync(dataDir, 'client', 'add', '--type', 'public', '--redirect-uri', 'https://a.example/cb', '--scope', 'openid', '--colour', 'red'),
      custosAsync(dataDir, 'client', 'add', '--type', 'public', '--redirect-uri', 'https://a.example/cb', '--scope'),
      custosAsync(dataDir, 'client', 'add', '--type', 'backend', '--jwks', jwksFile, '--scope', 'patient/*.rs'),
      custosAsync(dataDir, 'client', 'add', '--type', 'backend', '--jwks', path.join(dataDir, 'nope.json'), '--scope', 'system/*.rs'),
      custosAsync(dataDir, 'client', 'add', '--type', 'public', '--redirect-uri', 'https://a.example/cb#x', '--scope', 'openid'),
      custosAsync(dataDir, 'client', 'add', '--scope', 'openid'),
      custosAsync(dataDir, 'client', 'frobnicate'),
      custosAsync(dataDir, 'client'),
      custosAsync(dataDir, 'user', 'list', 'extra'),
    ]);
    assert.equal(unknown.status, 2);
    assert.match(unknown.stderr, /--colour/);
    assert.match(unknown.stderr, /Usage:/);
    assert.equal(unknown.stdout, '');
    assert.equal(missing.status, 2);
    assert.match(missing.stderr, /--scope/);
    assert.equal(invalid.status, 2);
    assert.match(invalid.stderr, /system\//);
    assert.equal(noFile.status, 2);
    assert.match(noFile.stderr, /nope\.json/);
    assert.equal(fragment.status, 2);
    assert.match(fragment.stderr, /fragment/);
    assert.equal(noType.status, 2);
    assert.match(noType.stderr, /--type/);
    for (const r of [frob, bare, extra]) {
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /Usage:/);
    }
    assert.equal(JSON.parse(custos(dataDir, 'client', 'list', '--json').stdout).length, 5, 'no client was added by the failed commands');
  });

  it('prints usage with --help on each command (exit 0), and the top-level help names the commands', async () => {
    const cmds = [['client'], ['client', 'add'], ['client', 'list'], ['client', 'revoke'], ['user'], ['user', 'add'], ['user', 'list']];
    const runs = await Promise.all([...cmds.map((cmd) => custosAsync(dataDir, ...cmd, '--help')), custosAsync(dataDir, '--help')]);
    cmds.forEach((cmd, i) => {
      const r = runs[i]!;
      assert.equal(r.status, 0, `${cmd.join(' ')}: ${r.stderr}`);
      assert.match(r.stdout, new RegExp(`Usage:[\\s\\S]*custos ${cmd.join(' ')}`));
    });
    const top = runs[cmds.length]!;
    assert.equal(top.status, 0);
    assert.match(top.stdout, /^\s+client\s/m);
    assert.match(top.stdout, /^\s+user\s/m);
  });

  it('adds users (--json: one object), rejects duplicates and bad input, lists without hashes', () => {
    const a = custos(dataDir, 'user', 'add', '--username', 'alice@example.org', '--password', 'correct horse', '--patient', 'pat-1', '--json');
    assert.equal(a.status, 0, a.stderr);
    const alice = JSON.parse(a.stdout);
    assert.match(alice.account_id, /^u-[A-Za-z0-9_-]{22}$/);
    assert.equal(alice.username, 'alice@example.org');
    assert.equal(alice.fhir_user, 'Patient/pat-1');
    const b = custos(dataDir, 'user', 'add', '--username', 'dr.bob', '--password', 'stethoscope', '--practitioner', 'prac-9', '--break-glass');
    assert.equal(b.status, 0, b.stderr);
    assert.match(b.stdout, /dr\.bob/);
    const dup = custos(dataDir, 'user', 'add', '--username', 'alice@example.org', '--password', 'another one', '--patient', 'pat-2');
    assert.equal(dup.status, 2);
    assert.match(dup.stderr, /already/);
    assert.equal(custos(dataDir, 'user', 'add', '--username', 'carol', '--password', 'short', '--patient', 'p').status, 2);
    assert.equal(custos(dataDir, 'user', 'add', '--username', 'carol', '--password', 'long enough', '--patient', 'p', '--practitioner', 'q').status, 2);
    assert.equal(custos(dataDir, 'user', 'add', '--username', 'carol', '--password', 'long enough').status, 2);
    const j = custos(dataDir, 'user', 'list', '--json');
    assert.equal(j.status, 0, j.stderr);
    const users = JSON.parse(j.stdout) as Array<Record<string, unknown>>;
    assert.deepEqual(users.map((u) => [u.username, u.fhir_user, u.break_glass]), [['alice@example.org', 'Patient/pat-1', false], ['dr.bob', 'Practitioner/prac-9', true]]);
    assert.ok(users.every((u) => !('password_hash' in u)));
    const t = custos(dataDir, 'user', 'list');
    assert.equal(t.status, 0);
    assert.doesNotMatch(t.stdout + j.stdout, /scrypt\$|correct horse|stethoscope/);
    assert.match(t.stdout, /^ACCOUNT_ID\s+USERNAME\s+FHIR_USER/);
    assert.match(t.stdout, /dr\.bob\s+Practitioner\/prac-9\s+active\s+yes/);
  });

  it('stores what the CLI added where the Registry (the server side) finds it', async () => {
    const db = openAuthDb(dataDir);
    try {
      const reg = new Registry(db, loadMasterKeys(dataDir));
      assert.equal(reg.getClient(confidential.client_id)?.clientSecret, confidential.client_secret);
      assert.equal((await reg.authenticate('alice@example.org', 'correct horse'))?.fhirUser, 'Patient/pat-1');
      assert.ok(reg.getClient(publicId)?.revokedAt instanceof Date);
    } finally {
      db.close();
    }
  });
});

describe('Registry', () => {
  let dataDir: string;
  let db: AuthDb;
  let keys: MasterKeys;
  let reg: Registry;

  before(() => {
    dataDir = tempDir();
    db = openAuthDb(dataDir);
    keys = loadMasterKeys(dataDir);
    reg = new Registry(db, keys);
  });
  after(() => db.close());

  const publicClient = (over: Partial<NewClient> = {}): NewClient => ({ type: 'public', redirectUris: ['https://app.example/cb'], scope: 'openid launch/patient patient/*.rs', ...over });
  const backendClient = (over: Partial<NewClient> = {}): NewClient => ({ type: 'backend', jwks: { keys: [publicJwk('ec384')] }, scope: 'system/Observation.cruds', ...over });

  it('creates the schema once (meta schema_version 1, WAL, foreign keys, busy timeout) and reopens it', () => {
    assert.equal((db.prepare("SELECT value FROM meta WHERE key = 'schema_version'").get() as { value: string }).value, '1');
    assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
    assert.equal(db.pragma('foreign_keys', { simple: true }), 1);
    assert.equal(db.pragma('busy_timeout', { simple: true }), 5000);
    const tables = (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]).map((t) => t.name).sort();
    assert.deepEqual(tables, ['break_glass_access', 'break_glass_grant', 'client', 'launch_context', 'meta', 'oidc_payload', 'revoked_token', 'user_account']);
    const idx = (db.prepare("SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'oidc_payload' AND sql IS NOT NULL").all() as { sql: string }[]).map((r) => r.sql);
    for (const col of ['grant_id', 'uid', 'user_code', 'expires_at']) assert.ok(idx.some((s) => s.includes(`(${col})`)), col);
    assert.throws(() => db.prepare("INSERT INTO client (client_id, type, scope, created_at) VALUES ('x', 'weird', 'openid', 0)").run(), /CHECK/);
    const again = openAuthDb(dataDir);
    assert.equal((again.prepare('SELECT count(*) AS n FROM meta').get() as { n: number }).n, 1);
    again.close();
  });

  it('refuses an auth.db of another schema version', () => {
    const dir = tempDir();
    const d = openAuthDb(dir);
    d.prepare("UPDATE meta SET value = '2' WHERE key = 'schema_version'").run();
    d.close();
    assert.throws(() => openAuthDb(dir), /schema version 2/);
  });

  it('accepts valid clients of each type and gives ids of the c-<22 base64url> form', async () => {
    const pub = reg.addClient(publicClient({ name: 'A', redirectUris: ['https://app.example/cb', 'http://127.0.0.1:8000/cb?x=1'] }));
    assert.match(pub.client.clientId, CLIENT_ID);
    assert.equal(pub.clientSecret, undefined);
    assert.deepEqual(pub.client.redirectUris, ['https://app.example/cb', 'http://127.0.0.1:8000/cb?x=1']);
    assert.equal(pub.client.trusted, false);
    assert.ok(pub.client.createdAt instanceof Date && Math.abs(pub.client.createdAt.getTime() - Date.now()) < 60_000);
    const conf = reg.addClient({ ...publicClient(), type: 'confidential', scope: 'openid fhirUser user/Observation.rs?category=vital-signs user/Patient.read' });
    assert.match(conf.clientSecret!, /^[A-Za-z0-9_-]{43}$/);
    const keySet = { keys: [publicJwk('rsa', { kid: 'r', alg: 'RS384', use: 'sig' }), publicJwk('ec384', { kid: 'e' }), publicJwk('ec256', { kid: 'e2' })] };
    const be = reg.addClient(backendClient({ jwks: keySet, actor: 'Organization/acme', trusted: true, scope: 'system/*.* system/Observation.write' }));
    assert.equal(be.clientSecret, undefined);
    assert.equal(be.client.trusted, true);
    assert.equal(be.client.actor, 'Organization/acme');
    assert.deepEqual(be.client.jwks, keySet);
    // Every key we accept is a public key jose can use to verify.
    const algFor = (k: Record<string, unknown>) => (k.kty === 'RSA' ? 'RS384' : k.crv === 'P-384' ? 'ES384' : 'ES256');
    for (const k of be.client.jwks!.keys as Record<string, unknown>[]) {
      const imported = await jose.importJWK(k as jose.JWK, algFor(k));
      assert.equal((imported as { type: string }).type, 'public');
    }
    const viaUri = reg.addClient({ type: 'backend', jwksUri: 'https://dev.example/jwks.json', scope: 'system/Device.rs' });
    assert.equal(viaUri.client.jwksUri, 'https://dev.example/jwks.json');
    assert.equal(viaUri.client.jwks, undefined);
    assert.notEqual(pub.client.clientId, conf.client.clientId);
  });

  it('registers a confidential client with keys as asymmetric: no secret, keys kept', () => {
    const added = reg.addClient({ type: 'confidential', redirectUris: ['https://app.example/cb'], scope: 'openid launch/patient patient/*.rs', jwks: { keys: [publicJwk('ec384', { kid: 'app-1', alg: 'ES384' })] } });
    assert.equal(added.clientSecret, undefined);
    const back = reg.getClient(added.client.clientId)!;
    assert.equal(back.clientSecret, undefined);
    assert.deepEqual(back.jwks!.keys.map((k) => (k as { kid: string }).kid), ['app-1']);
    const withSecret = reg.addClient({ type: 'confidential', redirectUris: ['https://app.example/cb'], scope: 'openid' });
    assert.equal(typeof withSecret.clientSecret, 'string');
  });

  it('rejects invalid clients with a clear ValidationError', () => {
    const offCurve = publicJwk('ec384');
    offCurve.x = Buffer.from(randomBytes(48)).toString('base64url');
    const cases: Array<[string, NewClient, RegExp]> = [
      ['unknown type', { ...publicClient(), type: 'weird' as never }, /type/],
      ['public without redirect URI', publicClient({ redirectUris: [] }), /redirect URI/],
      ['confidential without redirect URI', { type: 'confidential', scope: 'openid' }, /redirect URI/],
      ['relative redirect URI', publicClient({ redirectUris: ['/cb'] }), /absolute/],
      ['non-http redirect URI', publicClient({ redirectUris: ['myapp://cb'] }), /http/],
      ['redirect URI with fragment', publicClient({ redirectUris: ['https://app.example/cb#frag'] }), /fragment/],
      ['public with jwks', publicClient({ jwks: { keys: [publicJwk('ec384')] } }), /jwks/],
      ['empty scope', publicClient({ scope: '  ' }), /scope/],
      ['unknown scope', publicClient({ scope: 'openid admin' }), /"admin"/],
      ['lower-case resource type', publicClient({ scope: 'patient/observation.read' }), /patient\/observation\.read/],
      ['no permission', publicClient({ scope: 'patient/Observation.' }), /permission/],
      ['scrambled permission', publicClient({ scope: 'patient/Observation.sr' }), /patient\/Observation\.sr/],
      ['backend with redirect URIs', backendClient({ redirectUris: ['https://a.example/cb'] }), /redirect/],
      ['backend without keys', { type: 'backend', scope: 'system/*.rs' }, /exactly one of jwks/],
      ['backend with jwks and jwksUri', backendClient({ jwksUri: 'https://a.example/jwks' }), /not both/],
      ['backend with a patient scope', backendClient({ scope: 'system/Observation.rs patient/*.rs' }), /system\//],
      ['backend with openid', backendClient({ scope: 'system/Observation.rs openid' }), /system\//],
      ['relative jwksUri', { type: 'backend', jwksUri: 'jwks.json', scope: 'system/*.rs' }, /absolute/],
      ['ftp jwksUri', { type: 'backend', jwksUri: 'ftp://a.example/jwks', scope: 'system/*.rs' }, /http/],
      ['jwks not a set', backendClient({ jwks: publicJwk('ec384') as never }), /JWK Set/],
      ['empty jwks', backendClient({ jwks: { keys: [] } }), /at least one key/],
      ['private EC key', backendClient({ jwks: { keys: [privateJwk('ec384')] } }), /private.*\bd\b/],
      ['private RSA key', backendClient({ jwks: { keys: [privateJwk('rsa')] } }), /private/],
      ['symmetric key', backendClient({ jwks: { keys: [{ kty: 'oct', k: 'c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0' }] } }), /private|kty/],
      ['Ed25519 key', backendClient({ jwks: { keys: [publicJwk('ed25519')] } }), /kty "OKP"/],
      ['P-521 key', backendClient({ jwks: { keys: [publicJwk('ec521')] } }), /P-521/],
      ['1024-bit RSA key', backendClient({ jwks: { keys: [publicJwk('rsa1024')] } }), /2048/],
      ['point not on the curve', backendClient({ jwks: { keys: [offCurve] } }), /not a valid EC public key/],
      ['RSA key without modulus', backendClient({ jwks: { keys: [{ kty: 'RSA', e: 'AQAB' }] } }), /"n"/],
      ['key for encryption', backendClient({ jwks: { keys: [publicJwk('ec384', { use: 'enc' })] } }), /use/],
      ['mismatched alg', backendClient({ jwks: { keys: [publicJwk('rsa', { alg: 'RS256' })] } }), /RS384/],
      ['actor of the wrong type', backendClient({ actor: 'Patient/p1' }), /actor/],
      ['actor with a bad id', backendClient({ actor: 'Device/has space' }), /actor/],
    ];
    const before = reg.listClients().length;
    for (const [what, client, message] of cases) {
      assert.throws(() => reg.addClient(client), (err: Error) => {
        assert.ok(err instanceof ValidationError, `${what}: ${err.stack}`);
        assert.match(err.message, message, what);
        return true;
      }, what);
    }
    assert.equal(reg.listClients().length, before, 'nothing stored for rejected clients');
  });

  it('keeps client secrets sealed at rest and bound to the client and the master key', () => {
    const { client, clientSecret } = reg.addClient({ ...publicClient(), type: 'confidential' });
    const raw = db.prepare('SELECT secret FROM client WHERE client_id = ?').get(client.clientId) as { secret: Buffer };
    assert.ok(Buffer.isBuffer(raw.secret));
    assert.ok(!raw.secret.includes(Buffer.from(clientSecret!, 'utf8')), 'no secret text in the column');
    assert.ok(!raw.secret.includes(Buffer.from(clientSecret!, 'base64url')), 'no secret bytes in the column');
    assert.equal(raw.secret.length, 12 + 16 + clientSecret!.length, 'nonce + tag + ciphertext');
    assert.equal(reg.getClient(client.clientId)?.clientSecret, clientSecret);
    assert.equal(reg.listClients().find((c) => c.clientId === client.clientId)?.clientId, client.clientId);
    assert.ok(reg.listClients().every((c) => !('clientSecret' in c)), 'listClients carries no secrets');
    // Public and backend clients have no secret at all.
    const pub = reg.addClient(publicClient());
    assert.equal((db.prepare('SELECT secret FROM client WHERE client_id = ?').get(pub.client.clientId) as { secret: Buffer | null }).secret, null);
    assert.equal(reg.getClient(pub.client.clientId)?.clientSecret, undefined);
    // Another master key cannot open it.
    const otherKeys = loadMasterKeys(tempDir(), randomBytes(32).toString('base64'));
    assert.throws(() => new Registry(db, otherKeys).getClient(client.clientId));
    // Copied onto another client row, the sealed secret does not open (AAD names the client).
    const other = reg.addClient({ ...publicClient(), type: 'confidential' });
    db.prepare('UPDATE client SET secret = ? WHERE client_id = ?').run(raw.secret, other.client.clientId);
    assert.throws(() => reg.getClient(other.client.clientId));
  });

  it('getClient returns revoked clients with revokedAt; revokeClient is false for unknown ids', () => {
    const { client } = reg.addClient(publicClient());
    assert.equal(reg.getClient(client.clientId)?.revokedAt, undefined);
    assert.equal(reg.revokeClient(client.clientId), true);
    const revoked = reg.getClient(client.clientId)!;
    assert.ok(revoked.revokedAt instanceof Date);
    assert.equal(reg.revokeClient(client.clientId), true);
    assert.equal(reg.getClient(client.clientId)!.revokedAt!.getTime(), revoked.revokedAt!.getTime(), 'a second revoke keeps the first time');
    assert.equal(reg.revokeClient('c-nosuchclientnosuchcli'), false);
    assert.equal(reg.getClient('c-nosuchclientnosuchcli'), undefined);
  });

  it('validates users', async () => {
    const cases: Array<[string, Parameters<Registry['addUser']>[0], RegExp]> = [
      ['fhirUser of another type', { username: 'u1', password: 'password1', fhirUser: 'Organization/o1' }, /fhirUser/],
      ['fhirUser without id', { username: 'u1', password: 'password1', fhirUser: 'Patient/' }, /fhirUser/],
      ['fhirUser with a slash in the id', { username: 'u1', password: 'password1', fhirUser: 'Patient/a/b' }, /fhirUser/],
      ['fhirUser id too long', { username: 'u1', password: 'password1', fhirUser: `Patient/${'a'.repeat(65)}` }, /fhirUser/],
      ['empty username', { username: '', password: 'password1', fhirUser: 'Patient/p' }, /username/],
      ['username with a space', { username: 'a b', password: 'password1', fhirUser: 'Patient/p' }, /username/],
      ['username too long', { username: 'a'.repeat(65), password: 'password1', fhirUser: 'Patient/p' }, /username/],
      ['short password', { username: 'u1', password: '1234567', fhirUser: 'Patient/p' }, /password/],
    ];
    for (const [what, user, message] of cases) {
      await assert.rejects(reg.addUser(user), (err: Error) => err instanceof ValidationError && message.test(err.message), what);
    }
    const ok = await reg.addUser({ username: 'a'.repeat(64), password: '12345678', fhirUser: `Practitioner/${'x'.repeat(64)}` });
    assert.match(ok.accountId, /^u-[A-Za-z0-9_-]{22}$/);
    assert.equal(ok.breakGlass, false);
    assert.equal(ok.disabledAt, undefined);
    await assert.rejects(reg.addUser({ username: 'a'.repeat(64), password: 'other password', fhirUser: 'Patient/p' }), /already taken/);
    assert.equal(reg.listUsers().filter((u) => u.username === 'a'.repeat(64)).length, 1);
    assert.deepEqual(reg.getUser(ok.accountId), ok);
    assert.deepEqual(reg.getUserByUsername('a'.repeat(64)), ok);
    assert.equal(reg.getUserByUsername('nobody'), undefined);
  });

  it('authenticates the right password only, and never unknown or disabled users', async () => {
    const u = await reg.addUser({ username: 'nurse.kim', password: 'Blue-Heron-42', fhirUser: 'Practitioner/kim', breakGlass: true });
    const stored = (db.prepare('SELECT password_hash FROM user_account WHERE account_id = ?').get(u.accountId) as { password_hash: string }).password_hash;
    assert.match(stored, /^scrypt\$32768\$8\$1\$/);
    assert.ok(!stored.includes('Blue-Heron-42'));
    const ok = await reg.authenticate('nurse.kim', 'Blue-Heron-42');
    assert.deepEqual(ok, u);
    assert.equal(ok?.breakGlass, true);
    assert.equal(await reg.authenticate('nurse.kim', 'blue-heron-42'), undefined);
    assert.equal(await reg.authenticate('nurse.kim', ''), undefined);
    assert.equal(await reg.authenticate('NURSE.KIM', 'Blue-Heron-42'), undefined);
    assert.equal(await reg.authenticate('nobody', 'Blue-Heron-42'), undefined);
    db.prepare('UPDATE user_account SET disabled_at = ? WHERE account_id = ?').run(Date.now(), u.accountId);
    assert.equal(await reg.authenticate('nurse.kim', 'Blue-Heron-42'), undefined, 'disabled');
    assert.ok(reg.getUser(u.accountId)?.disabledAt instanceof Date);
  });

  it('spends scrypt work on unknown usernames too (no timing shortcut)', async () => {
    await reg.addUser({ username: 'timing', password: 'timing-pass', fhirUser: 'Patient/t' });
    const time = async (name: string) => {
      const t0 = process.hrtime.bigint();
      await reg.authenticate(name, 'wrong password');
      return Number(process.hrtime.bigint() - t0) / 1e6;
    };
    const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const known: number[] = [];
    const unknown: number[] = [];
    for (let i = 0; i < 5; i++) {
      known.push(await time('timing'));
      unknown.push(await time(`ghost-${i}`));
    }
    // A lookup alone takes well under a millisecond; an scrypt verification tens of milliseconds.
    assert.ok(median(unknown) > 0.4 * median(known), `unknown ${median(unknown)} ms vs known ${median(known)} ms`);
  });

  it('shares one auth.db between two Registry instances (as the server and the CLI do)', async () => {
    const dir = tempDir();
    const dbA = openAuthDb(dir);
    const dbB = openAuthDb(dir);
    try {
      const k = loadMasterKeys(dir);
      const a = new Registry(dbA, k);
      const b = new Registry(dbB, loadMasterKeys(dir));
      const { client, clientSecret } = a.addClient({ ...publicClient(), type: 'confidential' });
      assert.equal(b.getClient(client.clientId)?.clientSecret, clientSecret);
      assert.deepEqual(b.listClients().map((c) => c.clientId), [client.clientId]);
      await b.addUser({ username: 'shared', password: 'shared-pass', fhirUser: 'Patient/s' });
      assert.equal((await a.authenticate('shared', 'shared-pass'))?.username, 'shared');
      assert.equal(b.revokeClient(client.clientId), true);
      assert.ok(a.getClient(client.clientId)?.revokedAt);
      // Another process holding the write lock makes us wait (busy_timeout), not fail at once.
      const holder = spawn(process.execPath, ['--input-type=module', '-e', `
        import Database from 'better-sqlite3';
        const db = new Database(${JSON.stringify(path.join(dir, 'auth.db'))});
        db.exec('BEGIN IMMEDIATE');
        process.stdout.write('locked\\n');
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1500);
        db.exec('COMMIT');
        process.stdout.write('committed ' + Date.now() + '\\n');
        db.close();
      `], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      holder.stdout!.on('data', (d) => { out += String(d); });
      await new Promise<void>((resolve, reject) => {
        holder.stdout!.on('data', () => { if (out.includes('locked')) resolve(); });
        holder.once('exit', (code) => reject(new Error(`lock holder exited ${code}`)));
      });
      // The lock is held now: the write below must wait for the holder's COMMIT, not fail with SQLITE_BUSY.
      const late = b.addClient(publicClient());
      const returnedAt = Date.now();
      assert.equal(a.getClient(late.client.clientId)?.clientId, late.client.clientId);
      // 'close': after its stdout has been read to the end.
      await new Promise((resolve) => holder.once('close', resolve));
      const committedAt = Number(/committed (\d+)/.exec(out)?.[1]);
      assert.ok(returnedAt >= committedAt, `the write returned (${returnedAt}) after the other process committed (${committedAt})`);
    } finally {
      dbA.close();
      dbB.close();
    }
  });
});

describe('passwords', () => {
  it('hashes as scrypt$N$r$p$salt$hash with N=2^15, r=8, p=1, a 16-byte salt and a 32-byte key', async () => {
    const h = await hashPassword('hunter2hunter2');
    const m = /^scrypt\$32768\$8\$1\$([A-Za-z0-9_-]+)\$([A-Za-z0-9_-]+)$/.exec(h);
    assert.ok(m, h);
    assert.equal(Buffer.from(m[1]!, 'base64url').length, 16);
    assert.equal(Buffer.from(m[2]!, 'base64url').length, 32);
    assert.notEqual(await hashPassword('hunter2hunter2'), h, 'a fresh salt each time');
  });

  it('verifies the right password and rejects others', async () => {
    const h = await hashPassword('pässwörd 🔑');
    assert.equal(await verifyPassword('pässwörd 🔑', h), true);
    assert.equal(await verifyPassword('pässwörd', h), false);
    assert.equal(await verifyPassword('', h), false);
    const h2 = await hashPassword('x');
    assert.equal(await verifyPassword('x', h2), true);
    assert.equal(await verifyPassword('X', h2), false);
  });

  it('returns false, without throwing, on malformed or hostile hashes', async () => {
    const good = await hashPassword('secret-password');
    const [, n, r, p, salt, hash] = good.split('$');
    const bad = [
      '',
      'garbage',
      `bcrypt$${n}$${r}$${p}$${salt}$${hash}`,
      `scrypt$${n}$${r}$${p}$${salt}`,
      `scrypt$${n}$${r}$${p}$${salt}$${hash}$extra`,
      `scrypt$1000$${r}$${p}$${salt}$${hash}`, // N not a power of two
      `scrypt$0$${r}$${p}$${salt}$${hash}`,
      `scrypt$${2 ** 30}$${r}$${p}$${salt}$${hash}`, // would need 128 GiB
      `scrypt$${n}$-8$${p}$${salt}$${hash}`,
      `scrypt$${n}$${r}$${p}$${salt}$not*base64`,
      `scrypt$${n}$${r}$${p}$$${hash}`,
      `scrypt$${n}$${r}$${p}$${salt}$${hash!.slice(0, 10)}`,
      `scrypt$${n}$${r}$${p}$${salt}$${Buffer.from(hash!, 'base64url').subarray(0, 31).toString('base64url')}`, // truncated key (a prefix would match)
      `scrypt$${n}$${r}$${p}$${Buffer.from(salt!, 'base64url').subarray(0, 8).toString('base64url')}$${hash}`, // short salt
      `scrypt$16384$${r}$${p}$${salt}$${hash}`, // other parameters give another key
    ];
    for (const encoded of bad) {
      assert.equal(await verifyPassword('secret-password', encoded), false, encoded);
    }
    assert.equal(await verifyPassword('secret-password', undefined as never), false);
    assert.equal(await verifyPassword(undefined as never, good), false);
    assert.equal(await verifyPassword('secret-password', good), true, 'the unmangled hash still verifies');
  });
});
