import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import supertest from 'supertest';
import { getPatientCompartmentParams, getResourceTypes } from '../src/fhir/definitions.js';
import { authEndpoints, ROUTES } from '../src/smart-auth/provider.js';
import { testApp } from './helpers.js';

// The spec is JSON (valid OpenAPI 3.1): no YAML parser is among the project's dependencies.
const SPEC_FILE = fileURLToPath(new URL('../openapi/openapi.json', import.meta.url));

type Json = any;
const spec: Json = JSON.parse(fs.readFileSync(SPEC_FILE, 'utf8'));

const EXPECTED: Record<string, string[]> = {
  '/healthz': ['get'],
  '/readyz': ['get'],
  '/metrics': ['get'],
  '/fhir/metadata': ['get'],
  '/fhir': ['post'],
  '/fhir/_history': ['get'],
  '/fhir/{type}': ['get', 'post', 'put', 'delete', 'patch'],
  '/fhir/{type}/_search': ['post'],
  '/fhir/{type}/_history': ['get'],
  '/fhir/{type}/$validate': ['post'],
  '/fhir/{type}/{id}': ['get', 'put', 'patch', 'delete'],
  '/fhir/{type}/{id}/_history': ['get'],
  '/fhir/{type}/{id}/_history/{vid}': ['get'],
  '/fhir/{type}/{id}/$validate': ['post'],
  '/fhir/Patient/{id}/{type}': ['get'],
  '/fhir/.well-known/smart-configuration': ['get'],
  '/auth/.well-known/openid-configuration': ['get'],
  '/auth/authorize': ['get'],
  '/auth/token': ['post'],
  '/auth/introspect': ['post'],
  '/auth/revoke': ['post'],
  '/auth/jwks': ['get'],
  '/fhir/{type}/{id}/$verify': ['get'],
  '/fhir/{type}/{id}/_history/{vid}/$verify': ['get'],
  '/fhir/$ledger-status': ['get'],
  '/fhir/$integrity-check': ['get', 'post'],
  '/fhir/Patient/{id}/$explain-access': ['get'],
  '/fhir/Patient/{id}/$break-glass': ['get', 'post'],
  '/fhir/Patient/{id}/$consent-key': ['get', 'post'],
  '/fhir/Consent/{id}/$consent-typed-data': ['get'],
  '/fhir/Consent/{id}/_history/{vid}/$consent-typed-data': ['get'],
  '/fhir/Consent/{id}/$consent-sign': ['post'],
  '/fhir/Consent/{id}/_history/{vid}/$consent-sign': ['post'],
  '/fhir/Consent/{id}/$consent-status': ['get'],
  '/fhir/Consent/{id}/_history/{vid}/$consent-status': ['get'],
};
/** The only /fhir operations that need no token (src/smart-auth/server.ts, authenticate()). */
const NO_TOKEN = new Set(['get /fhir/metadata', 'get /fhir/.well-known/smart-configuration']);
/** Where server.ts mounts oidc-provider. */
const AUTH_MOUNT = '/auth';
const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

function resolve(ref: string): Json {
  assert.ok(ref.startsWith('#/'), `only local $refs are used: ${ref}`);
  let node: Json = spec;
  for (const part of ref.slice(2).split('/')) {
    node = node?.[part.replace(/~1/g, '/').replace(/~0/g, '~')];
    assert.ok(node !== undefined, `$ref ${ref} does not resolve`);
  }
  return node;
}

const deref = (node: Json): Json => (node && typeof node === 'object' && '$ref' in node ? resolve(node.$ref) : node);

function operations(): Array<{ path: string; method: string; op: Json; params: Json[] }> {
  const out: Array<{ path: string; method: string; op: Json; params: Json[] }> = [];
  for (const [path, item] of Object.entries<Json>(spec.paths)) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      out.push({ path, method, op, params: [...(item.parameters ?? []), ...(op.parameters ?? [])].map(deref) });
    }
  }
  return out;
}

test('openapi: version 3.1.x with info', () => {
  assert.match(spec.openapi, /^3\.1\.\d+$/);
  assert.equal(typeof spec.info?.title, 'string');
  assert.equal(typeof spec.info?.version, 'string');
});

test('openapi: every route of the server is described, with its methods', () => {
  for (const [path, methods] of Object.entries(EXPECTED)) {
    assert.ok(spec.paths[path], `path ${path} is missing`);
    for (const m of methods) assert.ok(spec.paths[path][m], `${m.toUpperCase()} ${path} is missing`);
  }
});

test('openapi: every $ref resolves and operation ids are unique', () => {
  const walk = (node: Json): void => {
    if (Array.isArray(node)) return node.forEach(walk);
    if (!node || typeof node !== 'object') return;
    if (typeof node.$ref === 'string') resolve(node.$ref);
    for (const v of Object.values(node)) walk(v);
  };
  walk(spec);
  const ids = operations().map((o) => o.op.operationId);
  assert.ok(ids.every((id) => typeof id === 'string'), 'every operation has an operationId');
  assert.equal(new Set(ids).size, ids.length, 'operationIds are unique');
});

