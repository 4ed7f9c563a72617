/**
 * batch and transaction Bundles (FHIR R4 http.html#transaction, #batch, bundle.html#references).
 *
 * A Bundle entry becomes a FhirRequest that the router executes, so every entry goes
 * through the same validation, authorization and storage path as a plain REST call.
 *
 * transaction: everything runs inside one store transaction (all or nothing):
 *   1. validate every entry up front (a bad entry fails the whole Bundle, naming its index);
 *   2. execute the DELETEs;
 *   3. resolve identities: POST -> pre-assigned id (or the match of If-None-Exist),
 *      PUT Type/id -> that id, conditional PUT/PATCH -> the id their search finds;
 *      each entry's fullUrl maps to the resolved 'Type/id';
 *   4. resolve conditional references ('Type?criteria') through a search;
 *   5. rewrite references (and other strings equal to a mapped fullUrl) in every resource;
 *   6. execute POSTs, then PUT/PATCH, then GET/HEAD; any failure aborts the transaction;
 *   7. answer a transaction-response with entries in the original order.
 * batch: each entry runs on its own (its own store transaction), in the same order; a failure
 *   only becomes that entry's response.status + response.outcome.
 */
import { STATUS_CODES } from 'node:http';
import type { Bundle, BundleEntry, BundleEntryResponse, OperationOutcome, OperationOutcomeIssue, Resource } from '@medplum/fhirtypes';
import type { IndexRows, StoreTransaction } from '../store/index.js';
import { isResourceType } from './definitions.js';
import { allOk, badRequest, FhirError, preconditionFailed } from './outcome.js';
import type { Principal } from './principal.js';
import type { FhirRequest, FhirRequestHeaders, FhirResponse } from './request.js';

export interface BundleContext {
  /** Executes one interaction; inside `tx` when given. Throws FhirError on failure. */
  handle(req: FhirRequest, tx?: StoreTransaction): Promise<FhirResponse>;
  /** Runs fn in one store transaction (commit all or nothing). */
  transaction<T>(fn: (tx: StoreTransaction) => Promise<T>): Promise<T>;
  /** Absolute FHIR base URL of this server, without a trailing slash. */
  baseUrl: string;
  principal: Principal;
  /** A new server-assigned resource id. */
  newId(): string;
  /** Prefer: return=... of the Bundle request. */
  prefer?: 'minimal' | 'representation' | 'OperationOutcome';
  /**
   * Validates a resource off the event loop. Transaction entries are validated with it before
   * the transaction opens, so the (serialized) write transaction does only the writing.
   */
  validate?(resource: unknown): Promise<OperationOutcomeIssue[]>;
  /** Validates and extracts index rows off the event loop (for bodies that are already final). */
  prepare?(resource: unknown): Promise<{ issues: OperationOutcomeIssue[]; index?: IndexRows }>;
}

type EntryMethod = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
const METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']);

type EntryKind =
  | 'create' // POST Type
  | 'operation' // POST anything else (Type/_search, $operation): passed through
  | 'update' // PUT Type/id
  | 'conditional-update' // PUT Type?criteria
  | 'patch' // PATCH Type/id
  | 'conditional-patch' // PATCH Type?criteria
  | 'delete' // DELETE Type/id
  | 'conditional-delete' // DELETE Type?criteria
  | 'read'; // GET / HEAD anything

type Json = Record<string, unknown>;

interface ParsedEntry {
  /** Validated before the transaction began. */
  prevalidated?: boolean;
  /** Index rows of the final body, extracted before the transaction began. */
  preparedIndex?: IndexRows;
  index: number;
  method: EntryMethod;
  kind: EntryKind;
  /** entry.request.url as sent. */
  url: string;
  /** Path relative to the base, no leading slash. */
  path: string;
  query: Array<[string, string]>;
  /** Resource type named by the URL (first path segment), when the URL names one. */
  type?: string;
  /** Id named by the URL (Type/id...). */
  id?: string;
  fullUrl?: string;
  headers: FhirRequestHeaders;
  /** Deep copy of entry.resource (create/update/operation) or the decoded patch document (PATCH). */
  body?: unknown;
  /** transaction: id a create must use. */
  assignedId?: string;
  /** transaction: 'Type/id' this entry writes (update, patch, delete), for the overlap check. */
  target?: string;
  /** transaction: a create whose If-None-Exist matched: the existing resource, nothing is written. */
  existing?: Resource;
  /** transaction: a create whose If-None-Exist criteria equal an earlier create's: answers like that one. */
  aliasOf?: number;
}

