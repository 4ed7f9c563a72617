/**
 * SMART App Launch 2.x scope grammar ("Scopes and Launch Context"): parsing, formatting and the
 * set operations used to negotiate and enforce resource scopes. Pure functions, no I/O.
 *
 *   scope    = context "/" type "." perms [ "?" query ]
 *   context  = "patient" | "user" | "system"
 *   type     = FHIR resource type name ([A-Z][A-Za-z]+) | "*"
 *   perms    = v1: "read" | "write" | "*"          (read = rs, write = cud, * = cruds)
 *            | v2: non-empty in-order subsequence of "cruds"
 *   query    = pair *( "&" pair ), pair = name "=" value   (v2 only; percent-decoded)
 *
 * Query pairs are conjunctive constraints in FHIR search syntax: a scope with more pairs allows less.
 */

export type ScopeContext = 'patient' | 'user' | 'system';
export type Permission = 'c' | 'r' | 'u' | 'd' | 's';

export interface ResourceScope {
  /** The scope text as given. */
  raw: string;
  context: ScopeContext;
  /** A resource type name or '*'. */
  resourceType: string;
  permissions: ReadonlySet<Permission>;
  version: 1 | 2;
  /** Decoded [name, value] pairs in the order given; [] when none. */
  query: ReadonlyArray<readonly [string, string]>;
}

export const NON_RESOURCE_SCOPES: ReadonlySet<string> = new Set([
  'openid',
  'fhirUser',
  'profile',
  'launch',
  'launch/patient',
  'launch/encounter',
  'offline_access',
  'online_access',
]);

const ORDER: readonly Permission[] = ['c', 'r', 'u', 'd', 's'];

const V1_PERMS: Readonly<Record<string, readonly Permission[]>> = {
  read: ['r', 's'],
  write: ['c', 'u', 'd'],
  '*': ['c', 'r', 'u', 'd', 's'],
};

const SCOPE_RE = /^(patient|user|system)\/([A-Z][A-Za-z]+|\*)\.([^?]+)(?:\?(.*))?$/;
const V2_PERMS_RE = /^c?r?u?d?s?$/;

function permissionSet(perms: Iterable<Permission>): ReadonlySet<Permission> {
  const given = new Set(perms);
  // Insertion in cruds order so iteration is canonical.
  return new Set(ORDER.filter((p) => given.has(p)));
}

function sameSet<T>(a: ReadonlySet<T>, b: ReadonlySet<T>): boolean {
  if (a.size !== b.size) return false;
  for (const x of a) if (!b.has(x)) return false;
  return true;
}

/** The v1 suffix ('read' | 'write' | '*') whose permission set is exactly `perms`, if any. */
function v1Suffix(perms: ReadonlySet<Permission>): string | undefined {
  for (const [suffix, set] of Object.entries(V1_PERMS)) {
    if (sameSet(perms, new Set(set))) return suffix;
  }
  return undefined;
}

function parseQuery(text: string): Array<readonly [string, string]> | undefined {
  if (text === '') return undefined;
  const pairs: Array<readonly [string, string]> = [];
  for (const part of text.split('&')) {
    const eq = part.indexOf('=');
    if (eq <= 0 || eq === part.length - 1) return undefined;
    let name: string;
    let value: string;
    try {
      name = decodeURIComponent(part.slice(0, eq));
      value = decodeURIComponent(part.slice(eq + 1));
    } catch {
      return undefined; // malformed percent-encoding
    }
    if (name === '' || value === '') return undefined;
    pairs.push(Object.freeze([name, value] as const));
  }
  return pairs;
}

function makeScope(
  raw: string,
  context: ScopeContext,
  resourceType: string,
  permissions: ReadonlySet<Permission>,
  version: 1 | 2,
  query: ReadonlyArray<readonly [string, string]>,
): ResourceScope {
  return Object.freeze({ raw, context, resourceType, permissions, version, query: Object.freeze([...query]) });
}