test('openapi: every path template variable is a required path parameter', () => {
  for (const { path, method, params } of operations()) {
    const vars = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
    for (const v of vars) {
      const p = params.find((x) => x.in === 'path' && x.name === v);
      assert.ok(p, `${method.toUpperCase()} ${path}: no path parameter ${v}`);
      assert.equal(p.required, true);
    }
  }
});

test('openapi: the {type} enum is exactly the server\'s resource types', () => {
  const types = getResourceTypes();
  assert.deepEqual(spec.components.parameters.type.schema.enum, types);
  const compartment = types.filter((t) => t === 'Patient' || getPatientCompartmentParams(t).length > 0);
  assert.deepEqual(spec.components.parameters.compartmentType.schema.enum, compartment);
});

test('openapi: component schemas, content types and headers', () => {
  for (const s of ['Resource', 'Bundle', 'OperationOutcome', 'CapabilityStatement', 'Parameters', 'JsonPatch']) {
    assert.ok(spec.components.schemas[s], `schema ${s} is missing`);
  }
  const patchBody = deref(spec.paths['/fhir/{type}/{id}'].patch.requestBody);
  assert.ok(patchBody.content['application/json-patch+json']);
  assert.ok(spec.paths['/fhir/{type}/_search'].post.requestBody.content['application/x-www-form-urlencoded']);
  assert.ok(spec.paths['/fhir/{type}'].post.requestBody.content['application/fhir+json']);
  assert.ok(spec.paths['/fhir/{type}/{id}'].get.responses['200'].content['application/fhir+json']);
  for (const h of ['ETag', 'Last-Modified', 'Location']) assert.ok(spec.components.headers[h], `header ${h}`);
  const headerParams = new Set(operations().flatMap((o) => o.params.filter((p) => p.in === 'header').map((p) => p.name)));
  for (const h of ['If-Match', 'If-None-Exist', 'If-None-Match', 'If-Modified-Since', 'Prefer']) assert.ok(headerParams.has(h), `header ${h} is documented`);
  const searchParams = new Set(operations().filter((o) => o.op.operationId === 'searchType')[0]!.params.map((p) => p.name));
  for (const p of ['_count', '_offset', '_sort', '_total', '_summary', '_elements', '_include', '_revinclude', '_id', '_lastUpdated', '_format']) {
    assert.ok(searchParams.has(p), `search parameter ${p}`);
  }
});

test('openapi: error responses of the FHIR API are OperationOutcomes', () => {
  const statuses = new Set<string>();
  for (const { path, op } of operations()) {
    if (path.startsWith(AUTH_MOUNT + '/')) continue; // OAuth errors, see below
    for (const [status, resp] of Object.entries<Json>(op.responses)) {
      if (Number(status) < 400) continue;
      if (path === '/readyz') { // a probe's answer, not an error: the readiness JSON, naming the part that is down
        assert.equal(deref(resp).content?.['application/json']?.schema?.$ref, '#/components/schemas/Readiness');
        continue;
      }
      statuses.add(status);
      const schema = deref(resp).content?.['application/fhir+json']?.schema;
      assert.equal(schema?.$ref, '#/components/schemas/OperationOutcome', `${status} is an OperationOutcome`);
    }
  }
  for (const s of ['400', '401', '403', '404', '405', '406', '409', '410', '412', '413', '415', '422', '500', '503']) assert.ok(statuses.has(s), `status ${s} is documented`);
});

// ------------------------------------------------------------------------------------------
// SMART on FHIR authorization
// ------------------------------------------------------------------------------------------

/** The security requirements that apply to an operation (its own, else the top-level ones). */
const effectiveSecurity = (op: Json): Json[] => op.security ?? spec.security ?? [];