/** Processing order (http.html#trules): DELETE, POST, PUT/PATCH, GET/HEAD. */
function phase(method: EntryMethod): number {
  switch (method) {
    case 'DELETE': return 0;
    case 'POST': return 1;
    case 'PUT':
    case 'PATCH': return 2;
    default: return 3;
  }
}

const TYPE_RE = /^[A-Z][A-Za-z]+$/;
const ID_RE = /^[A-Za-z0-9\-.]{1,64}$/;
/** 'Type?criteria' (conditional reference). */
const CONDITIONAL_REF_RE = /^([A-Z][A-Za-z]+)\?(.*)$/s;
/** 'Type/id' or 'Type/id/_history/vid' (relative literal reference). */
const RELATIVE_REF_RE = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(\/_history\/[A-Za-z0-9\-.]{1,64})?$/;
const ABSOLUTE_URL_RE = /^[A-Za-z][A-Za-z0-9+.-]*:/;
/** Search-result parameters dropped from conditional-operation criteria. */
const RESULT_PARAMS = new Set(['_count', '_sort', '_include', '_revinclude', '_summary', '_elements', '_total', '_contained', '_containedType', '_format', '_pretty']);

export async function processBundle(bundle: unknown, ctx: BundleContext): Promise<Bundle> {
  if (!isObject(bundle) || bundle.resourceType !== 'Bundle') {
    throw badRequest(`Expected a Bundle resource (of type batch or transaction), got ${describe(bundle)}`);
  }
  const type = bundle.type;
  if (type !== 'batch' && type !== 'transaction') {
    throw badRequest(
      `Bundle.type must be "batch" or "transaction" to be processed at the base URL; got ${type === undefined ? 'no type' : JSON.stringify(type)}`,
      ['Bundle.type'],
    );
  }
  const rawEntries = bundle.entry ?? [];
  if (!Array.isArray(rawEntries)) throw badRequest('Bundle.entry must be an array', ['Bundle.entry']);
  const baseUrl = ctx.baseUrl.replace(/\/+$/, '');

  if (type === 'batch') {
    const parsed = rawEntries.map((raw, i) => {
      try {
        return parseEntry(raw, i, baseUrl);
      } catch (err) {
        if (err instanceof FhirError) return err;
        throw err;
      }
    });
    return processBatch(parsed, ctx, baseUrl);
  }
  // A transaction is rejected as a whole when any entry is malformed (before anything runs).
  const parsed = rawEntries.map((raw, i) => parseEntry(raw, i, baseUrl));
  return processTransaction(parsed, ctx, baseUrl);
}

// ---------------------------------------------------------------------------------------------
// Entry parsing and validation

