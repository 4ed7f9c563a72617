import { randomBytes } from 'node:crypto';
import { newResourceId } from './resource-id.js';
import jsonpatch from 'fast-json-patch';
import type { Bundle, BundleEntry, CapabilityStatementRestSecurity, OperationOutcome, Parameters, Resource } from '@medplum/fhirtypes';
import { VersionConflictError } from '../store/index.js';
import type { AccessCondition, HistoryQuery, IndexRows, Store, StoredVersion, StoreReader, StoreTransaction } from '../store/index.js';
import { processBundle } from './bundle.js';
import { DEFAULT_JSON_LIMITS, jsonLimitViolation, type JsonLimits } from './json-limits.js';
import { buildCapabilityStatement } from './capability.js';
import { getPatientCompartmentParams, isResourceType } from './definitions.js';
import { allOk, badRequest, FhirError, gone, notFound, notSupported, preconditionFailed } from './outcome.js';
import { applyAccess, confineQuery, constrainQuery, contentInCompartment, isMember, matchingScopeQueries, satisfying, versionWithin, visibleExpr } from './access-constraints.js';
import { accessConditionFor } from './access-expr.js';
import type { AccessDecision, AccessPolicy, AccessRequest } from './principal.js';
import type { AuditFacts, AuditSink } from './audit-port.js';
import { auditQuery, classify, entryRefs, ownersFromIndex, ownersOfRefs, READ_SHAPED, type AuditNote } from './audit-note.js';
import { bundleViewForPatient, viewForPatient } from './audit-view.js';
import type { ReadRule } from './access-constraints.js';
import type { FhirRequest, FhirResponse } from './request.js';
import { parseSearch } from './search/parse.js';
import { searchBundle, type SearchArgs, type SearchReply } from './search-service.js';
import { assertResourceShape, assertValidId, validationIssues } from './validate.js';
import type { WritePreparer } from './write-pool.js';

export interface RouterOptions {
  store: Store;
  baseUrl: string;
  search: { defaultCount: number; maxCount: number };
  policy: AccessPolicy;
  /** Operations beyond the core interactions (e.g. the ledger's $verify, $ledger-status). */
  operations?: {
    /**
     * GET|POST [type]/[id]/$name and [type]/[id]/_history/[vid]/$name; the router checks read
     * access to the target first unless the handler has `checksOwnAccess` (then it must).
     */
    instance?: Record<string, InstanceOperation>;
    /** GET|POST [base]/$name. */
    system?: Record<string, (req: FhirRequest) => Promise<FhirResponse>>;
  };
  /** rest.security of the CapabilityStatement (how to get a token). */
  security?: CapabilityStatementRestSecurity;
  /** Validation + index extraction (worker threads in the server; inline when omitted). */
  preparer: WritePreparer;
  /**
   * Warnings about valid content that will not work as its author may expect (e.g. a Consent
   * with elements the consent engine does not understand), for $validate and writes.
   */
  advise?: (resource: Resource) => string[];
  /** The audit trail: an AuditEvent per interaction (changes in their own transaction). */
  audit?: AuditSink;
  /** Limits on arrays and values per resource (the http layer applies them to bodies; the router to patched resources). */
  jsonLimits?: JsonLimits;
  /** Key of the HMAC that binds paging cursors to their search (base64url); default: random per router. */
  cursorSecret?: string;
  /** Runs a search in a worker thread, answering the serialized Bundle; undefined = on this thread. */
  searcher?: (args: SearchArgs) => Promise<SearchReply> | undefined;
}

/** An instance operation; handlers apply to any type unless they refuse it themselves. */
export type InstanceOperation = ((req: FhirRequest, target: { resourceType: string; id: string; version?: number }) => Promise<FhirResponse>) & {
  /** The handler decides who may call it (e.g. $break-glass, for someone who cannot read the target yet). */
  checksOwnAccess?: boolean;
  /** The resource types it applies to (default: all); on others it is not supported (400). */
  types?: readonly string[];
};

/** W/"3" -> 3; anything else is a 400 (an If-Match that cannot match anything). */
export function parseETag(tag: string): number {
  const m = /^(?:W\/)?"?(\d+)"?$/.exec(tag.trim());
  if (!m) throw badRequest(`Invalid ETag "${tag.slice(0, 40)}": expected W/"<versionId>"`);
  return Number(m[1]);
}

export const etagOf = (v: StoredVersion) => `W/"${v.versionId}"`;
const httpDate = (iso: string) => new Date(iso).toUTCString();

/**
 * Executes one FHIR interaction against the store. HTTP and Bundle entries both come here,
 * so every interaction behaves the same whichever way it arrives. With `tx`, all reads and
 * writes happen inside that transaction (transaction Bundles); otherwise each write is its own.
 */
export class FhirRouter {
  private readonly cursorSecret: string;
  constructor(private readonly opts: RouterOptions) {
    this.cursorSecret = opts.cursorSecret ?? randomBytes(32).toString('base64url');
  }

  get baseUrl(): string {
    return this.opts.baseUrl;
  }

  /** One interaction, and its AuditEvent (when an audit sink is configured). */
  async handle(req: FhirRequest, tx?: StoreTransaction): Promise<FhirResponse> {
    const audit = this.opts.audit;
    const kind = audit && !req.internal ? classify(req) : undefined;
    if (!audit || !kind) return this.route(req, tx);
    const room = audit.admit?.();
    if (room) await room;
    const note: AuditNote = { ...kind, resources: [], patients: [], owners: {} };
    req.audit = note;
    try {
      const out = await this.route(req, tx);
      if (!note.recorded) {
        if (!note.resolved && note.resources.length === 0 && out.status < 400 && (out.body || out.bodyJson) && READ_SHAPED.has(note.interaction)) {
          note.resources.push(...resultRefs(out, note));
          // Whose data it was, now: by the time the batch is written the resources may have changed.
          noteOwners(note, await ownersOfRefs(tx ?? this.opts.store, note.resources));
        }
        audit.later(factsOf(req, note, out.status));
      }
      return out;
    } catch (err) {
      if (!note.recorded) {
        // A refusal names what was asked for (and whose it is), so the patient sees attempts too.
        const asked = note.resources.length === 0 ? requestedRef(req) : undefined;
        if (asked) {
          note.resources.push(asked);
          noteOwners(note, await ownersOfRefs(tx ?? this.opts.store, [asked]).catch(() => ({})));
        }
        audit.later(factsOf(req, note, err instanceof FhirError ? err.status : 500));
      }
      throw err;
    }
  }