/** Parses one resource scope; undefined if `s` is not a valid resource scope (v1 or v2). */
export function parseResourceScope(s: string): ResourceScope | undefined {
  if (/\s/.test(s)) return undefined; // scopes are space-delimited; whitespace must be percent-encoded
  const m = SCOPE_RE.exec(s);
  if (!m) return undefined;
  const [, context, resourceType, perms, queryText] = m as unknown as [string, ScopeContext, string, string, string | undefined];
  let version: 1 | 2;
  let permissions: ReadonlySet<Permission>;
  const v1 = Object.hasOwn(V1_PERMS, perms) ? V1_PERMS[perms] : undefined;
  if (v1) {
    if (queryText !== undefined) return undefined; // granular constraints are v2 only
    version = 1;
    permissions = permissionSet(v1);
  } else if (V2_PERMS_RE.test(perms)) {
    version = 2;
    permissions = permissionSet(perms.split('') as Permission[]);
  } else {
    return undefined;
  }
  let query: Array<readonly [string, string]> = [];
  if (queryText !== undefined) {
    const parsed = parseQuery(queryText);
    if (!parsed) return undefined;
    query = parsed;
  }
  return makeScope(s, context, resourceType, permissions, version, query);
}

function tokens(scope: string | undefined): string[] {
  if (!scope) return [];
  return [...new Set(scope.split(/\s+/).filter((t) => t !== ''))];
}

/** Splits a space-separated scope string, dedupes (exact text) keeping first-seen order, and classifies each scope. */
export function parseScopes(scope: string | undefined): { resource: ResourceScope[]; other: string[]; invalid: string[] } {
  const resource: ResourceScope[] = [];
  const other: string[] = [];
  const invalid: string[] = [];
  for (const t of tokens(scope)) {
    const parsed = parseResourceScope(t);
    if (parsed) resource.push(parsed);
    else if (NON_RESOURCE_SCOPES.has(t)) other.push(t);
    else invalid.push(t);
  }
  return { resource, other, invalid };
}

/**
 * Canonical text of a resource scope. v1 scopes keep their v1 suffix (read/write/*) when their permission set is a
 * v1 set and they carry no query; otherwise v2 letters in cruds order. Query pairs are re-encoded with
 * encodeURIComponent. Throws RangeError for an empty permission set (no valid text exists).
 */
export function formatScope(s: Omit<ResourceScope, 'raw'>): string {
  if (s.permissions.size === 0) throw new RangeError('formatScope: empty permission set');
  const v1 = s.version === 1 && s.query.length === 0 ? v1Suffix(s.permissions) : undefined;
  const perms = v1 ?? ORDER.filter((p) => s.permissions.has(p)).join('');
  const query = s.query.length === 0
    ? ''
    : '?' + s.query.map(([n, v]) => `${encodeURIComponent(n)}=${encodeURIComponent(v)}`).join('&');
  return `${s.context}/${s.resourceType}.${perms}${query}`;
}

function hasPair(query: ReadonlyArray<readonly [string, string]>, [n, v]: readonly [string, string]): boolean {
  return query.some(([qn, qv]) => qn === n && qv === v);
}

/** true when every access `inner` allows is also allowed by `outer` (same context, type equal or outer '*', permissions subset, and outer's query pairs all present in inner's). */
export function covers(outer: ResourceScope, inner: ResourceScope): boolean {
  if (outer.context !== inner.context) return false;
  if (outer.resourceType !== '*' && outer.resourceType !== inner.resourceType) return false;
  for (const p of inner.permissions) if (!outer.permissions.has(p)) return false;
  return outer.query.every((pair) => hasPair(inner.query, pair));
}

/** The largest scope allowed by both, or undefined when they share nothing (different context, disjoint types or permissions). Query = union of both pair lists (deduped). Result is v1 only if both are v1 and the permission set is exactly a v1 set; else v2. */
export function intersect(a: ResourceScope, b: ResourceScope): ResourceScope | undefined {
  if (a.context !== b.context) return undefined;
  let resourceType: string;
  if (a.resourceType === '*') resourceType = b.resourceType;
  else if (b.resourceType === '*' || b.resourceType === a.resourceType) resourceType = a.resourceType;
  else return undefined;
  const permissions = permissionSet([...a.permissions].filter((p) => b.permissions.has(p)));
  if (permissions.size === 0) return undefined;
  const query: Array<readonly [string, string]> = [];
  for (const pair of [...a.query, ...b.query]) if (!hasPair(query, pair)) query.push(pair);
  const version = a.version === 1 && b.version === 1 && query.length === 0 && v1Suffix(permissions) ? 1 : 2;
  const shape = { context: a.context, resourceType, permissions, version, query } as const;
  return makeScope(formatScope(shape), a.context, resourceType, permissions, version, query);
}

