/**
 * Issue 17, points 9, 16 and 17: login throttling (per username and per address, audited, no
 * scrypt while locked, password checks off the libuv pool and bounded), access tokens issued in
 * the future, request timeouts, and an AuditEvent for every refused access token.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { AuditEvent, Bundle } from '@medplum/fhirtypes';
import { decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, importJWK, SignJWT, type JWK, type JWTPayload } from 'jose';
import { PasswordBusyError, PasswordHasher } from '../src/smart-auth/passwords.js';
import { addressKeyOf } from '../src/smart-auth/login-throttle.js';
import { FHIR_JSON, testServer } from './helpers.js';
import { authorizeUrl, CookieJar, jarFetch, newCredentials, pageText, pkcePair, UNUSED_REDIRECT_URI } from './smart-helpers.js';

type Server = Awaited<ReturnType<typeof testServer>>;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/**
 * These servers check sign-in, tokens and connections, not FHIR validation or searches in worker
 * threads (write-pool, read-pool and the other suites cover those): without the threads a server
 * starts without loading the FHIR definitions once per thread, seconds of CPU on a small machine.
 */
const NO_WORKERS = { WRITE_WORKERS: '0', READ_WORKERS: '0' };
const LOCAL = new Set(['127.0.0.1', '::ffff:127.0.0.1']);

/** A browser at the login form of one authorization request: post credentials to it as often as needed. */
async function loginForm(s: Server, clientId: string): Promise<(username: string, password: string) => Promise<{ status: number; retryAfter: string | null; text: string }>> {
  const jar = new CookieJar();
  let url = authorizeUrl(s.app.auth.endpoints.authorize, { clientId, redirectUri: UNUSED_REDIRECT_URI, scope: 'launch/patient patient/*.rs', aud: s.base, codeChallenge: pkcePair().challenge });
  for (let i = 0; i < 5; i++) {
    const res = await jarFetch(jar, url);
    if (res.status >= 300 && res.status < 400) {
      await res.arrayBuffer();
      url = new URL(res.headers.get('location')!, url).href;
      continue;
    }
    const action = /<form\b[^>]*\baction="([^"]*\/login)"/.exec(await res.text())?.[1];
    assert.ok(action, `a login form at ${url}`);
    const target = new URL(action, url).href;
    return async (username, password) => {
      const r = await jarFetch(jar, target, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ username, password }).toString() });
      return { status: r.status, retryAfter: r.headers.get('retry-after'), text: pageText(await r.text()) };
    };
  }
  throw new Error('no login form');
}

function publicClient(s: Server): string {
  return s.app.auth.registry.addClient({ type: 'public', name: 'throttle test app', redirectUris: [UNUSED_REDIRECT_URI], scope: 'launch/patient patient/*.rs' }).client.clientId;
}

/** Tries the right password until the lock has ended (waiting Retry-After each time); the successful attempt's status. */
async function loginOnceUnlocked(login: Awaited<ReturnType<typeof loginForm>>, username: string, password: string): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const r = await login(username, password);
    if (r.status !== 429) return r.status;
    await sleep(Number(r.retryAfter) * 1000);
  }
  throw new Error('still locked');
}

/** The AuditEvents written so far (from the store, after a flush). */
async function auditEvents(s: Server): Promise<AuditEvent[]> {
  await s.app.audit!.flush();
  const ids = s.app.store.currentIds('AuditEvent');
  return Promise.all(ids.map(async (id) => (await s.app.store.read('AuditEvent', id))!.resource as AuditEvent));
}

const addressOf = (e: AuditEvent) => e.agent?.find((a) => a.network?.address)?.network?.address;

