import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import { getPatientCompartmentParams, getResourceTypes } from '../src/fhir/definitions.js';

// The spec is JSON (valid OpenAPI 3.1): no YAML parser is among the project's dependencies.
const SPEC_FILE = fileURLToPath(new URL('../openapi/openapi.json', import.meta.url));

type Json = any;
const spec: Json = JSON.parse(fs.readFileSync(SPEC_FILE, 'utf8'));

const EXPECTED: Record<string, string[]> = {
  '/healthz': ['get'],
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
};
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

test('openapi: error responses are OperationOutcomes', () => {
  const statuses = new Set<string>();
  for (const { op } of operations()) {
    for (const [status, resp] of Object.entries<Json>(op.responses)) {
      if (Number(status) < 400) continue;
      statuses.add(status);
      const schema = deref(resp).content?.['application/fhir+json']?.schema;
      assert.equal(schema?.$ref, '#/components/schemas/OperationOutcome', `${status} is an OperationOutcome`);
    }
  }
  for (const s of ['400', '404', '405', '406', '409', '410', '412', '413', '415', '422', '500']) assert.ok(statuses.has(s), `status ${s} is documented`);
});