test('openapi: security schemes smart (oauth2) and bearer (JWT); the top level requires one of them', () => {
  const schemes = spec.components.securitySchemes;
  assert.equal(schemes.smart?.type, 'oauth2');
  assert.ok(schemes.smart.flows.authorizationCode, 'authorization code flow');
  assert.ok(schemes.smart.flows.clientCredentials, 'client credentials flow');
  for (const s of ['openid', 'fhirUser', 'launch', 'launch/patient', 'offline_access', 'online_access', 'patient/*.rs', 'user/*.cruds']) {
    assert.equal(typeof schemes.smart.flows.authorizationCode.scopes[s], 'string', `authorizationCode scope ${s}`);
  }
  for (const s of ['system/*.rs', 'system/*.cruds']) assert.equal(typeof schemes.smart.flows.clientCredentials.scopes[s], 'string', `clientCredentials scope ${s}`);
  assert.match(schemes.smart.description, /cruds/);
  assert.deepEqual({ type: schemes.bearer?.type, scheme: schemes.bearer?.scheme, bearerFormat: schemes.bearer?.bearerFormat }, { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' });
  assert.deepEqual(spec.security, [{ smart: [] }, { bearer: [] }]);
  // every requirement anywhere names declared schemes
  for (const { path, method, op } of operations()) {
    for (const req of effectiveSecurity(op)) for (const name of Object.keys(req)) assert.ok(schemes[name], `${method.toUpperCase()} ${path}: unknown security scheme ${name}`);
  }
});

test('openapi: every /fhir operation needs a token and declares 401 (WWW-Authenticate) and 403, except metadata and smart-configuration', () => {
  let protectedOps = 0;
  for (const { path, method, op } of operations()) {
    if (!path.startsWith('/fhir')) continue;
    const where = `${method.toUpperCase()} ${path}`;
    if (NO_TOKEN.has(`${method} ${path}`)) {
      assert.deepEqual(op.security, [], `${where} needs no token: security: []`);
      assert.equal(op.responses['401'], undefined, `${where} has no 401`);
      continue;
    }
    protectedOps++;
    const security = effectiveSecurity(op);
    assert.ok(security.length > 0, `${where} is covered by a security requirement`);
    assert.ok(security.every((req: Json) => Object.keys(req).length > 0), `${where}: the token is not optional (no {} alternative)`);
    assert.ok(security.some((req: Json) => 'smart' in req || 'bearer' in req), `${where} accepts a SMART bearer token`);
    const e401 = deref(op.responses['401'] ?? {});
    const e403 = deref(op.responses['403'] ?? {});
    assert.equal(e401.content?.['application/fhir+json']?.schema?.$ref, '#/components/schemas/OperationOutcome', `${where} declares 401`);
    assert.equal(e403.content?.['application/fhir+json']?.schema?.$ref, '#/components/schemas/OperationOutcome', `${where} declares 403`);
    assert.ok(deref(e401.headers?.['WWW-Authenticate'] ?? {}).schema, `${where}: the 401 describes WWW-Authenticate`);
  }
  const expectedFhirOps = Object.entries(EXPECTED).filter(([p]) => p.startsWith('/fhir')).reduce((n, [, ms]) => n + ms.length, 0);
  assert.ok(protectedOps >= expectedFhirOps - NO_TOKEN.size, `protected /fhir operations: ${protectedOps}`);
  for (const key of NO_TOKEN) {
    const [method, path] = key.split(' ');
    assert.ok(spec.paths[path!]?.[method!], `${key} is described`);
  }
});

test('openapi: the oauth2 URLs are the routes of oidc-provider (ROUTES in src/smart-auth/provider.ts)', () => {
  const base = 'http://127.0.0.1:8080/fhir';
  const e = authEndpoints(base);
  assert.equal(new URL(e.token).pathname, AUTH_MOUNT + ROUTES.token, 'authEndpoints mounts the provider at /auth');
  const { authorizationCode, clientCredentials } = spec.components.securitySchemes.smart.flows;
  assert.equal(authorizationCode.tokenUrl, '/auth/token');
  assert.equal(authorizationCode.tokenUrl, AUTH_MOUNT + ROUTES.token);
  assert.equal(authorizationCode.refreshUrl, AUTH_MOUNT + ROUTES.token);
  assert.equal(clientCredentials.tokenUrl, AUTH_MOUNT + ROUTES.token);
  assert.equal(authorizationCode.authorizationUrl, AUTH_MOUNT + ROUTES.authorization);
  assert.equal(new URL(e.authorize).pathname, authorizationCode.authorizationUrl);
  const described: Array<[keyof typeof ROUTES, string]> = [['authorization', 'get'], ['token', 'post'], ['introspection', 'post'], ['revocation', 'post'], ['jwks', 'get']];
  for (const [route, method] of described) {
    const op = spec.paths[AUTH_MOUNT + ROUTES[route]]?.[method];
    assert.ok(op, `${method.toUpperCase()} ${AUTH_MOUNT}${ROUTES[route]} (${route}) is described`);
    assert.ok(op.tags?.includes('auth'), `${route} is tagged auth`);
  }
  for (const route of ['/auth/token', '/auth/introspect', '/auth/revoke']) {
    assert.ok(spec.paths[route].post.requestBody.content['application/x-www-form-urlencoded'], `${route} takes a form`);
  }
  const grants = deref(spec.components.schemas.TokenRequest).oneOf.map((s: Json) => deref(s).allOf[1].properties.grant_type.const).sort();
  assert.deepEqual(grants, ['authorization_code', 'client_credentials', 'refresh_token']);
  const authorizeParams = new Set(spec.paths['/auth/authorize'].get.parameters.map((p: Json) => deref(p).name));
  for (const p of ['response_type', 'client_id', 'redirect_uri', 'scope', 'state', 'aud', 'launch', 'code_challenge', 'code_challenge_method']) assert.ok(authorizeParams.has(p), `authorize parameter ${p}`);
  for (const p of ['access_token', 'token_type', 'expires_in', 'scope', 'id_token', 'refresh_token', 'patient']) {
    assert.ok(spec.components.schemas.TokenResponse.properties[p], `token response field ${p}`);
  }
});

test('openapi: OAuth errors under /auth are {error, error_description} JSON', () => {
  for (const { path, method, op } of operations()) {
    if (!path.startsWith(AUTH_MOUNT + '/')) continue;
    for (const [status, resp] of Object.entries<Json>(op.responses)) {
      if (Number(status) < 400 || path === AUTH_MOUNT + ROUTES.authorization) continue; // authorize shows an HTML page
      assert.equal(deref(resp).content?.['application/json']?.schema?.$ref, '#/components/schemas/OAuthError', `${method.toUpperCase()} ${path} ${status}`);
    }
  }
  assert.deepEqual(spec.components.schemas.OAuthError.required, ['error']);
});

test('openapi: matches the running server (smart-configuration, 401 challenge, CORS preflight)', async () => {
  const app = await testApp({}, { auth: 'none' });
  try {
    const http = supertest(app.app);
    const res = await http.get('/fhir/.well-known/smart-configuration').expect(200);
    const schema = spec.components.schemas.SmartConfiguration;
    const config: Record<string, unknown> = res.body;
    assert.ok(Object.keys(config).length > 0);
    for (const key of Object.keys(config)) assert.ok(schema.properties[key], `smart-configuration field ${key} is in the SmartConfiguration schema`);
    for (const key of schema.required) assert.ok(key in config, `required field ${key} is served`);
    // every endpoint it names is described, at the path the spec gives
    for (const [field, method] of [['authorization_endpoint', 'get'], ['token_endpoint', 'post'], ['introspection_endpoint', 'post'], ['revocation_endpoint', 'post'], ['jwks_uri', 'get']] as const) {
      const path = new URL(String(config[field])).pathname;
      assert.ok(spec.paths[path]?.[method], `${field} ${path} is described (${method.toUpperCase()})`);
    }
    // the scopes the spec lists are ones the server advertises
    const supported = new Set(config.scopes_supported as string[]);
    for (const flow of Object.values<Json>(spec.components.securitySchemes.smart.flows)) {
      for (const s of Object.keys(flow.scopes)) assert.ok(supported.has(s), `scope ${s} is in scopes_supported`);
    }
    assert.deepEqual(config.code_challenge_methods_supported, ['S256']);

    // 401: the challenge and body the spec describes
    const denied = await http.get('/fhir/Patient').expect(401);
    assert.match(String(denied.headers['www-authenticate']), /^Bearer realm="custos", error="invalid_token", error_description="[^"]*"$/);
    assert.match(spec.components.headers['WWW-Authenticate'].example, /^Bearer realm="custos", error="invalid_token", error_description="[^"]*"$/);
    assert.equal(denied.body.resourceType, 'OperationOutcome');
    assert.equal(denied.body.issue[0].code, 'login');
    assert.equal(spec.components.responses.E401.content['application/fhir+json'].example.issue[0].code, 'login');
    assert.equal(spec.components.responses.E403.content['application/fhir+json'].example.issue[0].code, 'forbidden');
    // the two exempt operations really need no token
    const metadata = await http.get('/fhir/metadata').expect(200);
    // every operation the CapabilityStatement names is described, on its type or on {type}
    const rest = metadata.body.rest[0];
    for (const r of rest.resource as Json[]) {
      for (const o of r.operation ?? []) {
        const described = [`/fhir/${r.type}/{id}/$${o.name}`, `/fhir/{type}/{id}/$${o.name}`].some((p) => spec.paths[p]);
        assert.ok(described, `${r.type}/[id]/$${o.name} (CapabilityStatement) is described`);
      }
    }
    for (const o of rest.operation ?? []) assert.ok(spec.paths[`/fhir/$${o.name}`], `$${o.name} (CapabilityStatement) is described`);

    // OPTIONS under /fhir is a CORS preflight (info.description says so)
    const preflight = await http.options('/fhir/Patient/123').set('Origin', 'https://app.example').set('Access-Control-Request-Method', 'GET');
    assert.equal(preflight.status, 204);
    assert.match(String(preflight.headers['access-control-allow-headers']), /Authorization/);
    assert.match(spec.info.description, /OPTIONS[^.]*CORS preflight answered 204/);
    assert.doesNotMatch(spec.info.description, /no authentication yet/);
  } finally {
    await app.close();
  }
});