/** Drops scopes covered by another one; of mutually-covering (equivalent) scopes the first is kept. */
function withoutCovered(scopes: ResourceScope[]): ResourceScope[] {
  return scopes.filter((s, i) =>
    !scopes.some((o, j) => j !== i && covers(o, s) && (j < i || !covers(s, o))));
}

/**
 * What to grant for a request: each requested resource scope that some allowed scope covers is granted as asked;
 * otherwise its intersections with the allowed scopes are granted (e.g. asked patient/*.read, allowed patient/Observation.rs
 * -> patient/Observation.rs). Non-resource scopes are granted when present in `allowed`. Result deduped, without scopes covered by another granted scope, as strings.
 *
 * Scopes granted as asked keep their requested text; narrowed ones use formatScope's canonical text. Output follows
 * the order of `requested` (intersections in the order of `allowed`). Invalid requested scopes are dropped.
 */
export function grantableScopes(requested: string, allowed: string): string[] {
  const allow = parseScopes(allowed);
  const allowedOther = new Set(allow.other);
  const out: Array<string | ResourceScope> = [];
  for (const t of tokens(requested)) {
    if (NON_RESOURCE_SCOPES.has(t)) {
      if (allowedOther.has(t)) out.push(t);
      continue;
    }
    const req = parseResourceScope(t);
    if (!req) continue;
    if (allow.resource.some((a) => covers(a, req))) {
      out.push(req);
      continue;
    }
    for (const a of allow.resource) {
      const i = intersect(req, a);
      if (i) out.push(i);
    }
  }
  const seen = new Set<string>();
  const unique = out.filter((x) => {
    const key = typeof x === 'string' ? x : x.raw;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
  const kept = new Set(withoutCovered(unique.filter((x): x is ResourceScope => typeof x !== 'string')));
  return unique.filter((x) => typeof x === 'string' || kept.has(x)).map((x) => (typeof x === 'string' ? x : x.raw));
}

export type Interaction =
  | 'read' | 'vread' | 'history-instance' | 'history-type' | 'history-system'
  | 'search-type' | 'search-system' | 'create' | 'update' | 'patch' | 'delete' | 'operation';

/** The permission an interaction needs: read/vread/history-instance -> r; search-type/search-system/history-type/history-system -> s; create -> c; update/patch -> u; delete -> d; operation -> r. */
export function permissionFor(interaction: Interaction): Permission {
  switch (interaction) {
    case 'read':
    case 'vread':
    case 'history-instance':
    case 'operation':
      return 'r';
    case 'search-type':
    case 'search-system':
    case 'history-type':
    case 'history-system':
      return 's';
    case 'create':
      return 'c';
    case 'update':
    case 'patch':
      return 'u';
    case 'delete':
      return 'd';
  }
}

/**
 * The granted scopes (of any one context) that allow `permission` on `resourceType` ('*'-typed scopes match every type).
 * Empty = not allowed. Callers apply the query constraints of the returned scopes (an access is allowed if it satisfies
 * the constraints of at least one returned scope; a returned scope with no query means unconstrained).
 *
 * `context` restricts to scopes of that context; omitted, scopes of every context are considered. A `resourceType`
 * of '*' (e.g. a system-level search) is matched only by '*'-typed scopes. Order of `granted` is kept.
 */
export function matchingScopes(
  granted: readonly ResourceScope[],
  permission: Permission,
  resourceType: string,
  context?: ScopeContext,
): ResourceScope[] {
  return granted.filter((s) =>
    (context === undefined || s.context === context)
    && s.permissions.has(permission)
    && (s.resourceType === '*' || s.resourceType === resourceType));
}
