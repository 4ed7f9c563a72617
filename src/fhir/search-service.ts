import type { Bundle } from '@medplum/fhirtypes';
import type { SearchFilter, SearchQuery, StoredVersion, StoreReader } from '../store/index.js';
import { applyAccess, confinementExpr, confineQuery, constrainQuery, isCompartmentType, isMember, type ReadRule, type ScopeQueries } from './access-constraints.js';
import type { AccessExpr } from './access-expr.js';
import { entryRefs, ownersOfRefs } from './audit-note.js';
import { bundleViewForPatient } from './audit-view.js';
import { getPatientCompartmentParams, isResourceType } from './definitions.js';
import { badRequest, FhirError, notSupported } from './outcome.js';
import { cursorCodec, searchIdentity } from './search/cursor.js';
import { runSearch, type SearchContext, type SearchPaging } from './search/execute.js';
import { parseSearch, type ParsedSearch } from './search/parse.js';
import { assertValidId } from './validate.js';

/** Everything a search needs, as plain data (it may run in a worker thread). */
export interface SearchArgs {
  resourceType: string;
  query: Array<[string, string]>;
  strict: boolean;
  compartment?: { resourceType: string; id: string };
  /** A patient-limited principal: matches and includes stay in this patient's compartment. */
  confinedTo?: string;
  /** Granular scopes: matches must satisfy one of these queries. */
  scopeQueries?: ScopeQueries;
  /** Patient consent: what of patient data the principal may see. */
  access?: AccessExpr;
  /** What included resources may be (types and their scope queries); undefined = anything. */
  readRule?: ReadRule;
  defaultCount: number;
  maxCount: number;
  baseUrl: string;
  /** Key of the paging cursors' HMAC (base64url), the same in every thread of one server. */
  cursorSecret: string;
  /**
   * Also name the patients whose data the page holds (for the AuditEvent), and with `refs` the
   * page's resources (for break-the-glass, which must see what was read).
   */
  audit?: { refs: boolean };
}

/** A search as a worker answers it: the Bundle as JSON (cheap to pass between threads) and, when asked, what it holds. */
export interface SearchReply {
  bodyJson: string;
  audit?: { patients: string[]; refs?: string[] };
}

export async function searchReply(reader: StoreReader, a: SearchArgs): Promise<SearchReply> {
  if (!a.audit) return { bodyJson: JSON.stringify(await searchBundle(reader, a)) };
  let page: StoredVersion[] = [];
  const bundle = await searchBundle(reader, a, (matches, included) => { page = [...matches, ...included]; });
  // A search's AuditEvent names its patients, not each resource of the page: only they cross back.
  // The matches come with theirs (SearchQuery.patientsVia); included resources are looked up.
  const patients = new Set<string>();
  const unknown: string[] = [];
  for (const v of page) {
    if (v.resourceType === 'Patient') patients.add(`Patient/${v.id}`);
    else if (v.patients) for (const p of v.patients) patients.add(`Patient/${p}`);
    else unknown.push(`${v.resourceType}/${v.id}`);
  }
  if (unknown.length) for (const list of Object.values(await ownersOfRefs(reader, unknown))) for (const p of list) patients.add(p);
  return { bodyJson: JSON.stringify(bundle), audit: { patients: [...patients], ...(a.audit.refs ? { refs: entryRefs(bundle) } : {}) } };
}

/** The search's paging: where a `_cursor` says the page starts (SearchQuery.after), and how to make the next one. */
function pagingOf(parsed: ParsedSearch, a: SearchArgs, selfPath: string): SearchPaging {
  const codec = cursorCodec(Buffer.from(a.cursorSecret, 'base64url'));
  const identity = searchIdentity(selfPath, a.query);
  if (parsed.cursor === undefined) return { codec, identity, offset: parsed.query.offset };
  if (a.query.some(([k]) => k === '_offset')) throw badRequest('Give _cursor or _offset, not both');
  const at = codec.open(identity, parsed.cursor);
  parsed.query.after = { keys: at.keys, pk: at.pk };
  parsed.query.offset = 0;
  return { codec, identity, offset: at.offset, cursor: parsed.cursor };
}

/** Bounds the SQL one search compiles to (SQLite allows 32,766 parameters per statement). */
const MAX_SEARCH_VALUES = 1000;