  private async route(req: FhirRequest, tx?: StoreTransaction): Promise<FhirResponse> {
    const segs = req.path.split('/').filter((s) => s.length > 0);
    const [first, second, third, fourth, fifth] = segs;
    const m = req.method;

    if (segs.length === 0) {
      if (m === 'POST') return this.bundle(req, tx);
      if (m === 'GET') throw notSupported('Search across all resource types is not supported; search a type, e.g. GET [base]/Observation?...');
      throw methodNotAllowed(m, '[base]');
    }
    if (first === 'metadata' && segs.length === 1) {
      if (m !== 'GET') throw methodNotAllowed(m, 'metadata');
      return { status: 200, body: buildCapabilityStatement(this.opts.baseUrl, this.opts.security, { instance: Object.entries(this.opts.operations?.instance ?? {}).map(([name, op]) => ({ name, types: op.types })), system: Object.keys(this.opts.operations?.system ?? {}) }) };
    }
    if (first?.startsWith('$') && segs.length === 1) {
      const op = this.opts.operations?.system?.[first];
      if (!op) throw notSupported(`Operation ${first} is not supported at the base`);
      if (m !== 'GET' && m !== 'POST') throw methodNotAllowed(m, first);
      await this.authorize(req, { interaction: 'operation', operation: first });
      return op(req);
    }
    if (first === '_history' && segs.length === 1) {
      if (m !== 'GET') throw methodNotAllowed(m, '_history');
      this.refuseConfinedHistory(await this.authorize(req, { interaction: 'history' }));
      return this.history(req, {}, tx);
    }
    if (!first || !isResourceType(first)) {
      throw new FhirError(404, 'not-supported', `Unknown resource type "${(first ?? '').slice(0, 80)}"`);
    }
    const type = first;
    if (READ_ONLY_TYPES.has(type) && isRestWrite(m, segs)) {
      throw new FhirError(405, 'not-supported', `${type} resources are written by the server only: create, update, patch and delete are refused for every client`);
    }
    if (segs.length === 1) {
      switch (m) {
        case 'GET': return this.search(req, type, tx);
        case 'POST': return this.create(req, type, tx);
        case 'PUT': return this.conditionalUpdate(req, type, tx);
        case 'DELETE': return this.conditionalDelete(req, type, tx);
        case 'PATCH': return this.conditionalPatch(req, type, tx);
      }
    }
    if (second === '_search' && segs.length === 2) {
      if (m !== 'POST' && m !== 'GET') throw methodNotAllowed(m, `${type}/_search`);
      return this.search(req, type, tx);
    }
    if (second === '_history' && segs.length === 2) {
      if (m !== 'GET') throw methodNotAllowed(m, `${type}/_history`);
      const d = await this.authorize(req, { interaction: 'history', resourceType: type });
      this.refuseConfinedHistory(d, type);
      const visible = visibleExpr(d);
      const access = visible !== undefined ? accessConditionFor(visible, type) : undefined;
      const out = await this.history(req, { resourceType: type, ...(access !== undefined ? { access } : {}) }, tx, d);
      await this.observed(req, d, entryRefs(out.body as Bundle));
      return out;
    }
    if (second === '$validate' && segs.length === 2) {
      if (m !== 'POST') throw methodNotAllowed(m, `${type}/$validate`);
      return this.validate(req, type);
    }
    if (!second) throw notFound(`No route for ${m} ${req.path}`);
    if (second.startsWith('$')) throw notSupported(`Operation ${second} is not supported on ${type}`);
    assertValidId(second);
    const id = second;
    if (segs.length === 2) {
      switch (m) {
        case 'GET': return this.read(req, type, id, tx);
        case 'PUT': return this.update(req, type, id, tx);
        case 'PATCH': return this.patch(req, type, id, tx);
        case 'DELETE': return this.delete(req, type, id, tx);
        default: throw methodNotAllowed(m, `${type}/[id]`);
      }
    }
    if (third === '_history') {
      if (m !== 'GET') throw methodNotAllowed(m, `${type}/[id]/_history`);
      if (segs.length === 3) {
        const d = await this.authorize(req, { interaction: 'history', resourceType: type, id });
        await this.assertVisible(d, tx, type, id);
        await this.observed(req, d, [`${type}/${id}`]);
        const out = await this.history(req, { resourceType: type, id }, tx, d);
        return d.patient !== undefined ? { ...out, body: bundleViewForPatient(out.body as Bundle, d.patient) } : out;
      }
      if (segs.length === 4 && fourth) return this.vread(req, type, id, fourth, tx);
      if (segs.length === 5 && fourth && fifth?.startsWith('$')) return this.instanceOperation(req, fifth, type, id, fourth, tx);
    }
    if (third?.startsWith('$') && third !== '$validate' && segs.length === 3) return this.instanceOperation(req, third, type, id, undefined, tx);
    if (third === '$validate' && segs.length === 3) {
      if (m !== 'POST') throw methodNotAllowed(m, `${type}/[id]/$validate`);
      return this.validate(req, type, id);
    }
    if (third && segs.length === 3 && type === 'Patient' && isResourceType(third)) {
      if (m !== 'GET') throw methodNotAllowed(m, 'Patient/[id]/[type]');
      return this.search(req, third, tx, { resourceType: 'Patient', id });
    }
    if (third && segs.length === 3 && isResourceType(third)) {
      throw notSupported(`Compartment searches are supported for the Patient compartment only, not ${type}`);
    }
    throw notFound(`No route for ${m} ${req.path.slice(0, 200)}`);
  }

