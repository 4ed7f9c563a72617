import type { AccessCondition, IndexRows, SearchQuery, StoredVersion, StoreReader } from '../store/index.js';
import { accessConditionFor, type AccessExpr } from './access-expr.js';
import { rowsSatisfy } from './access-eval.js';
import type { AccessDecision } from './principal.js';
import { getPatientCompartmentParams } from './definitions.js';
import { FhirError } from './outcome.js';
import { parseSearch } from './search/parse.js';

/**
 * Patient-compartment confinement (SMART patient/ scopes, patient users): membership is
 * decided by the store's index of the current version, so it is exactly what a
 * `Patient/[id]/[type]` search would return.
 */

/** Types outside the Patient compartment (Practitioner, Organization, Medication, ...) are shared. */
export function isCompartmentType(type: string): boolean {
  return type === 'Patient' || getPatientCompartmentParams(type).length > 0;
}

/** Restricts a search query to the patient's compartment. */
export function confineQuery(query: SearchQuery, patient: string): void {
  if (query.resourceType === 'Patient') {
    query.ids = query.ids ? query.ids.filter((id) => id === patient) : [patient];
    return;
  }
  const params = getPatientCompartmentParams(query.resourceType);
  if (params.length > 0) query.compartment = { resourceType: 'Patient', id: patient, params };
}

/**
 * What a principal confined to one patient may see of patient data: resources in that patient's
 * compartment and in no other patient's (a resource of several patients needs every one's say).
 */
export function confinementExpr(patient: string): AccessExpr {
  return { and: [{ patients: [patient] }, { not: { otherPatients: [patient] } }] };
}

/** The "Type/id" of those current versions that the patient may see (shared types always). */
export async function membersOf(reader: StoreReader, refs: Array<{ resourceType: string; id: string }>, patient: string): Promise<Set<string>> {
  const out = new Set<string>();
  const byType = new Map<string, string[]>();
  for (const r of refs) byType.set(r.resourceType, [...(byType.get(r.resourceType) ?? []), r.id]);
  for (const [type, ids] of byType) {
    for (const id of await satisfying(reader, type, ids, accessConditionFor(confinementExpr(patient), type))) out.add(`${type}/${id}`);
  }
  return out;
}

export async function isMember(reader: StoreReader, resourceType: string, id: string, patient: string): Promise<boolean> {
  return (await membersOf(reader, [{ resourceType, id }], patient)).has(`${resourceType}/${id}`);
}

export async function keepMembers(reader: StoreReader, versions: StoredVersion[], patient: string): Promise<StoredVersion[]> {
  if (versions.length === 0) return versions;
  const members = await membersOf(reader, versions, patient);
  return versions.filter((v) => members.has(`${v.resourceType}/${v.id}`));
}

/**
 * Whether new content (with its index rows) may be written by a principal confined to `patient`:
 * it must lie in that patient's compartment only (every patient reference of the compartment
 * definition names them). Shared types (Practitioner, Organization, ...) are outside it.
 */
export function contentInCompartment(resourceType: string, id: string | undefined, index: IndexRows, patient: string): boolean {
  if (!isCompartmentType(resourceType)) return false;
  if (resourceType === 'Patient') return id === patient;
  const params = getPatientCompartmentParams(resourceType);
  const refs = index.reference.filter((r) => r.targetType === 'Patient' && params.includes(r.param));
  return refs.length > 0 && refs.every((r) => r.targetId === patient);
}

/**
 * Granular scopes (SMART v2, e.g. patient/Observation.rs?category=vital-signs): a resource is
 * within them when it matches at least one scope's query (each query an AND of parameters).
 */
export type ScopeQueries = ReadonlyArray<ReadonlyArray<readonly [string, string]>>;

function queryFor(resourceType: string, group: ReadonlyArray<readonly [string, string]>): SearchQuery {
  try {
    return parseSearch(resourceType, group.map(([k, v]) => [k, v]), { strict: true, defaultCount: 1, maxCount: 1 }).query;
  } catch (err) {
    const why = err instanceof FhirError ? err.message : String(err);
    throw new FhirError(403, 'forbidden', `The token's scope query ${group.map(([k, v]) => `${k}=${v}`).join('&')} cannot be applied to ${resourceType} (${why}), so it grants nothing`);
  }
}

/** Adds the scope queries to a search as filters; several queries must be one parameter OR-ed. */
export function constrainQuery(query: SearchQuery, groups: ScopeQueries): void {
  const parsed = groups.map((g) => queryFor(query.resourceType, g).filters);
  if (parsed.length === 1) {
    query.filters.push(...parsed[0]!);
    return;
  }
  const first = parsed[0]![0];
  const mergeable = first && !first.chain && parsed.every((f) => f.length === 1 && f[0]!.param === first.param && f[0]!.modifier === first.modifier && !f[0]!.chain);
  if (!mergeable) {
    throw new FhirError(403, 'forbidden', `The token has several scope queries for ${query.resourceType} on different parameters; this server can only combine queries on one parameter`);
  }
  query.filters.push({ ...first, values: parsed.flatMap((f) => f[0]!.values) });
}