/** Parses, plans and runs a search, returning the searchset Bundle (`onPage`: see SearchContext.onPage; the matches then carry their patients). */
export async function searchBundle(reader: StoreReader, a: SearchArgs, onPage?: SearchContext['onPage']): Promise<Bundle> {
  const parsed = parseSearch(a.resourceType, a.query, {
    strict: a.strict,
    defaultCount: a.defaultCount,
    maxCount: a.maxCount,
    // Counting every match costs as much as the search; pages report a total when it is free.
    defaultTotal: 'none',
  });
  const valueCount = parsed.query.filters.reduce((n, f) => n + f.values.length + (f.chain?.filter.values.length ?? 0), 0);
  if (valueCount > MAX_SEARCH_VALUES) throw new FhirError(400, 'too-costly', `A search may have at most ${MAX_SEARCH_VALUES} values in all; this one has ${valueCount}`);
  const c = a.compartment;
  if (c) {
    assertValidId(c.id);
    const params = getPatientCompartmentParams(a.resourceType);
    if (a.resourceType === 'Patient') parsed.query.ids = [c.id];
    else if (params.length === 0) throw notSupported(`${a.resourceType} is not in the Patient compartment`);
    else parsed.query.compartment = { ...c, params };
  }
  if (a.confinedTo !== undefined) {
    if (a.resourceType === 'AuditEvent') {
      assertOwnTrail(parsed.query.filters, a.confinedTo);
      await keepOwnEntities(reader, parsed.query, a.confinedTo);
    }
    confineQuery(parsed.query, a.confinedTo);
  }
  if (a.scopeQueries) constrainQuery(parsed.query, a.scopeQueries);
  // The searched type and every chain target see only what a direct read would.
  const visible = searchVisibility(a);
  if (visible !== undefined) applyAccess(parsed.query, visible);
  if (onPage && a.resourceType !== 'Patient') {
    const via = getPatientCompartmentParams(a.resourceType);
    if (via.length) parsed.query.patientsVia = via;
  }
  const selfPath = c ? `${c.resourceType}/${c.id}/${a.resourceType}` : a.resourceType;
  const paging = pagingOf(parsed, a, selfPath);
  const readRule = a.readRule && visible !== undefined ? { ...a.readRule, access: visible } : a.readRule;
  const bundle = await runSearch(reader, parsed, { baseUrl: a.baseUrl, selfPath, query: a.query, confinedTo: a.confinedTo, readRule, paging, ...(onPage ? { onPage } : {}) });
  return a.confinedTo !== undefined ? bundleViewForPatient(bundle, a.confinedTo) : bundle;
}

/** Confinement to a patient and the patient's consent, as one expression (undefined = neither). */
function searchVisibility(a: SearchArgs): AccessExpr | undefined {
  if (a.confinedTo === undefined) return a.access;
  const confined = confinementExpr(a.confinedTo);
  return a.access === undefined ? confined : { and: [confined, a.access] };
}

/**
 * A patient searching their trail by entity must not learn whether another patient's resource
 * exists (an event of several patients names them all): entities the patient cannot read match
 * nothing, exactly as ids that do not exist.
 */
async function keepOwnEntities(reader: StoreReader, query: SearchQuery, patientId: string): Promise<void> {
  for (const f of query.filters) {
    if (f.param !== 'entity' || f.type !== 'reference' || f.chain || f.modifier !== undefined) continue;
    const kept: typeof f.values = [];
    for (const v of f.values) {
      const parts = v.value.split('/');
      const at = parts.length >= 4 && parts[parts.length - 2] === '_history' ? parts.length - 4 : parts.length - 2;
      const [type, id] = [parts[at], parts[at + 1]];
      if (at < 0 || !type || !id || !isResourceType(type) || !isCompartmentType(type) || (await isMember(reader, type, id, patientId))) kept.push(v);
    }
    // '#' is in no id: a value that matches nothing.
    if (kept.length < f.values.length) f.values = kept.length ? kept : [{ prefix: 'eq', value: 'Patient/#' }];
  }
}

/**
 * An AuditEvent can concern several patients (a search that touched them all); a patient may
 * search their trail, but not probe which of their events also concern someone else.
 */
function assertOwnTrail(filters: SearchFilter[], patientId: string): void {
  const refuse = (why: string) => { throw new FhirError(403, 'forbidden', `A patient's audit trail can be searched for that patient only${why}`); };
  for (const f of filters) {
    if (f.type !== 'reference' || f.chain || f.modifier === 'identifier' || f.modifier === 'missing') continue;
    for (const { value } of f.values) {
      const parts = value.split('/');
      if (parts.length === 1) {
        if (value !== patientId) refuse('; name other resources as Type/id');
        continue;
      }
      const [type, id] = parts.slice(parts[parts.length - 2] === '_history' ? -4 : -2);
      if (type === 'Patient' && id !== patientId) refuse('');
    }
  }
}