  /** An operation on one resource (or one version): it needs read access to that resource. */
  private async instanceOperation(req: FhirRequest, name: string, type: string, id: string, vid: string | undefined, tx?: StoreTransaction): Promise<FhirResponse> {
    const op = this.opts.operations?.instance?.[name];
    if (!op || (op.types && !op.types.includes(type))) throw notSupported(`Operation ${name} is not supported on ${type}/[id]`);
    if (req.method !== 'GET' && req.method !== 'POST') throw methodNotAllowed(req.method, `${type}/[id]/${name}`);
    let decision: AccessDecision | undefined;
    if (op.checksOwnAccess !== true) {
      decision = await this.authorize(req, { interaction: vid ? 'vread' : 'read', resourceType: type, id });
      await this.assertVisible(decision, tx, type, id);
    }
    let version: number | undefined;
    if (vid !== undefined) {
      if (!/^[1-9]\d{0,15}$/.test(vid)) throw badRequest(`Invalid version id "${vid.slice(0, 40)}"`);
      version = Number(vid);
      if (decision && isConstrained(decision)) {
        const v = await (tx ?? this.opts.store).vread(type, id, version);
        if (v && !this.versionVisible(decision, v)) throw notFound(`${type}/${id} has no version ${vid}`);
      }
    }
    return op(req, { resourceType: type, id, version });
  }

  private async authorize(req: FhirRequest, request: AccessRequest): Promise<AccessDecision> {
    const d = (await this.opts.policy.authorize(req.principal, request)) ?? {};
    if (req.audit && d.patient !== undefined) req.audit.confinedTo = d.patient;
    return d;
  }

  /**
   * A confined principal sees another patient's resource exactly as it sees one that does not
   * exist; a resource outside the token's granular scopes is a 403.
   */
  private async assertVisible(d: AccessDecision, tx: StoreTransaction | undefined, type: string, id: string): Promise<void> {
    const reader = tx ?? this.opts.store;
    if (d.patient !== undefined && !(await isMember(reader, type, id, d.patient))) throw notFound(`${type}/${id} is not known`);
    if (d.queries && (await reader.read(type, id)) && !(await matchingScopeQueries(reader, type, [id], d.queries)).has(id)) throw outsideScopes(type, id);
    if (d.consent) {
      const access = accessConditionFor(d.consent.access, type);
      if ((await satisfying(reader, type, [id], access)).has(id)) return;
      // Withheld by consent: a 403 only where the principal may know the resource exists.
      const cur = await reader.read(type, id);
      if (cur && !cur.deleted && (await satisfying(reader, type, [id], accessConditionFor(d.consent.known, type))).has(id)) throw withheld(type, id);
      throw notFound(`${type}/${id} is not known`);
    }
  }

  /** After a write inside its transaction: the new version must still match the granular scopes (else the write rolls back). */
  private async assertStillInScope(d: AccessDecision, t: StoreTransaction, type: string, id: string): Promise<void> {
    if (d.queries && !(await matchingScopeQueries(t, type, [id], d.queries)).has(id)) throw outsideScopes(type, id);
    if (d.consent && !(await satisfying(t, type, [id], accessConditionFor(d.consent.access, type))).has(id)) {
      throw new FhirError(403, 'forbidden', `The patient's consent does not allow this ${type} to be written by this client or user`);
    }
  }

  /** New content of a confined principal must stay in its patient's compartment. */
  private assertWritable(d: AccessDecision, type: string, id: string | undefined, index: IndexRows): void {
    if (d.patient !== undefined && !contentInCompartment(type, id, index, d.patient)) {
      throw new FhirError(403, 'forbidden', `This ${type} would not be in the compartment of the patient this token is limited to`);
    }
  }

  private refuseConfinedHistory(d: AccessDecision, type?: string): void {
    if (d.patient !== undefined) throw new FhirError(403, 'forbidden', 'Type and system history are not available to patient-limited tokens; use the history of one resource');
    if (d.consent && type === undefined) throw new FhirError(403, 'forbidden', 'System history is not available to principals limited by patient consent; use the history of a type or of one resource');
  }

  /** Runs a write in `tx` or its own transaction; its AuditEvent is written in that same transaction. */
  private inTx(req: FhirRequest, tx: StoreTransaction | undefined, fn: (tx: StoreTransaction) => Promise<FhirResponse>): Promise<FhirResponse> {
    const run = async (t: StoreTransaction) => {
      const out = await fn(t);
      const note = req.audit;
      if (this.opts.audit && note && !note.recorded) {
        if (out.location) note.resources.push(refOf(out.location, this.opts.baseUrl));
        const unknown = note.resources.filter((r) => !note.ownersKnown?.has(r));
        if (unknown.length) noteOwners(note, await ownersOfRefs(t, unknown));
        await this.opts.audit.inTransaction(t, factsOf(req, note, out.status));
        note.recorded = true;
      }
      return out;
    };
    return tx ? run(tx) : this.opts.store.transaction(run);
  }

  /** An OperationOutcome with the advisories about `resource`, if there are any. */
  private advice(resource: Resource | undefined): OperationOutcome | undefined {
    const warnings = resource && this.opts.advise ? this.opts.advise(resource) : [];
    if (warnings.length === 0) return undefined;
    return { resourceType: 'OperationOutcome', issue: warnings.map((w) => ({ severity: 'warning', code: 'business-rule', diagnostics: w })) };
  }

  private written(v: StoredVersion, status: number): FhirResponse {
    const outcome = this.advice(v.resource);
    return {
      ...(outcome ? { outcome } : {}),
      status,
      body: v.resource,
      etag: etagOf(v),
      lastModified: httpDate(v.lastUpdated),
      location: `${this.opts.baseUrl}/${v.resourceType}/${v.id}/_history/${v.versionId}`,
    };
  }

  private found(v: StoredVersion, d: AccessDecision): FhirResponse {
    const body = d.patient !== undefined ? viewForPatient(v.resource, d.patient) : v.resource;
    return { status: 200, body, etag: etagOf(v), lastModified: httpDate(v.lastUpdated) };
  }

  /** Runs a search inside the write transaction (conditional operations) and returns the matches. */
  private async matches(reader: StoreReader, type: string, query: string, what: string, d: AccessDecision): Promise<StoredVersion[]> {
    // If-None-Exist may carry the type too ("Patient?identifier=..."), as Bundle entries often do.
    const criteria = query.startsWith(`${type}?`) ? query.slice(type.length + 1) : query.startsWith('?') ? query.slice(1) : query;
    const params = [...new URLSearchParams(criteria)];
    if (params.length === 0) throw badRequest(`${what} needs search criteria`);
    const parsed = parseSearch(type, params, { strict: true, defaultCount: 2, maxCount: 2 });
    parsed.query.count = 2;
    parsed.query.offset = 0;
    parsed.query.total = 'none';
    if (d.patient !== undefined) confineQuery(parsed.query, d.patient);
    if (d.queries) constrainQuery(parsed.query, d.queries);
    const visible = visibleExpr(d);
    if (visible !== undefined) applyAccess(parsed.query, visible);
    return (await reader.search(parsed.query)).matches;
  }

