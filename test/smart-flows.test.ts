/**
 * SMART on FHIR end to end, over real HTTP against one listening server: discovery, the real
 * SMART JS client (fhirclient) doing a standalone patient launch, Backend Services, RFC 7662/7009,
 * a negative matrix for the token endpoint, /auth/authorize and the resource server, and scope
 * negotiation (asked ∩ client's allowed ∩ user's approval).
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import smart from 'fhirclient';
import { decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, importJWK, SignJWT, type JWK, type JWTPayload } from 'jose';
import { covers, parseScopes } from '../src/smart-auth/scopes.js';
import { backendKeyPair, clientAssertion, FHIR_JSON, testServer, tokenForm } from './helpers.js';
import {
  authorizeUrl, authorizeWithLogin, AuthorizeRedirectError, codeFlow, exchangeCode, newCredentials, pageText, pkcePair,
  patientToken, postForm, refreshToken, UNUSED_REDIRECT_URI, type TokenResult,
} from './smart-helpers.js';

type Server = Awaited<ReturnType<typeof testServer>>;
type BackendKey = Awaited<ReturnType<typeof backendKeyPair>>;

const ASSERTION_TYPE = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer';

const REQUIRED_CAPABILITIES = [
  'launch-ehr', 'launch-standalone', 'client-public', 'client-confidential-symmetric', 'client-confidential-asymmetric',
  'context-ehr-patient', 'context-standalone-patient', 'permission-offline', 'permission-patient', 'permission-user',
  'permission-v1', 'permission-v2', 'sso-openid-connect',
];

interface FhirResult { status: number; headers: Headers; body: any }

describe('SMART on FHIR flows (listening server)', () => {
  let server: Server;
  let origin: string;
  let e: Server['app']['auth']['endpoints'];
  let patientA: string;
  let patientB: string;
  const obsA: string[] = [];
  const obsB: string[] = [];

  // ------------------------------------------------------------------------------------------
  // small helpers bound to the server
  // ------------------------------------------------------------------------------------------

  async function fhir(p: string, o: { token?: string | null; method?: string; body?: unknown; authorization?: string } = {}): Promise<FhirResult> {
    const headers: Record<string, string> = { accept: FHIR_JSON };
    if (o.authorization !== undefined) headers.authorization = o.authorization;
    else if (o.token !== null) headers.authorization = `Bearer ${o.token ?? server.token}`;
    if (o.body !== undefined) headers['content-type'] = FHIR_JSON;
    const res = await fetch(`${server.base}/${p}`, { method: o.method ?? 'GET', headers, body: o.body === undefined ? undefined : JSON.stringify(o.body) });
    const text = await res.text();
    return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : undefined };
  }

  function observation(patient: string | undefined, value: number): Record<string, unknown> {
    return {
      resourceType: 'Observation', status: 'final',
      code: { coding: [{ system: 'http://loinc.org', code: '8867-4', display: 'Heart rate' }] },
      ...(patient ? { subject: { reference: `Patient/${patient}` } } : {}),
      valueQuantity: { value, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
    };
  }

  async function create(resource: Record<string, unknown>): Promise<string> {
    const r = await fhir(String(resource.resourceType), { method: 'POST', body: resource });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    return r.body.id as string;
  }

  function registerBackend(key: BackendKey, scope: string): string {
    return server.app.auth.registry.addClient({ type: 'backend', name: `backend ${key.alg}`, jwks: key.jwks, scope }).client.clientId;
  }

  async function backendToken(key: BackendKey, clientId: string, scope: string, over: { jti?: string; expInS?: number; aud?: string } = {}): Promise<TokenResult> {
    return postForm(e.token, tokenForm(await clientAssertion(key, clientId, e.token, over), scope));
  }

  async function assertionAuth(key: BackendKey, clientId: string): Promise<Record<string, string>> {
    return { client_assertion_type: ASSERTION_TYPE, client_assertion: await clientAssertion(key, clientId, e.token) };
  }

  function publicClient(scope: string, redirectUris = [UNUSED_REDIRECT_URI]): string {
    return server.app.auth.registry.addClient({ type: 'public', name: 'test app', redirectUris, scope }).client.clientId;
  }

  async function user(fhirUser: string): Promise<{ username: string; password: string }> {
    const creds = newCredentials(fhirUser.startsWith('Patient/') ? 'pat' : 'prac');
    await server.app.auth.registry.addUser({ ...creds, fhirUser });
    return creds;
  }

  /** GET on the authorize endpoint without following redirects: where does it send the browser? */
  async function authorizeOutcome(url: string): Promise<{ status: number; location: URL | null; html: string }> {
    const res = await fetch(url, { redirect: 'manual' });
    const loc = res.headers.get('location');
    return { status: res.status, location: loc ? new URL(loc, url) : null, html: await res.text() };
  }

  /** The server's current token signing key (private JWK) from DATA_DIR/keys/signing-keys.json. */
  function serverSigningKey(): JWK {
    const file = path.join(server.config.dataDir, 'keys', 'signing-keys.json');
    const stored = JSON.parse(fs.readFileSync(file, 'utf8')) as { keys: Array<{ jwk: JWK }> };
    const kid = decodeProtectedHeader(server.token).kid;
    const found = stored.keys.find((k) => k.jwk.kid === kid);
    assert.ok(found?.jwk.d, 'the signing key file holds the private key of the system token');
    return found.jwk;
  }

  /** Claims like the system token's, with a new jti and a fresh lifetime, then `over`. */
  function tokenClaims(over: JWTPayload = {}): JWTPayload {
    const now = Math.floor(Date.now() / 1000);
    const { jti: _j, iat: _i, exp: _e, ...rest } = decodeJwt(server.token);
    return { ...rest, jti: randomUUID(), iat: now, exp: now + 300, ...over };
  }

  async function signToken(claims: JWTPayload, jwk: JWK, header: Record<string, unknown> = {}): Promise<string> {
    const key = await importJWK(jwk, 'RS256');
    return new SignJWT(claims).setProtectedHeader({ alg: 'RS256', typ: 'at+jwt', kid: jwk.kid, ...header }).sign(key);
  }

  /** 401 + WWW-Authenticate: Bearer ... error="invalid_token" + OperationOutcome. */
  function assertInvalidToken(r: FhirResult, description?: RegExp): void {
    assert.equal(r.status, 401, JSON.stringify(r.body));
    const www = r.headers.get('www-authenticate') ?? '';
    assert.match(www, /^Bearer\b/);
    assert.match(www, /\berror="invalid_token"/);
    if (description) assert.match(www, description);
    assert.equal(r.body?.resourceType, 'OperationOutcome');
    assert.equal(r.body.issue[0].severity, 'error');
  }

  function assertOAuthError(r: TokenResult, status: number, error: string): void {
    assert.equal(r.body.error, error, JSON.stringify(r.body));
    assert.equal(r.status, status, JSON.stringify(r.body));
    assert.equal(r.body.access_token, undefined);
    assert.match(r.headers.get('content-type') ?? '', /^application\/json/);
  }

  function scopeSet(scope: unknown): Set<string> {
    return new Set(String(scope ?? '').split(' ').filter(Boolean));
  }

  // ------------------------------------------------------------------------------------------

  before(async () => {
    server = await testServer({ JWKS_PRIVATE_HOSTS: '127.0.0.1', CONSENT_BASE: 'permit' }); // consent: see consent-*.test.ts
    origin = server.url;
    e = server.app.auth.endpoints;
    patientA = await create({ resourceType: 'Patient', name: [{ family: 'Alpha', given: ['Ann'] }] });
    patientB = await create({ resourceType: 'Patient', name: [{ family: 'Beta', given: ['Ben'] }] });
    for (const v of [61, 62, 63]) obsA.push(await create(observation(patientA, v)));
    for (const v of [91, 92]) obsB.push(await create(observation(patientB, v)));
  });
  after(async () => server?.close());

  // ------------------------------------------------------------------------------------------
  describe('discovery', () => {
    it('/fhir/.well-known/smart-configuration has the SMART 2.x fields and capabilities', async () => {
      const res = await fetch(`${server.base}/.well-known/smart-configuration`);
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
      const c = (await res.json()) as Record<string, any>;
      assert.equal(c.issuer, `${origin}/auth`);
      assert.equal(c.jwks_uri, `${origin}/auth/jwks`);
      assert.equal(c.authorization_endpoint, `${origin}/auth/authorize`);
      assert.equal(c.token_endpoint, `${origin}/auth/token`);
      assert.equal(c.introspection_endpoint, `${origin}/auth/introspect`);
      assert.equal(c.revocation_endpoint, `${origin}/auth/revoke`);
      for (const g of ['authorization_code', 'client_credentials', 'refresh_token']) assert.ok(c.grant_types_supported.includes(g), g);
      for (const m of ['private_key_jwt', 'client_secret_basic']) assert.ok(c.token_endpoint_auth_methods_supported.includes(m), m);
      for (const a of ['RS384', 'ES384']) assert.ok(c.token_endpoint_auth_signing_alg_values_supported.includes(a), a);
      assert.ok(Array.isArray(c.scopes_supported));
      for (const s of ['openid', 'fhirUser', 'launch', 'launch/patient', 'offline_access']) assert.ok(c.scopes_supported.includes(s), s);
      assert.ok(c.response_types_supported.includes('code'));
      assert.deepEqual(c.code_challenge_methods_supported, ['S256']);
      for (const cap of REQUIRED_CAPABILITIES) assert.ok(c.capabilities.includes(cap), `capability ${cap}`);
    });

    it('/fhir/metadata (no token) links SMART through rest.security', async () => {
      const r = await fhir('metadata', { token: null });
      assert.equal(r.status, 200);
      assert.equal(r.body.resourceType, 'CapabilityStatement');
      const security = r.body.rest[0].security;
      const codings = security.service.flatMap((s: any) => s.coding ?? []);
      assert.ok(codings.some((c: any) => c.system === 'http://terminology.hl7.org/CodeSystem/restful-security-service' && c.code === 'SMART-on-FHIR'));
      const uris = security.extension.find((x: any) => x.url === 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris');
      assert.ok(uris, 'oauth-uris extension');
      const byName = Object.fromEntries(uris.extension.map((x: any) => [x.url, x.valueUri]));
      assert.equal(byName.authorize, e.authorize);
      assert.equal(byName.token, e.token);
    });

    it('/auth/jwks publishes public signing keys only, including the kid of issued tokens', async () => {
      const res = await fetch(`${origin}/auth/jwks`);
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /json/);
      const { keys } = (await res.json()) as { keys: Array<Record<string, unknown>> };
      assert.ok(keys.length >= 1);
      for (const k of keys) {
        for (const priv of ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k']) assert.equal(k[priv], undefined, `public JWKS has "${priv}"`);
        assert.equal(typeof k.kid, 'string');
        assert.ok(k.kty === 'RSA' || k.kty === 'EC');
      }
      assert.ok(keys.some((k) => k.kid === decodeProtectedHeader(server.token).kid));
    });
  });

  // ------------------------------------------------------------------------------------------
  describe('fhirclient standalone patient launch', () => {
    it('the SMART JS client launches, gets patient context, an id_token and a refresh token, and reads only its patient\'s Observations', async () => {
      // The "app": a tiny loopback HTTP server using fhirclient's Node adapter (launch + redirect page).
      const sessions = new Map<string, any>();
      const storage = {
        get: async (k: string) => sessions.get(k),
        set: async (k: string, v: any) => { sessions.set(k, v); return v; },
        unset: async (k: string) => sessions.delete(k),
      };
      let resolveClient!: (c: any) => void;
      let rejectClient!: (err: unknown) => void;
      const ready = new Promise<any>((res, rej) => { resolveClient = res; rejectClient = rej; });
      let clientId = '';
      let redirectUri = '';
      const scope = 'launch/patient openid fhirUser patient/Observation.rs patient/Patient.rs offline_access';
      const app = http.createServer((req, res) => {
        const url = new URL(req.url ?? '/', 'http://app');
        if (url.pathname === '/launch') {
          smart(req, res, storage).authorize({ iss: server.base, clientId, scope, redirectUri, pkceMode: 'required' })
            .catch((err: unknown) => { res.writeHead(500).end(String(err)); rejectClient(err); });
        } else if (url.pathname === '/callback') {
          smart(req, res, storage).ready().then(
            (client) => { res.writeHead(200, { 'content-type': 'text/plain' }).end('ready'); resolveClient(client); },
            (err: unknown) => { res.writeHead(500).end(String(err)); rejectClient(err); },
          );
        } else {
          res.writeHead(404).end();
        }
      });
      await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
      try {
        const appOrigin = `http://127.0.0.1:${(app.address() as AddressInfo).port}`;
        redirectUri = `${appOrigin}/callback`;
        clientId = publicClient(scope, [redirectUri]);
        const creds = await user(`Patient/${patientA}`);

        const launch = await fetch(`${appOrigin}/launch`, { redirect: 'manual' });
        assert.equal(launch.status, 302, await launch.clone().text());
        const authorizeLocation = launch.headers.get('location')!;
        assert.ok(authorizeLocation.startsWith(`${e.authorize}?`), authorizeLocation);
        const q = new URL(authorizeLocation).searchParams;
        assert.equal(q.get('code_challenge_method'), 'S256');
        assert.equal(q.get('aud'), server.base);

        const auth = await authorizeWithLogin({ authorizeUrl: authorizeLocation, ...creds });
        assert.ok(auth.redirectedTo.startsWith(`${redirectUri}?`));
        assert.equal(auth.state, q.get('state'));
        assert.equal(new URL(auth.redirectedTo).searchParams.get('iss'), e.issuer);
        const callback = await fetch(auth.redirectedTo);
        assert.equal(callback.status, 200, await callback.clone().text());
        assert.equal(await callback.text(), 'ready');
        const client = await ready;

        assert.equal(client.patient.id, patientA);
        const found = (await client.request('Observation', { pageLimit: 0, flat: true })) as any[];
        assert.deepEqual(found.map((o) => o.id).sort(), [...obsA].sort());
        assert.ok(found.every((o) => o.subject.reference === `Patient/${patientA}`));
        const viaPatient = (await client.patient.request('Observation', { pageLimit: 0, flat: true })) as any[];
        assert.deepEqual(viaPatient.map((o) => o.id).sort(), [...obsA].sort());
        const me = await client.patient.read();
        assert.equal(me.id, patientA);

        const tr = client.state.tokenResponse;
        assert.equal(tr.patient, patientA);
        assert.equal(tr.token_type, 'Bearer');
        assert.equal(typeof tr.expires_in, 'number');
        assert.ok(tr.expires_in > 0);
        const granted = scopeSet(tr.scope);
        for (const s of ['launch/patient', 'openid', 'fhirUser', 'patient/Observation.rs', 'patient/Patient.rs']) assert.ok(granted.has(s), `scope has ${s}: ${tr.scope}`);
        assert.equal(typeof tr.id_token, 'string');
        const idToken = decodeJwt(tr.id_token);
        assert.equal(idToken.fhirUser, `${server.base}/Patient/${patientA}`);
        assert.equal(idToken.iss, e.issuer);
        assert.equal(idToken.aud, clientId);
        assert.equal(client.getFhirUser(), `Patient/${patientA}`);
        // Last: SMART says offline_access yields a refresh token (fhirclient never sends prompt=consent).
        assert.ok(granted.has('offline_access'), `offline_access granted: ${tr.scope}`);
        assert.equal(typeof tr.refresh_token, 'string', 'token response has a refresh_token for offline_access');
        const before = tr.access_token;
        await client.refresh();
        assert.notEqual(client.state.tokenResponse.access_token, before);
        const again = (await client.request(`Observation/${obsA[0]}`)) as any;
        assert.equal(again.id, obsA[0]);
      } finally {
        await new Promise<void>((resolve) => app.close(() => resolve()));
      }
    });
  });

  // ------------------------------------------------------------------------------------------
  describe('Backend Services', () => {
    async function backendRoundTrip(key: BackendKey, clientId: string): Promise<void> {
      const t = await backendToken(key, clientId, 'system/Observation.crus');
      assert.equal(t.status, 200, JSON.stringify(t.body));
      assert.equal(String(t.body.token_type).toLowerCase(), 'bearer');
      assert.equal(t.body.scope, 'system/Observation.crus');
      assert.equal(typeof t.body.expires_in, 'number');
      assert.ok(t.body.expires_in > 0 && t.body.expires_in <= 3600, String(t.body.expires_in));
      assert.equal(t.body.refresh_token, undefined);
      assert.match(t.headers.get('cache-control') ?? '', /no-store/);
      const claims = decodeJwt(t.body.access_token);
      assert.equal(claims.client_id, clientId);
      assert.equal(claims.aud, server.base);
      assert.equal(claims.iss, e.issuer);

      const created = await fhir('Observation', { token: t.body.access_token, method: 'POST', body: observation(undefined, 70) });
      assert.equal(created.status, 201, JSON.stringify(created.body));
      assert.match(created.headers.get('location') ?? '', new RegExp(`/Observation/${created.body.id}/_history/1$`));
      const read = await fhir(`Observation/${created.body.id}`, { token: t.body.access_token });
      assert.equal(read.status, 200);
      assert.equal(read.body.id, created.body.id);
      assert.equal(read.body.valueQuantity.value, 70);
    }

    it('an ES384 client (inline JWKS) gets a system/Observation.crus token, creates and reads an Observation', async () => {
      const key = await backendKeyPair('ES384');
      await backendRoundTrip(key, registerBackend(key, 'system/Observation.crus'));
    });

    it('an RS384 client (inline JWKS) does the same', async () => {
      const key = await backendKeyPair('RS384');
      await backendRoundTrip(key, registerBackend(key, 'system/Observation.crus'));
    });

    it('a client registered by jwksUri (served on loopback) does the same', async () => {
      // The registry accepts any http(s) jwksUri, so the token endpoint must be able to fetch it
      // (oidc-provider's SSRF guard refuses loopback/private addresses unless configured otherwise).
      const key = await backendKeyPair('ES384');
      let fetched = 0;
      const jwksServer = http.createServer((req, res) => {
        if (req.url === '/jwks.json') {
          fetched++;
          res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(key.jwks));
        } else {
          res.writeHead(404).end();
        }
      });
      await new Promise<void>((resolve) => jwksServer.listen(0, '127.0.0.1', resolve));
      try {
        const jwksUri = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/jwks.json`;
        const clientId = server.app.auth.registry.addClient({ type: 'backend', name: 'jwks_uri backend', jwksUri, scope: 'system/Observation.crus' }).client.clientId;
        await backendRoundTrip(key, clientId);
        assert.ok(fetched >= 1, 'the server fetched the JWKS from jwks_uri');
      } finally {
        await new Promise<void>((resolve) => jwksServer.close(() => resolve()));
      }
    });

    it('a system/Observation.rs token may search but gets 403 OperationOutcome on POST', async () => {
      const key = await backendKeyPair();
      const clientId = registerBackend(key, 'system/Observation.crus');
      const t = await backendToken(key, clientId, 'system/Observation.rs');
      assert.equal(t.status, 200, JSON.stringify(t.body));
      assert.equal(t.body.scope, 'system/Observation.rs');
      const post = await fhir('Observation', { token: t.body.access_token, method: 'POST', body: observation(undefined, 71) });
      assert.equal(post.status, 403, JSON.stringify(post.body));
      assert.equal(post.body.resourceType, 'OperationOutcome');
      assert.equal(post.body.issue[0].code, 'forbidden');
      const search = await fhir('Observation?_count=1', { token: t.body.access_token });
      assert.equal(search.status, 200);
      assert.equal(search.body.resourceType, 'Bundle');
    });

    it('a client asking for a scope beyond its registration gets only what it may have', async () => {
      const key = await backendKeyPair();
      const clientId = registerBackend(key, 'system/Observation.rs');
      const t = await backendToken(key, clientId, 'system/Observation.cruds system/Patient.rs');
      assert.equal(t.status, 200, JSON.stringify(t.body));
      assert.equal(t.body.scope, 'system/Observation.rs');
      assert.equal(decodeJwt(t.body.access_token).scope, 'system/Observation.rs');
    });
  });

  // ------------------------------------------------------------------------------------------
  describe('introspection (RFC 7662) and revocation (RFC 7009)', () => {
    it('a backend token: introspected active by its client, inactive for another; revoked -> inactive and 401', async () => {
      const key = await backendKeyPair();
      const clientId = registerBackend(key, 'system/Observation.rs');
      const t = await backendToken(key, clientId, 'system/Observation.rs');
      assert.equal(t.status, 200, JSON.stringify(t.body));
      const token = t.body.access_token as string;

      const info = await postForm(e.introspect, { token, ...(await assertionAuth(key, clientId)) });
      assert.equal(info.status, 200, JSON.stringify(info.body));
      assert.equal(info.body.active, true);
      assert.equal(info.body.scope, 'system/Observation.rs');
      assert.equal(info.body.client_id, clientId);
      assert.equal(info.body.exp, decodeJwt(token).exp);

      const otherKey = await backendKeyPair();
      const otherId = registerBackend(otherKey, 'system/Observation.rs');
      const foreign = await postForm(e.introspect, { token, ...(await assertionAuth(otherKey, otherId)) });
      assert.equal(foreign.status, 200);
      assert.deepEqual(foreign.body, { active: false });

      // Introspection needs client authentication.
      assertOAuthError(await postForm(e.introspect, { token }), 400, 'invalid_request');

      assert.equal((await fhir('Observation?_count=1', { token })).status, 200);
      const revoked = await postForm(e.revoke, { token, token_type_hint: 'access_token', ...(await assertionAuth(key, clientId)) });
      assert.equal(revoked.status, 200, JSON.stringify(revoked.body));

      const after = await postForm(e.introspect, { token, ...(await assertionAuth(key, clientId)) });
      assert.equal(after.status, 200);
      assert.deepEqual(after.body, { active: false });
      assertInvalidToken(await fhir('Observation?_count=1', { token }), /revoked/);
    });

    it('a refresh token from the code flow can be introspected and revoked', async () => {
      const scope = 'launch/patient online_access patient/Observation.rs';
      const clientId = publicClient(scope);
      const flow = await codeFlow(server, { clientId, redirectUri: UNUSED_REDIRECT_URI, scope, ...(await user(`Patient/${patientA}`)) });
      assert.equal(flow.token.status, 200, JSON.stringify(flow.token.body));
      const rt = flow.token.body.refresh_token as string;
      assert.equal(typeof rt, 'string', 'online_access yields a refresh token');

      const info = await postForm(e.introspect, { token: rt, token_type_hint: 'refresh_token', client_id: clientId });
      assert.equal(info.status, 200, JSON.stringify(info.body));
      assert.equal(info.body.active, true);
      assert.equal(info.body.client_id, clientId);
      assert.ok(scopeSet(info.body.scope).has('patient/Observation.rs') || scopeSet(info.body.scope).has('online_access'), String(info.body.scope));

      const revoked = await postForm(e.revoke, { token: rt, token_type_hint: 'refresh_token', client_id: clientId });
      assert.equal(revoked.status, 200, JSON.stringify(revoked.body));
      const after = await postForm(e.introspect, { token: rt, client_id: clientId });
      assert.equal(after.status, 200);
      assert.equal(after.body.active, false);
      assertOAuthError(await refreshToken(e.token, { refreshToken: rt, clientId }), 400, 'invalid_grant');
      // RFC 7009 2.1: revoking the refresh token also ends the access tokens of the same grant.
      const api = await fetch(`${server.base}/Observation`, { headers: { authorization: `Bearer ${flow.token.body.access_token}` } });
      assert.equal(api.status, 401);
    });
  });

  // ------------------------------------------------------------------------------------------
  describe('negative matrix: resource server', () => {
    it('control: a token signed with the server key and the right claims is accepted', async () => {
      const token = await signToken(tokenClaims(), serverSigningKey());
      assert.equal((await fhir('Observation?_count=1', { token })).status, 200);
    });

    it('tampered signature -> 401 invalid_token', async () => {
      const [h, p, s] = server.token.split('.') as [string, string, string];
      const i = Math.floor(s.length / 2);
      const flipped = s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1);
      assertInvalidToken(await fhir('Observation', { token: `${h}.${p}.${flipped}` }), /signature/);
      // Same signature, claims changed (scope widened).
      const payload = Buffer.from(JSON.stringify({ ...decodeJwt(server.token), scope: 'system/*.* patient/*.*' })).toString('base64url');
      assertInvalidToken(await fhir('Observation', { token: `${h}.${payload}.${s}` }), /signature/);
    });

    it('a token signed by an unknown key (unknown kid) -> 401 invalid_token', async () => {
      const { privateKey } = await generateKeyPair('RS256', { extractable: true });
      const jwk = { ...(await exportJWK(privateKey)), kid: 'not-a-key-of-this-server' };
      assertInvalidToken(await fhir('Observation', { token: await signToken(tokenClaims(), jwk) }), /not signed with a key of this server/);
      // Same kid as the server's key, different key material.
      const spoofed = { ...jwk, kid: decodeProtectedHeader(server.token).kid };
      assertInvalidToken(await fhir('Observation', { token: await signToken(tokenClaims(), spoofed) }), /signature/);
    });

    it('an expired token (signed with the server key, exp in the past) -> 401 invalid_token', async () => {
      const now = Math.floor(Date.now() / 1000);
      const token = await signToken(tokenClaims({ iat: now - 600, exp: now - 60 }), serverSigningKey());
      assertInvalidToken(await fhir('Observation', { token }), /expired/);
    });

    it('wrong aud (signed with the server key) -> 401 invalid_token', async () => {
      const token = await signToken(tokenClaims({ aud: 'http://other.example/fhir' }), serverSigningKey());
      assertInvalidToken(await fhir('Observation', { token }), /\baud\b/);
      const noAud = tokenClaims();
      delete noAud.aud;
      assertInvalidToken(await fhir('Observation', { token: await signToken(noAud, serverSigningKey()) }));
    });

    it('wrong iss (signed with the server key) -> 401 invalid_token', async () => {
      const token = await signToken(tokenClaims({ iss: 'http://other.example/auth' }), serverSigningKey());
      assertInvalidToken(await fhir('Observation', { token }), /\biss\b/);
    });

    it('alg: none -> 401 invalid_token', async () => {
      const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
      const kid = decodeProtectedHeader(server.token).kid;
      assertInvalidToken(await fhir('Observation', { token: `${b64({ alg: 'none', typ: 'at+jwt', kid })}.${b64(tokenClaims())}.` }));
      assertInvalidToken(await fhir('Observation', { token: `${b64({ alg: 'none', typ: 'at+jwt', kid })}.${b64(tokenClaims())}` }));
    });

    it('HS256 signed with the public key as secret (alg confusion) -> 401 invalid_token', async () => {
      const { d: _d, p: _p, q: _q, dp: _dp, dq: _dq, qi: _qi, ...pub } = serverSigningKey();
      const secret = new TextEncoder().encode(JSON.stringify(pub));
      const token = await new SignJWT(tokenClaims()).setProtectedHeader({ alg: 'HS256', kid: pub.kid }).sign(secret);
      assertInvalidToken(await fhir('Observation', { token }));
    });

    it('missing token -> 401 with a Bearer challenge', async () => {
      // (RFC 6750 3.1 suggests no error code when no credentials were sent; the server sends invalid_token.)
      const r = await fhir('Observation', { token: null });
      assert.equal(r.status, 401);
      assert.match(r.headers.get('www-authenticate') ?? '', /^Bearer\b/);
      assert.equal(r.body.resourceType, 'OperationOutcome');
      for (const p of [`Patient/${patientA}`, 'Patient', '']) {
        assert.equal((await fhir(p, { token: null })).status, 401, p);
      }
    });

    it('malformed Authorization header -> 401 invalid_token', async () => {
      for (const authorization of ['Basic dXNlcjpwYXNz', 'Bearer', 'Bearer ', `Bearer ${server.token} extra`, 'Token abc', 'Bearer not a token', 'Bearer abc.def.ghi']) {
        assertInvalidToken(await fhir('Observation', { authorization }));
      }
    });
  });

  // ------------------------------------------------------------------------------------------
  describe('negative matrix: authorization code flow', () => {
    const SCOPE = 'launch/patient online_access patient/Observation.rs patient/Patient.rs';

    async function startFlow(o: { scope?: string; redirectUris?: string[] } = {}) {
      const scope = o.scope ?? SCOPE;
      const redirectUris = o.redirectUris ?? [UNUSED_REDIRECT_URI];
      const clientId = publicClient(scope, redirectUris);
      const creds = await user(`Patient/${patientA}`);
      return { clientId, creds, scope, redirectUri: redirectUris[0]! };
    }

    it('reused authorization code -> invalid_grant, and the grant\'s refresh token dies with it', async () => {
      const f = await startFlow();
      const flow = await codeFlow(server, { clientId: f.clientId, redirectUri: f.redirectUri, scope: f.scope, ...f.creds });
      assert.equal(flow.token.status, 200, JSON.stringify(flow.token.body));
      const second = await exchangeCode(e.token, { code: flow.code, verifier: flow.verifier, redirectUri: f.redirectUri, clientId: f.clientId });
      assertOAuthError(second, 400, 'invalid_grant');
      // RFC 6749 4.1.2: tokens issued from a reused code should be revoked.
      assertOAuthError(await refreshToken(e.token, { refreshToken: flow.token.body.refresh_token, clientId: f.clientId }), 400, 'invalid_grant');
      const api = await fetch(`${server.base}/Patient/${encodeURIComponent(String(flow.token.body.patient))}`, { headers: { authorization: `Bearer ${flow.token.body.access_token}` } });
      assert.equal(api.status, 401, 'the access token of the replayed code is revoked with its grant');
      assert.match(api.headers.get('www-authenticate') ?? '', /invalid_token/);
    });

    it('PKCE mismatch -> invalid_grant', async () => {
      const f = await startFlow();
      const pkce = pkcePair();
      const auth = await authorizeWithLogin({ authorizeUrl: authorizeUrl(e.authorize, { clientId: f.clientId, redirectUri: f.redirectUri, scope: f.scope, aud: server.base, codeChallenge: pkce.challenge }), ...f.creds });
      assertOAuthError(await exchangeCode(e.token, { code: auth.code, verifier: pkcePair().verifier, redirectUri: f.redirectUri, clientId: f.clientId }), 400, 'invalid_grant');
      // The code is burnt by the failed attempt or still refused without a verifier; never a token without the right verifier.
      const noVerifier = await postForm(e.token, { grant_type: 'authorization_code', code: auth.code, redirect_uri: f.redirectUri, client_id: f.clientId });
      assert.equal(noVerifier.body.access_token, undefined);
      assert.ok(['invalid_grant', 'invalid_request'].includes(noVerifier.body.error), JSON.stringify(noVerifier.body));
    });

    it('authorize without PKCE -> error to the client, no code', async () => {
      const f = await startFlow();
      const r = await authorizeOutcome(authorizeUrl(e.authorize, { clientId: f.clientId, redirectUri: f.redirectUri, scope: f.scope, aud: server.base, state: 'st-1' }));
      assert.ok(r.status === 302 || r.status === 303, String(r.status));
      assert.equal(r.location?.origin + r.location!.pathname, f.redirectUri);
      assert.equal(r.location!.searchParams.get('error'), 'invalid_request');
      assert.match(r.location!.searchParams.get('error_description') ?? '', /PKCE|code_challenge/);
      assert.equal(r.location!.searchParams.get('state'), 'st-1');
      assert.equal(r.location!.searchParams.get('code'), null);
    });

    it('code_challenge_method=plain -> error to the client, no code', async () => {
      const f = await startFlow();
      const verifier = pkcePair().verifier;
      const r = await authorizeOutcome(authorizeUrl(e.authorize, { clientId: f.clientId, redirectUri: f.redirectUri, scope: f.scope, aud: server.base, codeChallenge: verifier, codeChallengeMethod: 'plain' }));
      assert.ok(r.location, `redirect expected, got ${r.status}: ${pageText(r.html)}`);
      assert.equal(r.location.origin + r.location.pathname, f.redirectUri);
      assert.equal(r.location.searchParams.get('error'), 'invalid_request');
      assert.match(r.location.searchParams.get('error_description') ?? '', /code_challenge_method|plain|S256/);
      assert.equal(r.location.searchParams.get('code'), null);
    });

    it('redirect_uri not registered -> error page, no redirect', async () => {
      const f = await startFlow();
      for (const redirectUri of ['http://evil.example/callback', `${UNUSED_REDIRECT_URI}/x`, `${UNUSED_REDIRECT_URI}?x=1`]) {
        const r = await authorizeOutcome(authorizeUrl(e.authorize, { clientId: f.clientId, redirectUri, scope: f.scope, aud: server.base, codeChallenge: pkcePair().challenge }));
        assert.equal(r.status, 400, redirectUri);
        assert.equal(r.location, null);
        assert.match(pageText(r.html), /redirect_uri/);
      }
    });

    it('unknown client_id -> error page, no redirect', async () => {
      const r = await authorizeOutcome(authorizeUrl(e.authorize, { clientId: 'c-nope', redirectUri: UNUSED_REDIRECT_URI, scope: SCOPE, aud: server.base, codeChallenge: pkcePair().challenge }));
      assert.equal(r.status, 400);
      assert.equal(r.location, null);
      assert.match(pageText(r.html), /invalid_client/);
    });

    it('redirect_uri at the token exchange differs from the authorization request -> invalid_grant', async () => {
      const other = 'http://127.0.0.1:9/other-callback';
      const f = await startFlow({ redirectUris: [UNUSED_REDIRECT_URI, other] });
      const pkce = pkcePair();
      const auth = await authorizeWithLogin({ authorizeUrl: authorizeUrl(e.authorize, { clientId: f.clientId, redirectUri: UNUSED_REDIRECT_URI, scope: f.scope, aud: server.base, codeChallenge: pkce.challenge }), ...f.creds });
      assertOAuthError(await exchangeCode(e.token, { code: auth.code, verifier: pkce.verifier, redirectUri: other, clientId: f.clientId }), 400, 'invalid_grant');
    });

    it('a code issued to one client cannot be exchanged by another -> invalid_grant', async () => {
      const f = await startFlow();
      const otherClient = publicClient(SCOPE);
      const pkce = pkcePair();
      const auth = await authorizeWithLogin({ authorizeUrl: authorizeUrl(e.authorize, { clientId: f.clientId, redirectUri: f.redirectUri, scope: f.scope, aud: server.base, codeChallenge: pkce.challenge }), ...f.creds });
      assertOAuthError(await exchangeCode(e.token, { code: auth.code, verifier: pkce.verifier, redirectUri: f.redirectUri, clientId: otherClient }), 400, 'invalid_grant');
    });

    it('wrong or missing aud at authorize -> error to the client, no code', async () => {
      const f = await startFlow();
      for (const aud of ['http://other.example/fhir', `${origin}/auth`, '']) {
        const url = new URL(authorizeUrl(e.authorize, { clientId: f.clientId, redirectUri: f.redirectUri, scope: f.scope, aud, codeChallenge: pkcePair().challenge }));
        if (aud === '') url.searchParams.delete('aud');
        const r = await authorizeOutcome(url.href);
        assert.ok(r.location, `redirect expected for aud=${aud}, got ${r.status}: ${pageText(r.html)}`);
        assert.equal(r.location.origin + r.location.pathname, f.redirectUri, `aud=${aud}: ${r.location.href}`);
        assert.equal(r.location.searchParams.get('error'), 'invalid_request', aud);
        assert.match(r.location.searchParams.get('error_description') ?? '', /aud/);
        assert.equal(r.location.searchParams.get('code'), null);
      }
    });

    it('scope escalation on refresh -> invalid_scope (narrowing is fine)', async () => {
      const f = await startFlow();
      const flow = await codeFlow(server, { clientId: f.clientId, redirectUri: f.redirectUri, scope: f.scope, ...f.creds, untick: ['patient/Patient.rs'] });
      assert.equal(flow.token.status, 200, JSON.stringify(flow.token.body));
      assert.ok(!scopeSet(flow.token.body.scope).has('patient/Patient.rs'));
      const rt = flow.token.body.refresh_token as string;
      // Allowed for the client, but the user did not approve it.
      assertOAuthError(await refreshToken(e.token, { refreshToken: rt, clientId: f.clientId, scope: 'patient/Observation.rs patient/Patient.rs' }), 400, 'invalid_scope');
      // Not even allowed for the client.
      assertOAuthError(await refreshToken(e.token, { refreshToken: rt, clientId: f.clientId, scope: 'patient/Observation.rs patient/Condition.rs' }), 400, 'invalid_scope');
      // Wider permissions on an approved type.
      assertOAuthError(await refreshToken(e.token, { refreshToken: rt, clientId: f.clientId, scope: 'patient/Observation.cruds' }), 400, 'invalid_scope');
      const ok = await refreshToken(e.token, { refreshToken: rt, clientId: f.clientId, scope: 'patient/Observation.rs' });
      assert.equal(ok.status, 200, JSON.stringify(ok.body));
      assert.ok(scopeSet(ok.body.scope).has('patient/Observation.rs'));
      assert.ok(!scopeSet(ok.body.scope).has('patient/Patient.rs'));
      assert.ok(!scopeSet(decodeJwt(ok.body.access_token).scope).has('patient/Patient.rs'));
      assert.equal(ok.body.patient, patientA);
    });

    it('an EHR launch carries the minted launch context; an unknown launch id is refused', async () => {
      const scope = 'launch openid fhirUser patient/Observation.rs';
      const clientId = publicClient(scope);
      const creds = await user('Practitioner/prac-1');
      const launch = server.app.auth.launches.mint({ patient: patientB });
      const flow = await codeFlow(server, { clientId, redirectUri: UNUSED_REDIRECT_URI, scope, launch, ...creds });
      assert.equal(flow.token.status, 200, JSON.stringify(flow.token.body));
      assert.equal(flow.token.body.patient, patientB);
      assert.equal(decodeJwt(flow.token.body.id_token).fhirUser, `${server.base}/Practitioner/prac-1`);
      const r = await authorizeOutcome(authorizeUrl(e.authorize, { clientId, redirectUri: UNUSED_REDIRECT_URI, scope, aud: server.base, codeChallenge: pkcePair().challenge, launch: 'no-such-launch' }));
      assert.equal(r.location?.searchParams.get('error'), 'invalid_request');
      assert.equal(r.location?.searchParams.get('code'), null);
    });

    it('a practitioner picks the patient on the approval page (standalone launch/patient)', async () => {
      const scope = 'launch/patient patient/Observation.rs';
      const clientId = publicClient(scope);
      const creds = await user('Practitioner/prac-2');
      const flow = await codeFlow(server, { clientId, redirectUri: UNUSED_REDIRECT_URI, scope, patient: patientB, ...creds });
      assert.equal(flow.askedForPatient, true);
      assert.equal(flow.token.status, 200, JSON.stringify(flow.token.body));
      assert.equal(flow.token.body.patient, patientB);
      assert.equal(decodeJwt(flow.token.body.access_token).patient, patientB);
    });

    it('approving with every scope unticked sends access_denied to the client, no code', async () => {
      const f = await startFlow();
      const url = authorizeUrl(e.authorize, { clientId: f.clientId, redirectUri: f.redirectUri, scope: f.scope, aud: server.base, codeChallenge: pkcePair().challenge, state: 'st-deny' });
      const err = await authorizeWithLogin({ authorizeUrl: url, ...f.creds, untick: f.scope.split(' ') }).then(() => undefined, (x: unknown) => x);
      assert.ok(err instanceof AuthorizeRedirectError, String(err));
      assert.equal(err.error, 'access_denied');
      const to = new URL(err.redirectedTo);
      assert.equal(to.origin + to.pathname, f.redirectUri);
      assert.equal(to.searchParams.get('state'), 'st-deny');
      assert.equal(to.searchParams.get('code'), null);
    });

    it('offline_access (no prompt parameter, as SMART apps send it) is granted and yields a refresh token', async () => {
      const scope = 'launch/patient offline_access patient/Observation.rs';
      const clientId = publicClient(scope);
      const flow = await codeFlow(server, { clientId, redirectUri: UNUSED_REDIRECT_URI, scope, ...(await user(`Patient/${patientA}`)) });
      assert.equal(flow.token.status, 200, JSON.stringify(flow.token.body));
      assert.ok(flow.listedScopes!.includes('offline_access'), `approval page lists offline_access: ${flow.listedScopes!.join(' ')}`);
      assert.ok(scopeSet(flow.token.body.scope).has('offline_access'), `granted: ${flow.token.body.scope}`);
      assert.equal(typeof flow.token.body.refresh_token, 'string');
    });

    it('a public client refreshes with grant_type + refresh_token only (SMART refresh request, as fhirclient sends it)', async () => {
      const scope = 'launch/patient online_access patient/Observation.rs';
      const clientId = publicClient(scope);
      const creds = await user(`Patient/${patientA}`);
      const flow = await codeFlow(server, { clientId, redirectUri: UNUSED_REDIRECT_URI, scope, ...creds });
      assert.equal(flow.token.status, 200, JSON.stringify(flow.token.body));
      // Control on a second grant: with client_id the refresh works.
      const withId = await codeFlow(server, { clientId, redirectUri: UNUSED_REDIRECT_URI, scope, ...creds });
      const control = await refreshToken(e.token, { refreshToken: withId.token.body.refresh_token, clientId });
      assert.equal(control.status, 200, JSON.stringify(control.body));
      const r = await postForm(e.token, { grant_type: 'refresh_token', refresh_token: flow.token.body.refresh_token });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(typeof r.body.access_token, 'string');
      assert.equal(r.body.patient, patientA);
    });

    it('a confidential client exchanges its code with HTTP Basic; a wrong or missing secret is invalid_client', async () => {
      const scope = 'launch/patient patient/Observation.rs';
      const { client, clientSecret } = server.app.auth.registry.addClient({ type: 'confidential', name: 'confidential app', redirectUris: [UNUSED_REDIRECT_URI], scope });
      assert.ok(clientSecret);
      const creds = await user(`Patient/${patientA}`);
      const bad = await codeFlow(server, { clientId: client.clientId, clientSecret: `${clientSecret}x`, redirectUri: UNUSED_REDIRECT_URI, scope, ...creds });
      assertOAuthError(bad.token, 401, 'invalid_client');
      const noSecret = await codeFlow(server, { clientId: client.clientId, redirectUri: UNUSED_REDIRECT_URI, scope, ...creds });
      assert.equal(noSecret.token.body.access_token, undefined);
      assert.ok(['invalid_client', 'invalid_request'].includes(noSecret.token.body.error), JSON.stringify(noSecret.token.body));
      const good = await codeFlow(server, { clientId: client.clientId, clientSecret, redirectUri: UNUSED_REDIRECT_URI, scope, ...creds });
      assert.equal(good.token.status, 200, JSON.stringify(good.token.body));
      assert.equal(good.token.body.patient, patientA);
    });

    it('a tampered approval form cannot add scopes that were not offered, nor pick another patient for a patient user', async () => {
      const scope = 'launch/patient patient/Observation.rs';
      const clientId = publicClient(`${scope} patient/Patient.rs`);
      const flow = await codeFlow(server, {
        clientId, redirectUri: UNUSED_REDIRECT_URI, scope, ...(await user(`Patient/${patientA}`)),
        extraApprovalFields: { scope: ['patient/Patient.rs', 'patient/*.cruds', 'system/*.*'], patient: patientB },
      });
      assert.equal(flow.token.status, 200, JSON.stringify(flow.token.body));
      assert.deepEqual(scopeSet(flow.token.body.scope), new Set(['launch/patient', 'patient/Observation.rs']));
      assert.equal(flow.token.body.patient, patientA);
      assert.equal(decodeJwt(flow.token.body.access_token).patient, patientA);
    });
  });

  // ------------------------------------------------------------------------------------------
  describe('negative matrix: client authentication (Backend Services)', () => {
    it('replayed client assertion jti -> invalid_client', async () => {
      const key = await backendKeyPair();
      const clientId = registerBackend(key, 'system/Observation.rs');
      const jti = randomUUID();
      const first = await backendToken(key, clientId, 'system/Observation.rs', { jti });
      assert.equal(first.status, 200, JSON.stringify(first.body));
      assertOAuthError(await backendToken(key, clientId, 'system/Observation.rs', { jti }), 401, 'invalid_client');
    });

    it('assertion exp more than 5 minutes ahead -> invalid_client (4 minutes is fine)', async () => {
      const key = await backendKeyPair();
      const clientId = registerBackend(key, 'system/Observation.rs');
      assertOAuthError(await backendToken(key, clientId, 'system/Observation.rs', { expInS: 600 }), 401, 'invalid_client');
      assertOAuthError(await backendToken(key, clientId, 'system/Observation.rs', { expInS: 330 }), 401, 'invalid_client');
      assert.equal((await backendToken(key, clientId, 'system/Observation.rs', { expInS: 240 })).status, 200);
    });

    it('assertion aud = issuer instead of the token endpoint -> invalid_client', async () => {
      const key = await backendKeyPair();
      const clientId = registerBackend(key, 'system/Observation.rs');
      assertOAuthError(await backendToken(key, clientId, 'system/Observation.rs', { aud: e.issuer }), 401, 'invalid_client');
      assertOAuthError(await backendToken(key, clientId, 'system/Observation.rs', { aud: server.base }), 401, 'invalid_client');
    });

    it('expired assertion, assertion signed by another key, and alg none -> invalid_client', async () => {
      const key = await backendKeyPair();
      const clientId = registerBackend(key, 'system/Observation.rs');
      assertOAuthError(await backendToken(key, clientId, 'system/Observation.rs', { expInS: -120 }), 401, 'invalid_client');
      const stranger = await backendKeyPair();
      assertOAuthError(await backendToken({ ...stranger, kid: key.kid }, clientId, 'system/Observation.rs'), 401, 'invalid_client');
      const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
      const now = Math.floor(Date.now() / 1000);
      const none = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ iss: clientId, sub: clientId, aud: e.token, jti: randomUUID(), exp: now + 60 })}.`;
      assertOAuthError(await postForm(e.token, tokenForm(none, 'system/Observation.rs')), 401, 'invalid_client');
    });

    it('a revoked client can no longer get tokens and its existing token gets 401', async () => {
      const key = await backendKeyPair();
      const clientId = registerBackend(key, 'system/Observation.rs');
      const t = await backendToken(key, clientId, 'system/Observation.rs');
      assert.equal(t.status, 200);
      assert.equal((await fhir('Observation?_count=1', { token: t.body.access_token })).status, 200);
      assert.equal(server.app.auth.registry.revokeClient(clientId), true);
      assertOAuthError(await backendToken(key, clientId, 'system/Observation.rs'), 401, 'invalid_client');
      assertInvalidToken(await fhir('Observation?_count=1', { token: t.body.access_token }), /revoked/);
    });

    it('a revoked public client: its access and refresh tokens stop working', async () => {
      const scope = 'launch/patient online_access patient/Observation.rs';
      const clientId = publicClient(scope);
      const flow = await codeFlow(server, { clientId, redirectUri: UNUSED_REDIRECT_URI, scope, ...(await user(`Patient/${patientA}`)) });
      assert.equal(flow.token.status, 200, JSON.stringify(flow.token.body));
      server.app.auth.registry.revokeClient(clientId);
      assertInvalidToken(await fhir('Observation', { token: flow.token.body.access_token }));
      const r = await refreshToken(e.token, { refreshToken: flow.token.body.refresh_token, clientId });
      assert.equal(r.body.access_token, undefined);
      assert.equal(r.body.error, 'invalid_client', JSON.stringify(r.body));
    });
  });

  // ------------------------------------------------------------------------------------------
  describe('scopes granted = asked ∩ client allowed ∩ user approval', () => {
    it('asking patient/*.cruds yields only what the client\'s allowed scopes cover', async () => {
      const allowed = 'patient/Observation.rs patient/Patient.rs launch/patient';
      const clientId = publicClient(allowed);
      const flow = await codeFlow(server, { clientId, redirectUri: UNUSED_REDIRECT_URI, scope: 'patient/*.cruds launch/patient', ...(await user(`Patient/${patientA}`)) });
      assert.equal(flow.token.status, 200, JSON.stringify(flow.token.body));
      const allowedScopes = parseScopes(allowed).resource;
      for (const listed of parseScopes(flow.listedScopes!.join(' ')).resource) {
        assert.ok(allowedScopes.some((a) => covers(a, listed)), `approval page offers ${listed.raw}, not covered by the client's scopes`);
      }
      const granted = parseScopes(flow.token.body.scope);
      assert.ok(granted.resource.length > 0);
      for (const g of granted.resource) assert.ok(allowedScopes.some((a) => covers(a, g)), `granted ${g.raw} is not covered by ${allowed}`);
      assert.deepEqual(new Set(granted.resource.map((s) => s.raw)), new Set(['patient/Observation.rs', 'patient/Patient.rs']));
      assert.deepEqual(granted.other, ['launch/patient']);
      assert.equal(decodeJwt(flow.token.body.access_token).scope, granted.resource.map((s) => s.raw).join(' '));
      const token = flow.token.body.access_token as string;
      assert.equal((await fhir(`Observation/${obsA[0]}`, { token })).status, 200);
      const post = await fhir('Observation', { token, method: 'POST', body: observation(patientA, 99) });
      assert.equal(post.status, 403, JSON.stringify(post.body));
      assert.equal(post.body.resourceType, 'OperationOutcome');
    });

    it('unticking a scope on the approval page removes it from the token', async () => {
      const scope = 'launch/patient patient/Observation.rs patient/Patient.rs';
      const clientId = publicClient(scope);
      const flow = await codeFlow(server, { clientId, redirectUri: UNUSED_REDIRECT_URI, scope, untick: ['patient/Patient.rs'], ...(await user(`Patient/${patientA}`)) });
      assert.deepEqual(new Set(flow.listedScopes), new Set(scope.split(' ')));
      assert.equal(flow.token.status, 200, JSON.stringify(flow.token.body));
      assert.deepEqual(scopeSet(flow.token.body.scope), new Set(['launch/patient', 'patient/Observation.rs']));
      assert.equal(decodeJwt(flow.token.body.access_token).scope, 'patient/Observation.rs');
      const token = flow.token.body.access_token as string;
      assert.equal((await fhir(`Observation/${obsA[0]}`, { token })).status, 200);
      const read = await fhir(`Patient/${patientA}`, { token });
      assert.equal(read.status, 403, JSON.stringify(read.body));
      assert.equal(read.body.resourceType, 'OperationOutcome');
    });

    it('patientToken() gives a patient-confined token', async () => {
      const token = await patientToken(server, { patientId: patientB, scope: 'patient/Observation.rs' });
      const claims = decodeJwt(token);
      assert.equal(claims.patient, patientB);
      assert.equal(claims.scope, 'patient/Observation.rs');
      const r = await fhir(`Observation/${obsB[0]}`, { token });
      assert.equal(r.status, 200);
    });
  });
});