describe('login throttling', () => {
  let s: Server;
  let clientId: string;
  before(async () => {
    s = await testServer({ LOGIN_MAX_FAILURES: '3', LOGIN_ADDRESS_MAX_FAILURES: '100', LOGIN_LOCK_SECONDS: '2', LOGIN_WINDOW_SECONDS: '600', ...NO_WORKERS });
    clientId = publicClient(s);
  });
  after(async () => { await s?.close(); });

  it('locks a username after N wrong passwords: even the right one is refused (429, Retry-After, no password check) until the lock ends', async () => {
    const creds = newCredentials('locked');
    const user = await s.app.auth.registry.addUser({ ...creds, fhirUser: 'Patient/throttled-1' });
    const login = await loginForm(s, clientId);
    for (let i = 0; i < 3; i++) {
      const r = await login(creds.username, 'wrong password');
      assert.equal(r.status, 401, r.text);
      assert.match(r.text, /wrong password/);
    }
    const checks = s.app.auth.passwords.checks;
    for (const password of [creds.password, 'wrong password']) {
      const refused = await login(creds.username, password);
      assert.equal(refused.status, 429, refused.text);
      assert.match(refused.text, /Too many failed sign-ins for this username/);
      assert.ok(Number(refused.retryAfter) >= 1 && Number(refused.retryAfter) <= 2, `Retry-After ${refused.retryAfter}`);
      assert.match(refused.text, /Sign in/, 'the login form again, with the message');
    }
    assert.equal(s.app.auth.passwords.checks, checks, 'no password was checked while locked');
    // Other usernames from the same address are not locked.
    const other = newCredentials('other');
    await s.app.auth.registry.addUser({ ...other, fhirUser: 'Patient/throttled-2' });
    assert.equal((await (await loginForm(s, clientId))(other.username, other.password)).status, 303);
    // Once the lock ends the right password signs in.
    assert.equal(await loginOnceUnlocked(login, creds.username, creds.password), 303);

    // Every failed and every throttled attempt is in the audit trail: login, outcome 4, the address, the account's patient.
    const mine = (await auditEvents(s)).filter((e) => e.subtype?.[0]?.code === '110122' && e.entity?.some((x) => x.what?.reference === user.fhirUser));
    const outcomes = mine.map((e) => `${e.outcome} ${e.outcomeDesc ?? ''}`.trim());
    assert.equal(outcomes.filter((o) => o === '4 HTTP 401').length, 3, outcomes.join(', '));
    assert.ok(outcomes.filter((o) => o === '4 HTTP 429').length >= 2, outcomes.join(', '));
    for (const e of mine.filter((x) => x.outcome === '4')) {
      assert.ok(LOCAL.has(addressOf(e) ?? ''), `network address in ${JSON.stringify(e.agent)}`);
      assert.equal(e.type?.code, '110114');
      assert.ok(!e.agent?.some((a) => a.who?.reference === user.fhirUser), 'the account tried is not named as the one who tried');
    }
  });

  it('a success resets the username\'s failures', async () => {
    const creds = newCredentials('reset');
    await s.app.auth.registry.addUser({ ...creds, fhirUser: 'Patient/throttled-3' });
    const login = await loginForm(s, clientId);
    assert.equal((await login(creds.username, 'nope')).status, 401);
    assert.equal((await login(creds.username, 'nope')).status, 401);
    assert.equal((await (await loginForm(s, clientId))(creds.username, creds.password)).status, 303);
    // Without the reset the third of these would lock; they stay plain failures.
    assert.equal((await login(creds.username, 'nope')).status, 401);
    assert.equal((await login(creds.username, 'nope')).status, 401);
    assert.equal((await (await loginForm(s, clientId))(creds.username, creds.password)).status, 303);
  });

  it('unknown usernames lock like real ones (a lock does not tell whether a user exists)', async () => {
    const login = await loginForm(s, clientId);
    const ghost = `ghost-${randomUUID()}`;
    for (let i = 0; i < 3; i++) assert.equal((await login(ghost, 'x')).status, 401);
    assert.equal((await login(ghost, 'x')).status, 429);
  });

  it('parallel wrong logins of one username get no more than N password checks', async () => {
    const creds = newCredentials('burst');
    await s.app.auth.registry.addUser({ ...creds, fhirUser: 'Patient/throttled-4' });
    const login = await loginForm(s, clientId);
    const statuses = (await Promise.all(Array.from({ length: 8 }, () => login(creds.username, 'wrong password')))).map((r) => r.status);
    assert.ok(statuses.every((x) => x === 401 || x === 429), statuses.join());
    const failed = statuses.filter((x) => x === 401).length;
    assert.ok(failed >= 1 && failed <= 3, statuses.join());
    assert.equal((await login(creds.username, creds.password)).status, 429, 'locked now');
  });
});