  private async create(req: FhirRequest, type: string, tx?: StoreTransaction): Promise<FhirResponse> {
    const d = await this.authorize(req, { interaction: 'create', resourceType: type });
    const resource = assertResourceShape(req.body, type);
    const index = await this.prepare(resource, tx, req);
    this.assertWritable(d, type, req.assignedId, index);
    return this.inTx(req, tx, async (t) => {
      if (req.headers.ifNoneExist) {
        const existing = await this.matches(t, type, req.headers.ifNoneExist, 'If-None-Exist', d);
        if (existing.length > 1) throw preconditionFailed(`If-None-Exist matched more than one ${type}: the criteria are not selective enough`);
        if (existing.length === 1) return { ...this.found(existing[0]!, d), location: this.written(existing[0]!, 200).location };
      }
      const id = req.assignedId ?? newResourceId();
      const v = await t.write({ resourceType: type, id, resource: { ...resource, id }, index, fresh: req.assignedId === undefined });
      noteWritten(req, v, index);
      await this.assertStillInScope(d, t, type, id);
      return this.written(v, 201);
    });
  }

  private async read(req: FhirRequest, type: string, id: string, tx?: StoreTransaction): Promise<FhirResponse> {
    const d = await this.authorize(req, { interaction: 'read', resourceType: type, id });
    await this.assertVisible(d, tx, type, id);
    // The AuditEvent names whose data this is: asked in the same statement as the read.
    const via = req.audit && type !== 'Patient' ? getPatientCompartmentParams(type) : [];
    const v = await (tx ?? this.opts.store).read(type, id, via.length ? { patientsVia: via } : undefined);
    if (!v) throw notFound(`${type}/${id} is not known`);
    if (v.deleted) throw deletedError(v);
    if (req.headers.ifNoneMatch && req.headers.ifNoneMatch.split(',').some((t) => t.trim() === '*' || safeETag(t) === v.versionId)) {
      return { status: 304, etag: etagOf(v), lastModified: httpDate(v.lastUpdated) };
    }
    if (req.headers.ifModifiedSince) {
      const since = Date.parse(req.headers.ifModifiedSince);
      if (!Number.isNaN(since) && Math.floor(Date.parse(v.lastUpdated) / 1000) * 1000 <= since) {
        return { status: 304, etag: etagOf(v), lastModified: httpDate(v.lastUpdated) };
      }
    }
    await this.observed(req, d, [`${type}/${id}`]);
    const out = this.found(v, d);
    if (req.audit) {
      const ref = `${type}/${id}`;
      const owners = type === 'Patient' ? [ref] : (v.patients ?? []).map((p) => `Patient/${p}`);
      req.audit.resources.push(ref);
      noteOwners(req.audit, owners.length ? { [ref]: owners } : {});
      req.audit.resolved = true;
    }
    return out;
  }

  private async vread(req: FhirRequest, type: string, id: string, vid: string, tx?: StoreTransaction): Promise<FhirResponse> {
    const d = await this.authorize(req, { interaction: 'vread', resourceType: type, id });
    await this.assertVisible(d, tx, type, id);
    if (!/^[1-9]\d{0,15}$/.test(vid)) throw badRequest(`Invalid version id "${vid.slice(0, 40)}"`);
    const v = await (tx ?? this.opts.store).vread(type, id, Number(vid));
    if (!v) {
      const cur = await (tx ?? this.opts.store).read(type, id);
      throw notFound(cur ? `${type}/${id} has no version ${vid}` : `${type}/${id} is not known`);
    }
    if (!this.versionVisible(d, v)) throw notFound(`${type}/${id} has no version ${vid}`);
    if (v.deleted) throw deletedError(v);
    await this.observed(req, d, [`${type}/${id}`]);
    return this.found(v, d);
  }

  private async update(req: FhirRequest, type: string, id: string, tx?: StoreTransaction): Promise<FhirResponse> {
    const d = await this.authorize(req, { interaction: 'update', resourceType: type, id });
    const resource = assertResourceShape(req.body, type);
    if (resource.id === undefined) throw badRequest('The resource in an update must have an id matching the URL', [`${type}.id`]);
    if (resource.id !== id) throw badRequest(`Resource id "${String(resource.id).slice(0, 80)}" does not match the URL id "${id}"`, [`${type}.id`]);
    const ifMatch = req.headers.ifMatch !== undefined ? parseETag(req.headers.ifMatch) : undefined;
    const index = await this.prepare(resource, tx, req);
    this.assertWritable(d, type, id, index);
    return this.inTx(req, tx, async (t) => {
      if (isConstrained(d) && (await t.read(type, id))) await this.assertVisible(d, t, type, id);
      const out = await this.writeUpdate(t, type, id, resource, ifMatch, index, req);
      await this.assertStillInScope(d, t, type, id);
      return out;
    });
  }

  /** Validates (400 with the issues) and extracts index rows; off-thread unless inside a transaction. */
  private async prepare(resource: Resource, tx: StoreTransaction | undefined, req?: FhirRequest): Promise<IndexRows> {
    if (tx && req?.preparedIndex) return req.preparedIndex;
    if (tx && req?.prevalidated) return this.opts.preparer.indexNow(resource);
    const p = tx ? this.opts.preparer.prepareNow(resource) : await this.opts.preparer.prepare(resource);
    if (p.issues.length > 0) throw FhirError.fromIssues(400, p.issues);
    return p.index!;
  }