function parseEntry(raw: unknown, index: number, baseUrl: string): ParsedEntry {
  const at = `Bundle.entry[${index}]`;
  const fail = (msg: string, field = ''): FhirError => badRequest(`${at}${field ? '.' + field : ''}: ${msg}`, [`${at}${field ? '.' + field : ''}`]);
  if (!isObject(raw)) throw fail('entry must be an object');
  const request = raw.request;
  if (!isObject(request)) throw fail('entry.request is required in a batch or transaction (method and url)', 'request');
  const method = request.method;
  if (typeof method !== 'string' || !METHODS.has(method)) {
    throw fail(`request.method must be one of GET, HEAD, POST, PUT, PATCH, DELETE; got ${describe(method)}`, 'request.method');
  }
  const url = request.url;
  if (typeof url !== 'string' || url.trim() === '') throw fail('request.url is required', 'request.url');
  let parsedUrl: { path: string; query: Array<[string, string]>; hasQuery: boolean };
  try {
    parsedUrl = parseUrl(url, baseUrl);
  } catch (err) {
    throw fail((err as Error).message, 'request.url');
  }
  const { path, query, hasQuery } = parsedUrl;
  const segments = path === '' ? [] : path.split('/');
  const first = segments[0];
  const type = first !== undefined && TYPE_RE.test(first) ? first : undefined;
  const id = type && segments.length >= 2 && ID_RE.test(segments[1]!) ? segments[1] : undefined;
  if (raw.fullUrl !== undefined && typeof raw.fullUrl !== 'string') throw fail('fullUrl must be a string', 'fullUrl');
  const fullUrl = raw.fullUrl as string | undefined;
  const headers = parseHeaders(request, fail);
  const m = method as EntryMethod;

  const resource = raw.resource;
  if (resource !== undefined && !(isObject(resource) && typeof resource.resourceType === 'string')) {
    throw fail('resource must be a FHIR resource (an object with a resourceType)', 'resource');
  }
  const requireType = (what: string): string => {
    if (!type || !isResourceType(type)) throw fail(`${what}: "${first ?? ''}" is not a known resource type (url ${JSON.stringify(url)})`, 'request.url');
    return type;
  };
  const requireResource = (t: string): Json => {
    if (!isObject(resource)) throw fail(`${m} ${url} needs entry.resource`, 'resource');
    if (resource.resourceType !== t) {
      throw fail(`resource type ${String(resource.resourceType)} does not match the request url type ${t} (${m} ${url})`, 'resource.resourceType');
    }
    return structuredClone(resource);
  };

  const base = { index, method: m, url, path, query, type, id, fullUrl, headers };
  switch (m) {
    case 'GET':
    case 'HEAD':
      return { ...base, kind: 'read' };
    case 'POST': {
      if (segments.length === 0) throw fail('a Bundle entry cannot POST another Bundle to the base (no nesting)', 'request.url');
      if (segments.length === 1 && !first!.startsWith('$') && first !== '_search') {
        const t = requireType('POST creates a resource of the type in the url');
        if (hasQuery) throw fail(`a create url is just the resource type; got ${JSON.stringify(url)}`, 'request.url');
        return { ...base, kind: 'create', body: requireResource(t) };
      }
      // _search, $operations: passed through to the router with the resource (if any) as the body.
      return { ...base, kind: 'operation', body: isObject(resource) ? structuredClone(resource) : undefined };
    }
    case 'PUT':
    case 'PATCH': {
      const t = requireType(`${m} updates a resource`);
      let kind: EntryKind;
      if (segments.length === 2 && id && !hasQuery) kind = m === 'PUT' ? 'update' : 'patch';
      else if (segments.length === 1 && hasQuery) kind = m === 'PUT' ? 'conditional-update' : 'conditional-patch';
      else throw fail(`${m} url must be "Type/id" or "Type?criteria"; got ${JSON.stringify(url)}`, 'request.url');
      if (m === 'PUT') {
        return { ...base, kind, body: requireResource(t), target: kind === 'update' ? `${t}/${id}` : undefined };
      }
      const patch = decodePatch(resource, fail);
      return {
        ...base, kind, body: patch.body, headers: { ...headers, contentType: patch.contentType },
        target: kind === 'patch' ? `${t}/${id}` : undefined,
      };
    }
    case 'DELETE': {
      const t = requireType('DELETE');
      if (segments.length === 2 && id && !hasQuery) return { ...base, kind: 'delete', target: `${t}/${id}` };
      if (segments.length === 1 && hasQuery) return { ...base, kind: 'conditional-delete' };
      throw fail(`DELETE url must be "Type/id" or "Type?criteria"; got ${JSON.stringify(url)}`, 'request.url');
    }
  }
}

function parseHeaders(request: Json, fail: (msg: string, field?: string) => FhirError): FhirRequestHeaders {
  const headers: FhirRequestHeaders = {};
  for (const name of ['ifMatch', 'ifNoneMatch', 'ifNoneExist', 'ifModifiedSince'] as const) {
    const v = request[name];
    if (v === undefined || v === null) continue;
    if (typeof v !== 'string') throw fail(`request.${name} must be a string`, `request.${name}`);
    headers[name] = v;
  }
  return headers;
}

/**
 * The body of a PATCH entry. R4 carries a JSON Patch as a Binary (contentType
 * application/json-patch+json, base64 data); a FHIRPath Patch is a Parameters resource.
 */
function decodePatch(resource: unknown, fail: (msg: string, field?: string) => FhirError): { body: unknown; contentType: string } {
  if (Array.isArray(resource)) return { body: structuredClone(resource), contentType: 'application/json-patch+json' };
  if (!isObject(resource)) throw fail('PATCH needs entry.resource: a Binary holding a JSON Patch (or a Parameters FHIRPath Patch)', 'resource');
  if (resource.resourceType === 'Binary') {
    const ct = typeof resource.contentType === 'string' ? resource.contentType.split(';')[0]!.trim().toLowerCase() : '';
    if (ct !== 'application/json-patch+json') {
      throw fail(`a PATCH Binary must have contentType application/json-patch+json; got ${describe(resource.contentType)}`, 'resource.contentType');
    }
    if (typeof resource.data !== 'string') throw fail('the PATCH Binary has no data', 'resource.data');
    let patch: unknown;
    try {
      patch = JSON.parse(Buffer.from(resource.data, 'base64').toString('utf8'));
    } catch {
      throw fail('the PATCH Binary data is not base64-encoded JSON', 'resource.data');
    }
    if (!Array.isArray(patch)) throw fail('a JSON Patch document must be an array of operations', 'resource.data');
    return { body: patch, contentType: 'application/json-patch+json' };
  }
  return { body: structuredClone(resource), contentType: 'application/fhir+json' };
}