describe('login throttling per network address', () => {
  let s: Server;
  before(async () => {
    s = await testServer({ LOGIN_MAX_FAILURES: '10', LOGIN_ADDRESS_MAX_FAILURES: '4', LOGIN_LOCK_SECONDS: '2', ...NO_WORKERS });
  });
  after(async () => { await s?.close(); });

  it('locks an address after N failures across different usernames; a success does not reset it', async () => {
    const clientId = publicClient(s);
    const creds = newCredentials('victim');
    await s.app.auth.registry.addUser({ ...creds, fhirUser: 'Practitioner/throttled-5' });
    const login = await loginForm(s, clientId);
    assert.equal((await login(`spray-${randomUUID()}`, 'guess')).status, 401);
    assert.equal((await login(`spray-${randomUUID()}`, 'guess')).status, 401);
    assert.equal((await login(creds.username, creds.password)).status, 303);
    const next = await loginForm(s, clientId);
    assert.equal((await next(`spray-${randomUUID()}`, 'guess')).status, 401);
    assert.equal((await next(`spray-${randomUUID()}`, 'guess')).status, 401, 'the fourth failure from this address locks it');
    const checks = s.app.auth.passwords.checks;
    const refused = await next(creds.username, creds.password);
    assert.equal(refused.status, 429);
    assert.match(refused.text, /from your network address/);
    assert.ok(Number(refused.retryAfter) >= 1);
    assert.equal((await next(`spray-${randomUUID()}`, 'guess')).status, 429);
    assert.equal(s.app.auth.passwords.checks, checks);
    assert.equal(await loginOnceUnlocked(next, creds.username, creds.password), 303);
    // A refused login of a practitioner's username names the Practitioner as the entity tried.
    const events = (await auditEvents(s)).filter((e) => e.subtype?.[0]?.code === '110122' && e.outcomeDesc === 'HTTP 429');
    assert.ok(events.some((e) => e.entity?.some((x) => x.what?.reference === 'Practitioner/throttled-5')));
  });
});

describe('password hashing thread', () => {
  it('checks passwords off the libuv pool, one at a time, refusing beyond its queue', async () => {
    const hasher = new PasswordHasher({ maxQueued: 1 });
    try {
      const hash = await hasher.hash('correct horse battery');
      const first = hasher.verify('correct horse battery', hash);
      const second = hasher.verify('wrong', hash);
      // One running, one waiting: a third is refused at once, before any scrypt.
      await assert.rejects(hasher.verify('correct horse battery', hash), PasswordBusyError);
      assert.equal(await first, true);
      assert.equal(await second, false);
      assert.equal(await hasher.verify('correct horse battery', hash), true, 'room again once the queue drained');
      assert.equal(await hasher.verify('x', 'scrypt$1$1$1$AAAA$AAAA'), false, 'a malformed hash is a mismatch');
      assert.equal(hasher.checks, 3);
    } finally {
      await hasher.close();
    }
  });

  it('throttles IPv6 clients by their /64', () => {
    assert.equal(addressKeyOf('2001:db8:1:2:aaaa::1'), addressKeyOf('2001:db8:1:2:bbbb:cccc:dddd:eeee'));
    assert.notEqual(addressKeyOf('2001:db8:1:2::1'), addressKeyOf('2001:db8:1:3::1'));
    assert.equal(addressKeyOf('::ffff:10.0.0.1'), '10.0.0.1');
    assert.equal(addressKeyOf('::1'), '0:0:0:0::/64');
  });
});