  private async writeUpdate(t: StoreTransaction, type: string, id: string, resource: Resource, ifMatch: number | undefined, index?: IndexRows, req?: FhirRequest): Promise<FhirResponse> {
    const cur = await t.read(type, id);
    try {
      const v = await t.write({ resourceType: type, id, resource, ifMatch, index });
      if (index && req) noteWritten(req, v, index);
      return this.written(v, !cur || cur.deleted ? 201 : 200);
    } catch (err) {
      if (err instanceof VersionConflictError) {
        throw preconditionFailed(`Version conflict on ${type}/${id}: If-Match expected version ${err.expected}, the current version is ${err.actual ?? 'none (not found)'}`);
      }
      throw err;
    }
  }

  private async conditionalUpdate(req: FhirRequest, type: string, tx?: StoreTransaction): Promise<FhirResponse> {
    const d = await this.authorize(req, { interaction: 'update', resourceType: type });
    if (req.query.length === 0) throw methodNotAllowed('PUT', type + ' (an update needs an id or search criteria)');
    const resource = assertResourceShape(req.body, type);
    const ifMatch = req.headers.ifMatch !== undefined ? parseETag(req.headers.ifMatch) : undefined;
    const index = await this.prepare(resource, tx, req);
    return this.inTx(req, tx, async (t) => {
      const found = await this.matches(t, type, new URLSearchParams(req.query).toString(), 'Conditional update', d);
      if (found.length > 1) throw preconditionFailed(`Conditional update matched more than one ${type}`);
      if (found.length === 1) {
        const id = found[0]!.id;
        if (resource.id !== undefined && resource.id !== id) throw badRequest(`Resource id "${resource.id}" does not match the ${type}/${id} the criteria matched`, [`${type}.id`]);
        this.assertWritable(d, type, id, index);
        const out = await this.writeUpdate(t, type, id, { ...resource, id }, ifMatch, index, req);
        await this.assertStillInScope(d, t, type, id);
        return out;
      }
      const id = resource.id ?? newResourceId();
      assertValidId(id);
      this.assertWritable(d, type, id, index);
      // An id the criteria did not match may still be another patient's resource.
      if (isConstrained(d) && (await t.read(type, id))) await this.assertVisible(d, t, type, id);
      const out = await this.writeUpdate(t, type, id, { ...resource, id }, ifMatch, index, req);
      await this.assertStillInScope(d, t, type, id);
      return out;
    });
  }

  private async patch(req: FhirRequest, type: string, id: string, tx?: StoreTransaction): Promise<FhirResponse> {
    const d = await this.authorize(req, { interaction: 'patch', resourceType: type, id });
    const ops = assertJsonPatch(req);
    const ifMatch = req.headers.ifMatch !== undefined ? parseETag(req.headers.ifMatch) : undefined;
    return this.inTx(req, tx, async (t) => {
      await this.assertVisible(d, t, type, id);
      return this.applyPatch(t, type, id, ops, ifMatch, d);
    });
  }

  private async conditionalPatch(req: FhirRequest, type: string, tx?: StoreTransaction): Promise<FhirResponse> {
    const d = await this.authorize(req, { interaction: 'patch', resourceType: type });
    if (req.query.length === 0) throw methodNotAllowed('PATCH', type + ' (a patch needs an id or search criteria)');
    const ops = assertJsonPatch(req);
    const ifMatch = req.headers.ifMatch !== undefined ? parseETag(req.headers.ifMatch) : undefined;
    return this.inTx(req, tx, async (t) => {
      const found = await this.matches(t, type, new URLSearchParams(req.query).toString(), 'Conditional patch', d);
      if (found.length === 0) throw notFound(`Conditional patch matched no ${type}`);
      if (found.length > 1) throw preconditionFailed(`Conditional patch matched more than one ${type}`);
      return this.applyPatch(t, type, found[0]!.id, ops, ifMatch, d);
    });
  }

  private async applyPatch(t: StoreTransaction, type: string, id: string, ops: jsonpatch.Operation[], ifMatch: number | undefined, d: AccessDecision): Promise<FhirResponse> {
    const cur = await t.read(type, id);
    if (!cur) throw notFound(`${type}/${id} is not known`);
    if (cur.deleted) throw deletedError(cur);
    if (ifMatch !== undefined && ifMatch !== cur.versionId) {
      throw preconditionFailed(`Version conflict on ${type}/${id}: If-Match expected version ${ifMatch}, the current version is ${cur.versionId}`);
    }
    let patched: Resource;
    try {
      patched = jsonpatch.applyPatch(structuredClone(cur.resource!), ops, true, false).newDocument;
    } catch (err) {
      const e = err as { name?: string; message?: string };
      // A failed "test" op is a precondition that did not hold.
      if (e.name === 'TEST_OPERATION_FAILED') throw new FhirError(422, 'processing', `JSON Patch test failed: ${firstLine(e.message)}`);
      throw new FhirError(422, 'processing', `JSON Patch could not be applied: ${firstLine(e.message)}`);
    }
    if (patched.resourceType !== type || patched.id !== id) throw new FhirError(422, 'processing', 'JSON Patch may not change resourceType or id');
    // Patches add up: the result is held to the limits a body sent whole would be.
    const tooLarge = jsonLimitViolation(patched, this.opts.jsonLimits ?? DEFAULT_JSON_LIMITS, false);
    if (tooLarge) throw new FhirError(422, 'processing', `The patched ${type} would break a limit: ${tooLarge.message}`, [tooLarge.expression]);
    const issues = validationIssues(patched);
    if (issues.length > 0) throw FhirError.fromIssues(422, issues);
    const index = d.patient !== undefined ? this.opts.preparer.indexNow(patched) : undefined;
    if (index) this.assertWritable(d, type, id, index);
    // Pin the version we patched so a concurrent write in another connection can't be lost.
    const out = await this.writeUpdate(t, type, id, patched, cur.versionId, index);
    await this.assertStillInScope(d, t, type, id);
    return out;
  }

  private async delete(req: FhirRequest, type: string, id: string, tx?: StoreTransaction): Promise<FhirResponse> {
    const d = await this.authorize(req, { interaction: 'delete', resourceType: type, id });
    const ifMatch = req.headers.ifMatch !== undefined ? parseETag(req.headers.ifMatch) : undefined;
    return this.inTx(req, tx, async (t) => {
      await this.assertVisible(d, t, type, id);
      const cur = await t.read(type, id);
      if (!cur) throw notFound(`${type}/${id} is not known`);
      if (cur.deleted) return { status: 204, etag: etagOf(cur) };
      if (ifMatch !== undefined && ifMatch !== cur.versionId) {
        throw preconditionFailed(`Version conflict on ${type}/${id}: If-Match expected version ${ifMatch}, the current version is ${cur.versionId}`);
      }
      await this.noteDeleted(req, t, type, id);
      const v = await t.write({ resourceType: type, id, ifMatch: cur.versionId });
      return { status: 204, etag: etagOf(v), lastModified: httpDate(v.lastUpdated) };
    });
  }