/**
 * 'Type', 'Type/id', 'Type?query', 'Type/id/_history/n', optional leading '/', or an absolute
 * URL under this server's base. The query is split into URL-decoded [name, value] pairs.
 */
function parseUrl(raw: string, baseUrl: string): { path: string; query: Array<[string, string]>; hasQuery: boolean } {
  let url = raw.trim();
  if (ABSOLUTE_URL_RE.test(url)) {
    if (url === baseUrl) url = '';
    else if (url.startsWith(baseUrl + '/') || url.startsWith(baseUrl + '?')) url = url.slice(baseUrl.length);
    else throw new Error(`${JSON.stringify(raw)} is an absolute URL that is not on this server (base ${baseUrl})`);
  }
  url = url.replace(/^\/+/, '');
  const q = url.indexOf('?');
  const pathPart = (q >= 0 ? url.slice(0, q) : url).replace(/\/+$/, '');
  const queryPart = q >= 0 ? url.slice(q + 1) : '';
  const path = pathPart.split('/').map(decode).join('/');
  return { path, query: parseQuery(queryPart), hasQuery: q >= 0 && queryPart !== '' };
}

function parseQuery(queryPart: string): Array<[string, string]> {
  const query: Array<[string, string]> = [];
  for (const part of queryPart.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    query.push(eq >= 0 ? [decode(part.slice(0, eq)), decode(part.slice(eq + 1))] : [decode(part), '']);
  }
  return query;
}

function decode(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    throw new Error(`malformed percent-encoding in ${JSON.stringify(s)}`);
  }
}

/** If-None-Exist holds 'param=value&...' (some clients send 'Type?param=value'). */
function criteriaOf(ifNoneExist: string): Array<[string, string]> {
  const s = ifNoneExist.trim();
  const q = s.indexOf('?');
  const eq = s.indexOf('=');
  return parseQuery(q >= 0 && (eq < 0 || q < eq) ? s.slice(q + 1) : s);
}

// ---------------------------------------------------------------------------------------------
// batch

async function processBatch(entries: Array<ParsedEntry | FhirError>, ctx: BundleContext, baseUrl: string): Promise<Bundle> {
  const results: BundleEntry[] = new Array(entries.length);
  entries.forEach((e, i) => {
    if (e instanceof FhirError) results[i] = failureEntry(e.status, e.toOutcome());
  });
  const runnable = entries.filter((e): e is ParsedEntry => !(e instanceof FhirError));
  for (const e of byPhase(runnable)) {
    try {
      const resp = await ctx.handle(toRequest(e, ctx.principal));
      results[e.index] = resp.status >= 400
        ? failureEntry(resp.status, asOutcome(resp.body) ?? outcomeFor(resp.status, `${e.method} ${e.url} failed`))
        : responseEntry(e, resp, ctx.prefer, baseUrl);
    } catch (err) {
      if (err instanceof FhirError) {
        results[e.index] = failureEntry(err.status, err.toOutcome());
      } else {
        const msg = err instanceof Error ? err.message : String(err);
        results[e.index] = failureEntry(500, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'exception', diagnostics: `Internal error processing ${e.method} ${e.url}: ${msg}` }] });
      }
    }
  }
  return { resourceType: 'Bundle', id: ctx.newId(), type: 'batch-response', timestamp: new Date().toISOString(), entry: results };
}

// ---------------------------------------------------------------------------------------------
// transaction