describe('access tokens and connections', () => {
  let s: Server;
  before(async () => {
    s = await testServer({ REQUEST_TIMEOUT: '2', ...NO_WORKERS });
  });
  after(async () => { await s?.close(); });

  const fhir = async (p: string, token: string) => {
    const res = await fetch(`${s.base}/${p}`, { headers: { authorization: `Bearer ${token}`, accept: FHIR_JSON } });
    const text = await res.text();
    return { status: res.status, www: res.headers.get('www-authenticate') ?? '', body: text ? JSON.parse(text) : undefined };
  };
  const signingKey = (): JWK => {
    const stored = JSON.parse(fs.readFileSync(path.join(s.config.dataDir, 'keys', 'signing-keys.json'), 'utf8')) as { keys: Array<{ jwk: JWK }> };
    return stored.keys.find((k) => k.jwk.kid === decodeProtectedHeader(s.token).kid)!.jwk;
  };
  const sign = async (claims: JWTPayload, jwk: JWK) => new SignJWT(claims).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid: jwk.kid! }).sign(await importJWK(jwk, 'RS256'));
  const claims = (over: JWTPayload = {}): JWTPayload => {
    const now = Math.floor(Date.now() / 1000);
    const { jti: _j, iat: _i, exp: _e, ...rest } = decodeJwt(s.token);
    return { ...rest, jti: randomUUID(), iat: now, exp: now + 7200, ...over };
  };

  it('refuses a token whose iat is beyond the clock-skew allowance (401 OperationOutcome); within it, accepts', async () => {
    const now = Math.floor(Date.now() / 1000);
    const ahead = await fhir('Patient?_count=1', await sign(claims({ iat: now + 3600 }), signingKey()));
    assert.equal(ahead.status, 401);
    assert.equal(ahead.body.resourceType, 'OperationOutcome');
    assert.match(ahead.www, /invalid_token/);
    assert.match(ahead.body.issue[0].diagnostics, /iat.*future/);
    assert.equal((await fhir('Patient?_count=1', await sign(claims({ iat: now + 20 }), signingKey()))).status, 200);
    const noIat = claims();
    delete noIat.iat;
    assert.equal((await fhir('Patient?_count=1', await sign(noIat, signingKey()))).status, 401);
  });

  it('records every refused access token: outcome 4, the network address and the client the token names', async () => {
    const refusals = async (): Promise<AuditEvent[]> => {
      await s.app.audit!.flush();
      // An administrator (trusted system token) finds them in the trail.
      const res = await fetch(`${s.base}/AuditEvent?outcome=4&_count=1000`, { headers: { authorization: `Bearer ${s.token}` } });
      assert.equal(res.status, 200);
      return ((await res.json()) as Bundle<AuditEvent>).entry!.map((e) => e.resource!).filter((e) => e.subtype?.[0]?.code === 'access-token');
    };
    const before = new Set((await refusals()).map((e) => e.id));
    const clientId = decodeJwt(s.token).client_id as string;
    const [h, p, sig] = s.token.split('.') as [string, string, string];
    const i = Math.floor(sig.length / 2);
    const tampered = `${h}.${p}.${sig.slice(0, i)}${sig[i] === 'A' ? 'B' : 'A'}${sig.slice(i + 1)}`;
    assert.equal((await fhir('Patient', tampered)).status, 401);
    const { privateKey } = await generateKeyPair('RS256', { extractable: true });
    const forged = await sign(claims({ client_id: 'mallory-app', patient: 'someone' }), { ...(await exportJWK(privateKey)), kid: 'not-ours' });
    assert.equal((await fhir('Observation', forged)).status, 401);
    assert.equal((await fetch(`${s.base}/Patient`)).status, 401);
    const found = (await refusals()).filter((e) => !before.has(e.id));
    assert.equal(found.length, 3, JSON.stringify(found));
    const clientOf = (e: AuditEvent) => e.agent?.find((a) => a.who?.identifier?.system === 'urn:custos:client')?.who?.identifier?.value;
    for (const e of found) {
      assert.equal(e.outcome, '4');
      assert.equal(e.outcomeDesc, 'HTTP 401');
      assert.equal(e.type?.code, '110114');
      assert.ok(LOCAL.has(addressOf(e) ?? ''), JSON.stringify(e.agent));
      assert.equal(e.entity, undefined, 'an unverified token names no patient');
    }
    assert.deepEqual(found.map(clientOf).sort(), [clientId, 'mallory-app', undefined].sort(), 'the client each token names; none without a token');
  });

  /** Raw HTTP on a socket: what came back, once the server ended the connection (or after `limitMs`). */
  function rawRequest(head: string, bodyPart: string, limitMs: number): Promise<{ ended: boolean; received: string }> {
    return new Promise((resolve, reject) => {
      const url = new URL(s.base);
      const sock = net.connect(Number(url.port), url.hostname);
      let received = '';
      const give = setTimeout(() => { sock.destroy(); resolve({ ended: false, received }); }, limitMs);
      sock.on('data', (d) => { received += d.toString('latin1'); });
      sock.on('error', (err) => { if ((err as NodeJS.ErrnoException).code !== 'ECONNRESET') reject(err); });
      sock.on('close', () => { clearTimeout(give); resolve({ ended: true, received }); });
      sock.on('connect', () => { sock.write(head + bodyPart); });
    });
  }

  it('closes a connection whose body trickles in slower than REQUEST_TIMEOUT (408)', async () => {
    const head = `POST /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${s.token}\r\nContent-Type: application/fhir+json\r\nContent-Length: 1000\r\n\r\n`;
    const r = await rawRequest(head, '{"resourceType":', 30_000);
    assert.ok(r.ended, 'the server ended the stalled request');
    if (r.received) assert.match(r.received, /^HTTP\/1\.1 408/);
    assert.equal(s.app.store.currentIds('Patient').length, 0, 'nothing half written');
  });

  it('closes a connection whose headers never end', async () => {
    const r = await rawRequest('GET /fhir/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ', '', 30_000);
    assert.ok(r.ended);
    if (r.received) assert.match(r.received, /^HTTP\/1\.1 408/);
  });
});