  private async conditionalDelete(req: FhirRequest, type: string, tx?: StoreTransaction): Promise<FhirResponse> {
    const d = await this.authorize(req, { interaction: 'delete', resourceType: type });
    if (req.query.length === 0) throw methodNotAllowed('DELETE', type + ' (a delete needs an id or search criteria)');
    return this.inTx(req, tx, async (t) => {
      const found = await this.matches(t, type, new URLSearchParams(req.query).toString(), 'Conditional delete', d);
      if (found.length > 1) throw preconditionFailed(`Conditional delete matched more than one ${type}; this server deletes one resource at a time`);
      if (found.length === 0) return { status: 204, outcome: allOk(`No ${type} matched; nothing deleted`) };
      await this.noteDeleted(req, t, type, found[0]!.id);
      const v = await t.write({ resourceType: type, id: found[0]!.id, ifMatch: found[0]!.versionId });
      return { status: 204, etag: etagOf(v), lastModified: httpDate(v.lastUpdated) };
    });
  }

  /** Tells the decision what was read (break-the-glass records it); flags the AuditEvent when an emergency grant was used. */
  private async observed(req: FhirRequest, d: AccessDecision, refs: string[]): Promise<void> {
    if (!d.observe || refs.length === 0) return;
    if (await d.observe(refs) && req.audit) req.audit.breakGlass = true;
  }

  /** A deleted resource's patients, for its AuditEvent, while its index rows still say who they are. */
  private async noteDeleted(req: FhirRequest, t: StoreTransaction, type: string, id: string): Promise<void> {
    if (!req.audit) return;
    req.audit.resources.push(`${type}/${id}`);
    noteOwners(req.audit, await ownersOfRefs(t, [`${type}/${id}`]));
  }

  private async search(req: FhirRequest, type: string, tx: StoreTransaction | undefined, compartment?: { resourceType: string; id: string }): Promise<FhirResponse> {
    const d = await this.authorize(req, { interaction: 'search', resourceType: type });
    if (d.patient !== undefined && compartment && compartment.id !== d.patient) throw notFound(`Patient/${compartment.id} is not known`);
    const args: SearchArgs = {
      resourceType: type,
      query: req.query,
      strict: req.headers.handling === 'strict',
      ...(compartment ? { compartment } : {}),
      ...(d.patient !== undefined ? { confinedTo: d.patient } : {}),
      ...(d.queries ? { scopeQueries: d.queries } : {}),
      ...(d.consent ? { access: d.consent.access } : {}),
      ...(req.query.some(([k]) => k.startsWith('_include') || k.startsWith('_revinclude')) ? { readRule: this.readRule(req, d) } : {}),
      defaultCount: this.opts.search.defaultCount,
      maxCount: this.opts.search.maxCount,
      baseUrl: this.opts.baseUrl,
      cursorSecret: this.cursorSecret,
    };
    // Inside a transaction the search must see its writes: only the transaction's connection does.
    // The worker also names what the page holds and whose it is, for the AuditEvent: that work
    // (parsing the page, a compartment lookup) is then not on the event loop.
    if (req.audit) args.audit = { refs: d.observe !== undefined };
    const inWorker = tx ? undefined : this.opts.searcher?.(args);
    if (inWorker) {
      try {
        const reply = await inWorker;
        if (reply.audit && req.audit) {
          req.audit.patients.push(...reply.audit.patients);
          req.audit.resolved = true;
        }
        if (d.observe) await this.observed(req, d, reply.audit?.refs ?? entryRefs(JSON.parse(reply.bodyJson) as Bundle));
        return { status: 200, bodyJson: reply.bodyJson };
      } catch (err) {
        // A worker that died under the request is no reason to fail it: search here instead.
        if (err instanceof FhirError) throw err;
      }
    }
    const body = await searchBundle(tx ?? this.opts.store, args);
    await this.observed(req, d, entryRefs(body));
    return { status: 200, body };
  }

  /** What included resources may be: the token's scopes and the patient's consent. */
  private readRule(req: FhirRequest, d: AccessDecision): ReadRule | undefined {
    const scopes = this.opts.policy.readRule?.(req.principal);
    if (!d.consent) return scopes;
    return { ...(scopes ?? { types: '*', queries: {} }), access: d.consent.access };
  }

  private async history(req: FhirRequest, scope: { resourceType?: string; id?: string; access?: AccessCondition }, tx?: StoreTransaction, d?: AccessDecision): Promise<FhirResponse> {
    const reader = tx ?? this.opts.store;
    const q: HistoryQuery = { ...scope, count: this.opts.search.defaultCount, offset: 0 };
    for (const [k, v] of req.query) {
      if (k === '_count') q.count = Math.min(parseCount(v), this.opts.search.maxCount);
      else if (k === '_since') q.since = parseInstant(v, '_since');
      else if (k === '_offset') q.offset = parseCount(v, '_offset');
      else if (k === '_before') q.before = parseInstant(v, '_before');
      else if (k === '_format' || k === '_pretty') continue;
      else if (k === '_at' || k === '_list') throw notSupported(`History parameter ${k} is not supported`);
      else if (req.headers.handling === 'strict') throw badRequest(`Unknown history parameter "${k.slice(0, 60)}"`);
    }
    if (scope.id) {
      const cur = await reader.read(scope.resourceType!, scope.id);
      if (!cur) throw notFound(`${scope.resourceType}/${scope.id} is not known`);
    }
    // Pin the first page's instant into the paging links so new writes don't shift later pages.
    q.before ??= new Date().toISOString();
    const result: HistoryPage = d && isConstrained(d) ? await this.visibleHistory(reader, q, d) : await reader.history(q);
    const path = scope.id ? `${scope.resourceType}/${scope.id}/_history` : scope.resourceType ? `${scope.resourceType}/_history` : '_history';
    const link = (offset: number) => {
      const p = new URLSearchParams();
      if (q.since) p.set('_since', q.since);
      p.set('_before', q.before!);
      p.set('_count', String(q.count));
      p.set('_offset', String(offset));
      return `${this.opts.baseUrl}/${path}?${p.toString()}`;
    };
    const links: Bundle['link'] = [{ relation: 'self', url: link(q.offset) }];
    const more = result.total !== undefined ? q.offset + result.versions.length < result.total : result.hasMore === true;
    if (more) links.push({ relation: 'next', url: link(q.offset + q.count) });
    if (q.offset > 0) links.push({ relation: 'previous', url: link(Math.max(0, q.offset - q.count)) });
    const entry: BundleEntry[] = result.versions.map((v) => historyEntry(this.opts.baseUrl, v));
    return { status: 200, body: { resourceType: 'Bundle', type: 'history', ...(result.total !== undefined ? { total: result.total } : {}), link: links, ...(entry.length ? { entry } : {}) } as Bundle };
  }