async function processTransaction(entries: ParsedEntry[], ctx: BundleContext, baseUrl: string): Promise<Bundle> {
  checkOverlaps(entries);
  if (ctx.prepare && isUnconditional(entries)) {
    // Nothing here needs a search inside the transaction: ids and references can be settled
    // now, so the bodies are final and their index rows are extracted off the event loop too.
    settleIdentities(entries, ctx, baseUrl);
    await prevalidate(entries, ctx.prepare);
  } else if (ctx.validate) {
    const validate = ctx.validate;
    await prevalidate(entries, async (r) => ({ issues: await validate(r) }));
  }
  return ctx.transaction(async (tx) => {
    const responses = new Map<number, FhirResponse>();
    const run = async (e: ParsedEntry): Promise<FhirResponse> => {
      let resp: FhirResponse;
      try {
        resp = await ctx.handle(toRequest(e, ctx.principal), tx);
      } catch (err) {
        if (err instanceof FhirError) throw entryFailed(e, err.status, err.issues);
        throw err;
      }
      if (resp.status >= 400) {
        throw entryFailed(e, resp.status, asOutcome(resp.body)?.issue ?? [{ severity: 'error', code: 'processing', diagnostics: `status ${resp.status}` }]);
      }
      responses.set(e.index, resp);
      return resp;
    };
    const ordered = byPhase(entries);

    // 1. DELETE first, so that the searches below see the state the writes will apply to.
    for (const e of ordered) if (e.method === 'DELETE') await run(e);

    // 2. Identities: fullUrl -> 'Type/id'.
    const ids = new Map<string, string>();
    const mapFullUrl = (e: ParsedEntry, typeAndId: string): void => {
      if (e.fullUrl) ids.set(e.fullUrl, typeAndId);
    };
    const search = (type: string, criteria: Array<[string, string]>, what: string) => findMatches(ctx, tx, type, criteria, what);
    const createsByCriteria = new Map<string, ParsedEntry>();
    for (const e of ordered) {
      const type = e.type!;
      try {
        if (e.kind === 'create') {
          if (e.headers.ifNoneExist !== undefined) {
            const criteria = criteriaOf(e.headers.ifNoneExist);
            const key = `${type}?${canonicalQuery(criteria)}`;
            const earlier = createsByCriteria.get(key);
            if (earlier) {
              // Same criteria as an earlier create of this Bundle: the same resource.
              e.aliasOf = earlier.index;
              e.existing = earlier.existing;
              e.assignedId = earlier.assignedId;
              mapFullUrl(e, `${type}/${earlier.existing?.id ?? earlier.assignedId}`);
              continue;
            }
            createsByCriteria.set(key, e);
            const matches = await search(type, criteria, `If-None-Exist ${JSON.stringify(e.headers.ifNoneExist)}`);
            if (matches.length > 1) throw preconditionFailed(`If-None-Exist ${JSON.stringify(e.headers.ifNoneExist)} matches more than one ${type}`);
            if (matches.length === 1) {
              e.existing = matches[0]!;
              mapFullUrl(e, `${type}/${e.existing.id}`);
              continue;
            }
          }
          e.assignedId ??= ctx.newId();
          (e.body as Json).id = e.assignedId;
          e.headers = { ...e.headers, ifNoneExist: undefined };
          mapFullUrl(e, `${type}/${e.assignedId}`);
        } else if (e.kind === 'update' || e.kind === 'patch') {
          mapFullUrl(e, `${type}/${e.id}`);
        } else if (e.kind === 'conditional-update' || e.kind === 'conditional-patch') {
          const matches = await search(type, e.query, `conditional ${e.method} criteria`);
          if (matches.length > 1) throw preconditionFailed(`${e.method} ${e.url}: the criteria match more than one ${type}`);
          const body = e.body as Json;
          let id: string;
          if (matches.length === 1) {
            id = matches[0]!.id!;
            if (e.kind === 'conditional-update' && typeof body.id === 'string' && body.id !== id) {
              throw badRequest(`${e.method} ${e.url}: the resource id ${body.id} differs from the id of the matching ${type} (${id})`);
            }
          } else if (e.kind === 'conditional-patch') {
            throw new FhirError(404, 'not-found', `${e.method} ${e.url}: no ${type} matches the criteria`);
          } else {
            // No match: a create, with the resource's own id when it has one (update as create).
            id = typeof body.id === 'string' && ID_RE.test(body.id) ? body.id : ctx.newId();
          }
          if (e.kind === 'conditional-update') body.id = id;
          e.kind = e.kind === 'conditional-update' ? 'update' : 'patch';
          e.path = `${type}/${id}`;
          e.query = [];
          e.id = id;
          e.target = `${type}/${id}`;
          mapFullUrl(e, e.target);
        }
      } catch (err) {
        if (err instanceof FhirError) throw entryFailed(e, err.status, err.issues);
        throw err;
      }
    }
    checkOverlaps(entries);

    // 3. Conditional references, resolved by a search each (exactly one match).
    const conditional = new Map<string, string>();
    for (const e of ordered) {
      if (e.body === undefined || e.method === 'GET' || e.method === 'HEAD') continue;
      for (const ref of collectConditionalRefs(e.body)) {
        if (conditional.has(ref) || ids.has(ref)) continue;
        const [, type, q] = CONDITIONAL_REF_RE.exec(ref)!;
        try {
          if (!isResourceType(type!)) throw badRequest(`conditional reference ${JSON.stringify(ref)}: unknown resource type ${type}`);
          const matches = await search(type!, parseQuery(q!), `conditional reference ${JSON.stringify(ref)}`);
          if (matches.length !== 1) {
            throw preconditionFailed(`conditional reference ${JSON.stringify(ref)} matches ${matches.length === 0 ? 'no' : 'more than one'} ${type}; exactly one is required`);
          }
          conditional.set(ref, `${type}/${matches[0]!.id}`);
        } catch (err) {
          if (err instanceof FhirError) throw entryFailed(e, err.status, err.issues);
          throw err;
        }
      }
    }

    // 4. Rewrite references in every entry body (and search values of GETs equal to a fullUrl).
    for (const e of entries) {
      if (e.method === 'GET' || e.method === 'HEAD') {
        e.query = e.query.map(([n, v]) => [n, ids.get(v) ?? v]);
        continue;
      }
      if (e.body === undefined || e.method === 'DELETE') continue;
      e.body = rewriteReferences(e.body, relativeBase(e.fullUrl, baseUrl), ids, conditional);
    }

    // 5. Creates, then updates/patches, then reads (each phase in Bundle order).
    for (const e of ordered) {
      if (e.method === 'DELETE') continue;
      if (e.kind === 'create' && (e.existing || e.aliasOf !== undefined)) continue;
      await run(e);
    }

    // 6. The transaction-response, in the original order.
    const out: BundleEntry[] = entries.map((e) => {
      if (e.kind === 'create' && e.aliasOf !== undefined && !e.existing) {
        const first = responses.get(e.aliasOf)!;
        return responseEntry(e, { ...first, status: 200 }, ctx.prefer, baseUrl);
      }
      if (e.kind === 'create' && e.existing) {
        return responseEntry(e, existingResponse(e.existing, baseUrl), ctx.prefer, baseUrl);
      }
      return responseEntry(e, responses.get(e.index)!, ctx.prefer, baseUrl);
    });
    return { resourceType: 'Bundle', id: ctx.newId(), type: 'transaction-response', timestamp: new Date().toISOString(), entry: out };
  });
}