/** The ids (of one type) among `ids` whose current version matches at least one scope query. */
export async function matchingScopeQueries(reader: StoreReader, resourceType: string, ids: string[], groups: ScopeQueries): Promise<Set<string>> {
  const out = new Set<string>();
  for (const g of groups) {
    const query = queryFor(resourceType, g);
    Object.assign(query, { ids, count: ids.length, offset: 0, total: 'none', sort: [] });
    for (const v of (await reader.search(query)).matches) out.add(v.id);
  }
  return out;
}

/** What a principal may read, for filtering included resources: types, and per type its scope queries. */
export interface ReadRule {
  /** '*' = every type (subject to `queries`), else the readable types. */
  types: '*' | string[];
  /** Types readable only through granular scopes: the queries their resources must match. */
  queries: Record<string, ScopeQueries>;
  /** Patient consent: what of patient data may be seen. */
  access?: AccessExpr;
}

export async function keepReadable(reader: StoreReader, versions: StoredVersion[], rule: ReadRule): Promise<StoredVersion[]> {
  const byType = new Map<string, StoredVersion[]>();
  for (const v of versions) {
    if (rule.types !== '*' && !rule.types.includes(v.resourceType)) continue;
    const list = byType.get(v.resourceType) ?? [];
    list.push(v);
    byType.set(v.resourceType, list);
  }
  const keep = new Set<StoredVersion>();
  for (const [type, list] of byType) {
    const groups = rule.queries[type];
    if (!groups) {
      list.forEach((v) => keep.add(v));
      continue;
    }
    const ok = await matchingScopeQueries(reader, type, list.map((v) => v.id), groups);
    for (const v of list) if (ok.has(v.id)) keep.add(v);
  }
  let kept = versions.filter((v) => keep.has(v));
  if (rule.access !== undefined) {
    const access = rule.access;
    const byType2 = new Map<string, StoredVersion[]>();
    for (const v of kept) byType2.set(v.resourceType, [...(byType2.get(v.resourceType) ?? []), v]);
    const allowed = new Set<StoredVersion>();
    for (const [type, list] of byType2) {
      const ok = await satisfying(reader, type, list.map((v) => v.id), accessConditionFor(access, type));
      for (const v of list) if (ok.has(v.id)) allowed.add(v);
    }
    kept = kept.filter((v) => allowed.has(v));
  }
  return kept;
}

/** The ids (of one type) among `ids` whose current version satisfies the condition (undefined = no condition). */
export async function satisfying(reader: StoreReader, resourceType: string, ids: string[], condition: AccessCondition | undefined): Promise<Set<string>> {
  if (condition === undefined || condition === true) return new Set(ids);
  if (condition === false || ids.length === 0) return new Set();
  const query: SearchQuery = { resourceType, filters: [], sort: [], count: ids.length, offset: 0, total: 'none', ids, access: condition };
  return new Set((await reader.search(query)).matches.map((v) => v.id));
}

/** Puts the principal's access into a parsed query: its own type, and the targets of its chains. */
export function applyAccess(query: SearchQuery, access: AccessExpr): void {
  const own = accessConditionFor(access, query.resourceType);
  if (own !== undefined) query.access = own;
  for (const f of query.filters) {
    if (f.chain) f.chain.access = Object.fromEntries(f.chain.targetTypes.map((t) => [t, accessConditionFor(access, t) ?? true]));
  }
}

/** Everything that limits what the principal may see of patient data, as one expression (undefined = nothing). */
export function visibleExpr(d: AccessDecision): AccessExpr | undefined {
  const parts: AccessExpr[] = [];
  if (d.patient !== undefined) parts.push(confinementExpr(d.patient));
  if (d.consent) parts.push(d.consent.access);
  return parts.length === 0 ? undefined : parts.length === 1 ? parts[0] : { and: parts };
}

/**
 * Whether one stored version lies within the decision, judged on its own content (its patients,
 * labels, codes, dates, and the token's scope queries): what old versions are held to, since
 * the store's index describes current versions only. What cannot be decided is not within.
 */
export function versionWithin(d: AccessDecision, v: StoredVersion, index: IndexRows): boolean {
  const expr = visibleExpr(d);
  const condition = expr === undefined ? undefined : accessConditionFor(expr, v.resourceType);
  if (condition !== undefined && rowsSatisfy(condition, v.resourceType, v.id, index) !== true) return false;
  if (!d.queries) return true;
  return d.queries.some((g) => {
    const filters = queryFor(v.resourceType, g).filters;
    return rowsSatisfy({ and: filters.map((filter) => ({ filter })) }, v.resourceType, v.id, index) === true;
  });
}