  /**
   * History as a constrained principal may see it: each version judged on its own content, so
   * the page is gathered from the store's versions in order, and offsets and the total count
   * visible versions only (the total when the whole history was read; else none is given).
   */
  private async visibleHistory(reader: StoreReader, q: HistoryQuery, d: AccessDecision): Promise<HistoryPage> {
    const want = q.offset + q.count + 1;
    const visible: StoredVersion[] = [];
    let raw = 0;
    for (;;) {
      // Read (and decrypt) about as many as the page still needs, not a whole scan step at once.
      const step = Math.min(HISTORY_SCAN_PAGE, Math.max(want - visible.length, 20));
      const page = await reader.history({ ...q, offset: raw, count: step });
      for (const v of page.versions) if (this.versionVisible(d, v)) visible.push(v);
      raw += page.versions.length;
      if (page.versions.length < step || raw >= page.total) {
        return { versions: visible.slice(q.offset, q.offset + q.count), total: visible.length };
      }
      if (visible.length >= want) return { versions: visible.slice(q.offset, q.offset + q.count), hasMore: true };
      if (raw >= HISTORY_SCAN_MAX) {
        throw new FhirError(400, 'too-costly', `This history is too long to page this deep for a principal whose access depends on each version's content (more than ${HISTORY_SCAN_MAX} versions read); narrow it with _since or _before`);
      }
    }
  }

  /** A version as the decision sees it on its own content; delete markers carry none and go with their resource. */
  private versionVisible(d: AccessDecision, v: StoredVersion): boolean {
    if (!isConstrained(d)) return true;
    if (v.deleted || !v.resource) return d.patient === undefined && d.consent === undefined;
    return versionWithin(d, v, this.opts.preparer.indexNow(v.resource));
  }

  private async validate(req: FhirRequest, type: string, id?: string): Promise<FhirResponse> {
    await this.authorize(req, { interaction: 'operation', resourceType: type, operation: '$validate' });
    let body = req.body as Resource | undefined;
    if (body?.resourceType === 'Parameters') {
      const p = (body as Parameters).parameter?.find((x) => x.name === 'resource');
      if (!p?.resource) throw badRequest('$validate Parameters must carry the resource in a "resource" parameter');
      body = p.resource;
    }
    const resource = assertResourceShape(body, type);
    if (id !== undefined && resource.id !== id) throw badRequest(`Resource id "${resource.id ?? ''}" does not match the URL id "${id}"`, [`${type}.id`]);
    const issues = validationIssues(resource);
    if (issues.length > 0) throw FhirError.fromIssues(400, issues);
    return { status: 200, body: this.advice(resource) ?? allOk(`${type} is valid`) };
  }

  private async bundle(req: FhirRequest, tx?: StoreTransaction): Promise<FhirResponse> {
    if (tx) throw badRequest('A Bundle cannot be nested inside a transaction');
    const body = await processBundle(req.body, {
      // Bundle entries need the response as an object.
      handle: async (r, t) => {
        const resp = await this.handle(req.address !== undefined ? { ...r, address: req.address } : r, t);
        return resp.bodyJson === undefined ? resp : { ...resp, body: JSON.parse(resp.bodyJson) as Resource, bodyJson: undefined };
      },
      transaction: (fn) => this.opts.store.transaction(fn),
      baseUrl: this.opts.baseUrl,
      principal: req.principal,
      newId: () => newResourceId(),
      prefer: req.headers.preferReturn,
      validate: (r) => this.opts.preparer.validate(r as Resource),
      prepare: (r) => this.opts.preparer.prepare(r as Resource),
    });
    return { status: 200, body };
  }
}

/** The owners of a version just written, from its index rows: no query for its AuditEvent. */
function noteWritten(req: FhirRequest, v: StoredVersion, index: IndexRows): void {
  if (!req.audit) return;
  const ref = `${v.resourceType}/${v.id}/_history/${v.versionId}`;
  const owners = ownersFromIndex(v.resourceType, v.id, index);
  noteOwners(req.audit, owners.length ? { [ref]: owners } : {});
  (req.audit.ownersKnown ??= new Set()).add(ref);
}

function noteOwners(note: AuditNote, owners: Record<string, string[]>): void {
  Object.assign(note.owners, owners);
  for (const list of Object.values(owners)) note.patients.push(...list);
}

function factsOf(req: FhirRequest, note: AuditNote, status: number): AuditFacts {
  // BALP query events name the query and the patients whose data it returned, not each resource
  // of the page (which would make a search's AuditEvent many times the size and index rows of a read's).
  const isSearch = note.interaction === 'search-type' || note.interaction === 'search-system';
  const resources = isSearch ? [] : unique(note.resources);
  // A principal confined to one patient saw only that patient's part of what it read (also of
  // AuditEvents that concern others too), so its interactions concern that patient alone.
  const self = note.confinedTo !== undefined ? `Patient/${note.confinedTo}` : undefined;
  const mine = (list: string[]) => (self === undefined ? list : list.filter((p) => p === self));
  // Built by assignment: this runs on the event loop for every request.
  const facts: AuditFacts = { interaction: note.interaction, status, principal: req.principal, recorded: new Date(), resources, patients: mine(unique(note.patients)) };
  let owners: Record<string, string[]> | undefined;
  for (const r of resources) {
    const list = note.owners[r] ? mine(note.owners[r]!) : [];
    if (list.length) (owners ??= {})[r] = list;
  }
  if (owners) facts.owners = owners;
  if (note.operation) facts.operation = note.operation;
  if (req.address) facts.address = req.address;
  if (note.resourceType) facts.resourceType = note.resourceType;
  if (isSearch) facts.query = auditQuery(req);
  if (note.breakGlass) facts.breakGlass = true;
  return facts;
}