/**
 * Validates POST/PUT bodies in parallel (reference rewriting later does not change validity);
 * index rows that come back (from `prepare`, on final bodies) are kept for the transaction.
 */
async function prevalidate(
  entries: ParsedEntry[],
  check: (r: unknown) => Promise<{ issues: OperationOutcomeIssue[]; index?: IndexRows }>,
): Promise<void> {
  const writes = entries.filter((e) => (e.method === 'POST' || e.method === 'PUT') && isObject(e.body) && typeof e.body.resourceType === 'string');
  const results = await Promise.all(writes.map((e) => check(e.body)));
  writes.forEach((e, i) => {
    const { issues, index } = results[i]!;
    if (issues.length > 0) throw entryFailed(e, 400, issues);
    e.prevalidated = true;
    e.preparedIndex = index;
  });
}

/** Plain creates, updates by id, deletes and reads, with no conditional reference anywhere. */
function isUnconditional(entries: ParsedEntry[]): boolean {
  return entries.every((e) => {
    if (e.kind === 'create') return e.headers.ifNoneExist === undefined && collectConditionalRefs(e.body).size === 0;
    if (e.kind === 'update') return collectConditionalRefs(e.body).size === 0;
    return e.kind === 'delete' || e.kind === 'read';
  });
}

/** Assigns the ids of creates and rewrites references to fullUrls, as step 2 and 4 would in the transaction. */
function settleIdentities(entries: ParsedEntry[], ctx: BundleContext, baseUrl: string): void {
  const ids = new Map<string, string>();
  for (const e of entries) {
    if (e.kind === 'create') {
      e.assignedId = ctx.newId();
      (e.body as Json).id = e.assignedId;
      if (e.fullUrl) ids.set(e.fullUrl, `${e.type}/${e.assignedId}`);
    } else if (e.kind === 'update' && e.fullUrl) {
      ids.set(e.fullUrl, `${e.type}/${e.id}`);
    }
  }
  for (const e of entries) {
    if ((e.kind === 'create' || e.kind === 'update') && e.body !== undefined) {
      e.body = rewriteReferences(e.body, relativeBase(e.fullUrl, baseUrl), ids, new Map());
    }
  }
}

/** Two entries of a transaction that write the same resource make it fail (http.html#trules). */
function checkOverlaps(entries: ParsedEntry[]): void {
  const seen = new Map<string, ParsedEntry>();
  for (const e of entries) {
    if (!e.target) continue;
    const other = seen.get(e.target);
    if (other) {
      throw badRequest(
        `Bundle.entry[${other.index}] (${other.method} ${other.url}) and Bundle.entry[${e.index}] (${e.method} ${e.url}) both write ${e.target}; a transaction may write each resource only once`,
        [`Bundle.entry[${e.index}]`],
      );
    }
    seen.set(e.target, e);
  }
}

/** Runs a conditional-operation search inside the transaction; returns the matching resources. */
async function findMatches(ctx: BundleContext, tx: StoreTransaction, type: string, criteria: Array<[string, string]>, what: string): Promise<Resource[]> {
  const q = criteria.filter(([n]) => !RESULT_PARAMS.has(n.split(':')[0]!));
  if (q.length === 0) throw badRequest(`${what}: no search criteria`);
  const resp = await ctx.handle({
    method: 'GET', path: type, query: [...q, ['_count', '2']],
    // An ignored (unknown) parameter would widen the match: conditional operations are strict.
    headers: { handling: 'strict' }, principal: ctx.principal, internal: true,
  }, tx);
  if (resp.status >= 400) {
    throw FhirError.fromIssues(resp.status, asOutcome(resp.body)?.issue ?? [{ severity: 'error', code: 'processing', diagnostics: `${what}: search failed (${resp.status})` }]);
  }
  const body = resp.body as Bundle | undefined;
  return (body?.entry ?? [])
    .filter((en) => en.resource && (en.search?.mode ?? 'match') === 'match')
    .map((en) => en.resource as Resource);
}

function canonicalQuery(q: Array<[string, string]>): string {
  return q.map(([n, v]) => `${encodeURIComponent(n)}=${encodeURIComponent(v)}`).sort().join('&');
}

function entryFailed(e: ParsedEntry, status: number, issues: OperationOutcomeIssue[]): FhirError {
  const [first, ...rest] = issues;
  const why = first?.diagnostics ?? first?.details?.text ?? `status ${status}`;
  return FhirError.fromIssues(status, [
    {
      ...(first ?? { severity: 'error', code: 'processing' }),
      severity: 'error',
      diagnostics: `Transaction failed at Bundle.entry[${e.index}] (${e.method} ${e.url}): ${why}`,
      expression: [`Bundle.entry[${e.index}]`, ...(first?.expression ?? [])],
    },
    ...rest,
  ]);
}

/** A 200 answer for a create whose If-None-Exist matched an existing resource. */
function existingResponse(resource: Resource, baseUrl: string): FhirResponse {
  const vid = resource.meta?.versionId;
  return {
    status: 200,
    body: resource,
    ...(vid ? { etag: `W/"${vid}"`, location: `${baseUrl}/${resource.resourceType}/${resource.id}/_history/${vid}` } : {}),
    ...(resource.meta?.lastUpdated ? { lastModified: resource.meta.lastUpdated } : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// Reference rewriting (bundle.html#references, http.html#trules)

/** The base against which an entry's relative references resolve: its fullUrl's base, else this server. */
function relativeBase(fullUrl: string | undefined, baseUrl: string): string {
  if (fullUrl && /^https?:\/\//i.test(fullUrl)) {
    const m = /^(.*)\/[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64}(\/_history\/[A-Za-z0-9\-.]{1,64})?$/.exec(fullUrl);
    if (m) return m[1]!;
  }
  return baseUrl;
}

function collectConditionalRefs(node: unknown, out: Set<string> = new Set()): Set<string> {
  if (Array.isArray(node)) {
    for (const v of node) collectConditionalRefs(v, out);
  } else if (isObject(node)) {
    for (const [k, v] of Object.entries(node)) {
      if (k === 'reference' && typeof v === 'string' && CONDITIONAL_REF_RE.test(v)) out.add(v);
      else collectConditionalRefs(v, out);
    }
  }
  return out;
}

/**
 * Deep-rewrites a resource (contained resources included):
 * - Reference.reference equal to a mapped fullUrl, a conditional reference, or a relative
 *   reference that resolves (against the entry's base) to a mapped fullUrl -> 'Type/id';
 * - any other string equal to a mapped fullUrl (uri, url, valueString...) -> 'Type/id';
 * - href/src attributes in narrative divs equal to a mapped fullUrl.
 * Resource ids are left alone.
 */
function rewriteReferences(node: unknown, base: string, ids: Map<string, string>, conditional: Map<string, string>): unknown {
  const rewriteString = (s: string, key: string | undefined): string => {
    if (key === 'id') return s;
    const mapped = ids.get(s);
    if (mapped !== undefined) return mapped;
    if (key === 'reference') {
      const c = conditional.get(s);
      if (c !== undefined) return c;
      const m = RELATIVE_REF_RE.exec(s);
      if (m) {
        const target = ids.get(`${base}/${m[1]}/${m[2]}`);
        if (target !== undefined) return target;
      }
      return s;
    }
    if (key === 'div' && ids.size > 0) {
      return s.replace(/\b(href|src)\s*=\s*"([^"]*)"/g, (all, attr: string, value: string) => {
        const t = ids.get(value);
        return t === undefined ? all : `${attr}="${t}"`;
      });
    }
    return s;
  };
  const walk = (value: unknown, key: string | undefined): unknown => {
    if (typeof value === 'string') return rewriteString(value, key);
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) value[i] = walk(value[i], key);
      return value;
    }
    if (isObject(value)) {
      for (const k of Object.keys(value)) value[k] = walk(value[k], k);
      return value;
    }
    return value;
  };
  return walk(node, undefined);
}