/** The distinct values, in first-seen order (a copy). */
function unique(list: string[]): string[] {
  return list.length < 2 ? [...list] : [...new Set(list)];
}

/** ".../fhir/Observation/1/_history/2" -> "Observation/1/_history/2". */
function refOf(location: string, baseUrl: string): string {
  return location.startsWith(`${baseUrl}/`) ? location.slice(baseUrl.length + 1) : location;
}

/** The resources a read, search or history answered with. */
function resultRefs(out: FhirResponse, note: AuditNote): string[] {
  const body = (out.body ?? JSON.parse(out.bodyJson!)) as Resource;
  if (body.resourceType === 'Bundle') return entryRefs(body as Bundle);
  if (note.interaction === 'read' || note.interaction === 'vread') return body.id ? [`${body.resourceType}/${body.id}${note.interaction === 'vread' ? `/_history/${body.meta?.versionId ?? ''}` : ''}`] : [];
  return [];
}

/** The resource (or version) a request names in its path: "Type/id" or "Type/id/_history/n". */
function requestedRef(req: FhirRequest): string | undefined {
  const [type, id, third, vid] = req.path.split('/').filter((x) => x.length > 0);
  if (!type || !id || !isResourceType(type) || !/^[A-Za-z0-9\-.]{1,64}$/.test(id)) return undefined;
  return third === '_history' && vid && /^[1-9]\d{0,15}$/.test(vid) ? `${type}/${id}/_history/${vid}` : `${type}/${id}`;
}

function historyEntry(baseUrl: string, v: StoredVersion): BundleEntry {
  const url = `${v.resourceType}/${v.id}`;
  const entry: BundleEntry = { fullUrl: `${baseUrl}/${url}` };
  if (v.deleted) {
    entry.request = { method: 'DELETE', url };
    entry.response = { status: '204 No Content', etag: etagOf(v), lastModified: v.lastUpdated };
  } else {
    entry.resource = v.resource;
    entry.request = v.versionId === 1 ? { method: 'POST', url: v.resourceType } : { method: 'PUT', url };
    entry.response = { status: v.versionId === 1 ? '201 Created' : '200 OK', etag: etagOf(v), lastModified: v.lastUpdated };
  }
  return entry;
}

/** A page of history: the total when it is known, else whether more follows. */
interface HistoryPage { versions: StoredVersion[]; total?: number; hasMore?: boolean }

/** Versions read per step while gathering a constrained principal's history page, and at most in all. */
const HISTORY_SCAN_PAGE = 200;
const HISTORY_SCAN_MAX = 20_000;

/** Types only the server writes (the audit trail): read-only through the REST API. */
const READ_ONLY_TYPES: ReadonlySet<string> = new Set(['AuditEvent']);

/** A create, update, patch or delete of [type] or [type]/[id] (not _search, $operations or history). */
function isRestWrite(method: string, segs: string[]): boolean {
  if (segs.length === 1) return method === 'POST' || method === 'PUT' || method === 'PATCH' || method === 'DELETE';
  if (segs.length === 2 && !segs[1]!.startsWith('_') && !segs[1]!.startsWith('$')) return method === 'PUT' || method === 'PATCH' || method === 'DELETE';
  return false;
}

/** Whether the decision limits what the principal may touch (otherwise no visibility check is needed). */
function isConstrained(d: AccessDecision): boolean {
  return d.patient !== undefined || d.queries !== undefined || d.consent !== undefined;
}

function withheld(type: string, id: string): FhirError {
  return new FhirError(403, 'forbidden', `${type}/${id} is withheld by the patient's consent`);
}

function outsideScopes(type: string, id: string): FhirError {
  return new FhirError(403, 'forbidden', `${type}/${id} is outside what the access token's scopes allow`);
}

function deletedError(v: StoredVersion): FhirError {
  return gone(`${v.resourceType}/${v.id} was deleted (version ${v.versionId}, ${v.lastUpdated})`);
}

function methodNotAllowed(method: string, what: string): FhirError {
  return new FhirError(405, 'not-supported', `${method} is not allowed on ${what}`);
}

function safeETag(tag: string): number | undefined {
  try { return parseETag(tag); } catch { return undefined; }
}

function firstLine(s: string | undefined): string {
  return (s ?? 'invalid patch').split('\n')[0]!.slice(0, 300);
}

function parseCount(v: string, name = '_count'): number {
  if (!/^\d{1,9}$/.test(v)) throw badRequest(`${name} must be a non-negative integer, got "${v.slice(0, 40)}"`);
  return Number(v);
}

function parseInstant(v: string, name: string): string {
  if (!/^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/.test(v) || Number.isNaN(Date.parse(v))) {
    throw badRequest(`${name} must be a FHIR instant (e.g. 2024-01-31T12:00:00Z), got "${v.slice(0, 60)}"`);
  }
  return new Date(Date.parse(v)).toISOString();
}

function assertJsonPatch(req: FhirRequest): jsonpatch.Operation[] {
  const ct = req.headers.contentType;
  if (ct !== undefined && ct !== 'application/json-patch+json') {
    throw new FhirError(415, 'not-supported', `PATCH needs Content-Type application/json-patch+json (JSON Patch); got ${ct}. FHIRPath Patch and XML Patch are not supported`);
  }
  const ops = req.body;
  if (!Array.isArray(ops) || ops.length === 0) throw badRequest('A JSON Patch body is a non-empty array of operations');
  const err = jsonpatch.validate(ops as jsonpatch.Operation[]);
  if (err) throw badRequest(`Invalid JSON Patch operation ${err.index ?? ''}: ${firstLine(err.message)}`);
  return ops as jsonpatch.Operation[];
}