// ---------------------------------------------------------------------------------------------
// Requests and response entries

function byPhase(entries: ParsedEntry[]): ParsedEntry[] {
  return [...entries].sort((a, b) => phase(a.method) - phase(b.method) || a.index - b.index);
}

function toRequest(e: ParsedEntry, principal: Principal): FhirRequest {
  const headers: FhirRequestHeaders = {};
  for (const [k, v] of Object.entries(e.headers) as Array<[keyof FhirRequestHeaders, string | undefined]>) {
    if (v !== undefined) (headers as Record<string, string>)[k] = v;
  }
  if (e.body !== undefined && headers.contentType === undefined && e.method !== 'GET' && e.method !== 'HEAD') {
    headers.contentType = 'application/fhir+json';
  }
  return {
    method: e.method === 'HEAD' ? 'GET' : e.method,
    path: e.path,
    query: e.query,
    headers,
    ...(e.body !== undefined && e.method !== 'GET' && e.method !== 'HEAD' && e.method !== 'DELETE' ? { body: e.body } : {}),
    principal,
    ...(e.assignedId ? { assignedId: e.assignedId } : {}),
    ...(e.prevalidated ? { prevalidated: true } : {}),
    ...(e.preparedIndex ? { preparedIndex: e.preparedIndex } : {}),
  };
}

function responseEntry(e: ParsedEntry, resp: FhirResponse, prefer: BundleContext['prefer'], baseUrl: string): BundleEntry {
  const response: BundleEntryResponse = { status: statusLine(resp.status) };
  if (resp.location) response.location = resp.location;
  if (resp.etag) response.etag = resp.etag;
  const body = resp.body;
  // The stored instant (ms precision) rather than the HTTP date (second precision), when at hand.
  const instant = body && body.resourceType !== 'Bundle' && body.resourceType !== 'OperationOutcome' ? body.meta?.lastUpdated : undefined;
  if (instant) response.lastModified = instant;
  else if (resp.lastModified) response.lastModified = toInstant(resp.lastModified);
  let resource: Resource | undefined;
  // Reads and operations answer with their result whatever Prefer says; writes follow Prefer: return.
  const isRead = e.kind === 'read' || e.kind === 'operation';
  if (body && e.method !== 'HEAD') {
    if (isRead) {
      resource = body;
    } else if (body.resourceType === 'OperationOutcome') {
      response.outcome = body;
    } else if (prefer !== 'minimal' && prefer !== 'OperationOutcome') {
      resource = body;
    }
  }
  if (!isRead && prefer === 'OperationOutcome' && !response.outcome) {
    response.outcome = asOutcome(resp.outcome) ?? allOk();
  }
  const out: BundleEntry = {};
  if (resource?.id && resource.resourceType !== 'Bundle' && resource.resourceType !== 'OperationOutcome' && resource.resourceType !== 'Parameters') {
    out.fullUrl = `${baseUrl}/${resource.resourceType}/${resource.id}`;
  }
  if (resource) out.resource = resource;
  out.response = response;
  return out;
}

function failureEntry(status: number, outcome: OperationOutcome): BundleEntry {
  return { response: { status: statusLine(status), outcome } };
}

function statusLine(status: number): string {
  const reason = STATUS_CODES[status];
  return reason ? `${status} ${reason}` : String(status);
}

function toInstant(value: string): string {
  if (/^\d{4}-\d{2}-\d{2}T/.test(value)) return value;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? value : d.toISOString();
}

function asOutcome(body: unknown): OperationOutcome | undefined {
  return isObject(body) && body.resourceType === 'OperationOutcome' ? (body as unknown as OperationOutcome) : undefined;
}

function outcomeFor(status: number, diagnostics: string): OperationOutcome {
  return { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: status === 404 ? 'not-found' : 'processing', diagnostics }] };
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (isObject(v)) return typeof v.resourceType === 'string' ? `a ${v.resourceType}` : 'an object without resourceType';
  return JSON.stringify(v);
}
