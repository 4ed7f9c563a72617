import { getTypeSearchParameters } from '../../fhir/definitions.js';
import type { Blinder } from '../blind.js';
import { MAX_TIME, MIN_TIME } from '../indexer.js';
import { storedParams } from '../param-aliases.js';
import type { AccessCondition, SearchPosition, SearchQuery } from '../types.js';
import type { StatsKey } from './index-rows.js';
import { indexTable, kindOf, type IndexKind } from './index-tables.js';
import {
  accessClause, afterClause, compartmentFilter, compileFilter, existsClause, inClause, inList, joinTerms, orderTerms,
  paramCond, PRIMARY_DATE_PARAM, referenceParamSql, rowsSql, storedReferenceParams, valueList, type Ctx, type IndexFilter, type OrderTerm, type Sql, type SqlFilter,
} from './search.js';

/** Counts index rows matching a filter, up to a cap (a cheap cardinality probe). */
export type Estimator = (sql: string, params: unknown[]) => number;

export interface PlanTuning {
  /**
   * Index rows (counted up to this) under which a page materializes its narrowest filter's rows
   * and orders them; a filter at least this wide is not read whole: the page walks an index in
   * the order asked and stops when it has its rows.
   */
  probeCap?: number;
}

const PROBE_CAP = 2000;
/**
 * A lead with at most this many rows is taken without probing the other filters: reading it
 * costs less than probing them (each probe counts up to the cap).
 */
const GOOD_ENOUGH = 500;

/** A way to start the query only (its conditions are also filters of their own, or `implies` one). */
interface LeadOnly { kind: 'lead'; rows: Sql; implies?: IndexFilter; narrow: boolean }
type Compiled = IndexFilter | LeadOnly | SqlFilter;

/**
 * How a page is read:
 * - scan: the type's rows, in pk order or along the (type, deleted, last_updated) index, with every
 *   filter tested on each (no filter is narrow and no exact key's index has the order asked);
 * - in: the narrowest filter's rows, materialized and ordered (`c.pk IN (...)`);
 * - walk: an exact key's index (system|code, Type/id) in resource order, for the default order;
 * - walk-date: an exact key's (key, dlo, res) index in date order, for `_sort=[-]date`, plus the
 *   rows without a single narrow date (dlo NULL) ordered apart; the two are merged.
 * Walks stop at the page, so their cost follows the page and the filters' selectivity, not the
 * number of matches.
 */
export type PlanKind = 'scan' | 'in' | 'walk' | 'walk-date';

/** One query of a page: rows (pk, version, and for merged arms k) in the search's order; pageRows adds LIMIT/OFFSET. */
export interface PageArm { sql: string; params: unknown[] }

export interface CompiledSearch {
  plan: PlanKind;
  /** One query, or two (walk-date) whose rows pageRows merges by (k, pk). */
  arms: PageArm[];
  /** `SELECT count(*) ...` of every match. */
  count: Sql;
  /** The sort keys (one per _sort rule) as expressions on row `c`, for the position of a page's last match. */
  keys: Sql[];
  /** Whether ties (and the default order) go by descending pk: the first sort rule's direction. */
  pkDescending: boolean;
  /** For _total=estimate: whether counting every match is cheap (a narrow filter leads). */
  countIsCheap: boolean;
  /** The populations an estimate may sample (one per exact key; none: the type's resources). */
  populations: Population[];
  /** Every condition of the search on row `c` (no lead), to test sampled rows. */
  test: Sql;
}

/**
 * Rows an estimate may draw from: the union of some keys' rows (a code's; the permitting
 * patients'), each sized by search_stats and found in `table` by `cond` on its `column`.
 */
export interface Population { keys: Array<{ stats: StatsKey; table: string; column: string; cond: Sql }> }

/**
 * Compiles a search so SQLite drives it from the index tables and stops at the page. Every filter
 * but the one that leads is a correlated EXISTS / NOT EXISTS on the (res, ...) key of its index.
 * The unary `+` on c.type / c.deleted keeps the planner from scanning the type index instead.
 */
export function compileSearch(query: SearchQuery, blinder: Blinder, estimate?: Estimator, tuning: PlanTuning = {}): CompiledSearch {
  const ctx: Ctx = { blinder, alias: 'c', resourceType: query.resourceType };
  const filters: Compiled[] = mergeDateFilters(query.filters.map((f) => compileFilter(f, ctx)));
  if (query.compartment) filters.push(compartmentFilter(query.compartment, query.resourceType));
  if (query.ids) filters.push({ kind: 'sql', sql: inList('c.id', query.ids) });
  if (query.access !== undefined) filters.push({ kind: 'sql', sql: accessClause(query.access, ctx) });
  filters.push(...codeDateLeads(filters), ...accessLeads(query.access, query.resourceType));

  const terms = orderTerms(query, 'c');
  const pkDescending = terms[0]?.descending ?? false;
  const plan = choosePlan(filters, query, estimate, tuning.probeCap ?? PROBE_CAP);
  const lead = plan.at >= 0 ? filters[plan.at]! : undefined;
  const walking = plan.kind === 'walk' || plan.kind === 'walk-date';

  let from = 'resource_current c';
  const where: Sql[] = [{ sql: plan.typeIndex ? 'c.type = ? AND c.deleted = 0' : '+c.type = ? AND +c.deleted = 0', params: [query.resourceType] }];
  // A code (or subject) + date lead yields only rows of that code: its own check would repeat it.
  const implied = plan.kind === 'in' && lead?.kind === 'lead' ? lead.implies : undefined;
  filters.forEach((f, i) => {
    if (f === implied) return;
    if (f.kind === 'sql') where.push(f.sql);
    else if (f.kind === 'lead') {
      if (i === plan.at) where.push({ sql: `c.pk IN (${f.rows.sql})`, params: f.rows.params });
    } else if (i !== plan.at) where.push(existsClause(f, 'c'));
    else if (walking) {
      from = `${f.table} d JOIN resource_current c ON c.pk = d.res`;
      // The condition names the driver's columns bare: resource_current has none of those names.
      where.push(paramCond(f, 'd.param'));
    } else where.push(inClause(f, 'c'));
  });
  const base = allOf(where);
  const test = allOf([{ sql: '+c.type = ? AND +c.deleted = 0', params: [query.resourceType] },
    ...filters.flatMap((f) => (f.kind === 'sql' ? [f.sql] : f.kind === 'index' ? [existsClause(f, 'c')] : []))]);
  const count = { sql: `SELECT count(*) FROM ${from} WHERE ${base.sql}`, params: base.params };
  const keys = terms.map((t) => ({ sql: t.sql, params: t.params }));
  const select = (extra: Sql | undefined, cols = 'c.pk AS pk, c.version AS version') => {
    const w = extra ? allOf([base, extra]) : base;
    return { sql: `SELECT ${cols} FROM ${from} WHERE ${w.sql}`, params: w.params };
  };

  let arms: PageArm[];
  if (plan.kind === 'walk') {
    // The driver's index yields rows in res (= pk) order: ordering by it avoids a sort.
    const s = select(query.after ? { sql: 'd.res > ?', params: [query.after.pk] } : undefined);
    arms = [{ sql: `${s.sql} ORDER BY d.res`, params: s.params }];
  } else if (plan.kind === 'walk-date') {
    arms = dateWalkArms(terms[0]!, filters, query.after, select);
  } else {
    const s = select(query.after ? afterClause(terms, query.after, 'c.pk', pkDescending) : undefined);
    const order = joinTerms(terms, 'c', pkDescending);
    arms = [{ sql: `${s.sql} ORDER BY ${order.orderBy}`, params: [...s.params, ...order.params] }];
  }
  return {
    plan: plan.kind, arms, count, keys, pkDescending, countIsCheap: plan.kind === 'in' && plan.narrow === true, test,
    populations: [...filters.filter(isJoinDriver).flatMap((f) => keyPopulation(f) ?? []), ...accessPopulations(query.access, query.resourceType)],
  };
}

/** An exact token or reference key's rows (see isJoinDriver). */
function keyPopulation(f: IndexFilter): Population | undefined {
  const [x, y] = f.cond.params as [string, string];
  const param = f.params[0]!;
  if (f.table === indexTable('token')) return { keys: [{ stats: ['token', param, y, x], table: f.table, column: 'res', cond: { sql: 'param = ? AND code = ? AND system = ?', params: [param, x, y] } }] };
  if (f.table === indexTable('reference')) return { keys: [referenceKey(param, y, x)] };
  return undefined;
}

function referenceKey(param: string, type: string, id: string): Population['keys'][number] {
  return { stats: ['reference', param, type, id], table: indexTable('reference'), column: 'res', cond: { sql: 'param = ? AND target_id = ? AND target_type = ?', params: [param, id, type] } };
}

/** The rows referencing the patients of each compartment lead of the access condition (through its stored params). */
function accessPopulations(access: AccessCondition | undefined, resourceType: string): Population[] {
  return compartmentConjuncts(access).map(({ patients, params }) => ({
    keys: storedReferenceParams(resourceType, params).flatMap((param) => patients.map((id) => referenceKey(param, 'Patient', id))),
  }));
}

/**
 * `_sort=[-]date` along an exact key's (param, key, dlo, res) index: the resources with a single
 * narrow date (dlo, which is then their sort key) in index order, and apart the others (dlo NULL:
 * none, several or a wide one), each with its sort key computed. A date filter on the same
 * parameter bounds dlo, so the walk starts at the range.
 */
function dateWalkArms(term: OrderTerm, filters: Compiled[], after: SearchPosition | undefined, select: (extra: Sql | undefined, cols?: string) => Sql): PageArm[] {
  const dir = term.descending ? 'DESC' : 'ASC';
  const arms: PageArm[] = [];
  const key = after?.keys[0];
  if (after === undefined || (key !== null && key !== undefined)) {
    const conds: Sql[] = [{ sql: 'd.dlo IS NOT NULL', params: [] }];
    const date = primaryDateFilter(filters);
    if (date) conds.push({ sql: 'd.dlo >= ? AND d.dlo <= ?', params: [...date.loBounds!] });
    if (after) conds.push({ sql: `(d.dlo, d.res) ${term.descending ? '<' : '>'} (?, ?)`, params: [key, after.pk] });
    const s = select(allOf(conds), 'c.pk AS pk, c.version AS version, d.dlo AS k');
    arms.push({ sql: `${s.sql} ORDER BY d.dlo ${dir}, d.res ${dir}`, params: s.params });
  }
  const rest: Sql[] = [{ sql: 'd.dlo IS NULL', params: [] }];
  if (after) rest.push(afterClause([term], after, 'c.pk', term.descending));
  // The key's parameters come first: they are in the select list, before the WHERE.
  const s = select(allOf(rest), `c.pk AS pk, c.version AS version, ${term.sql} AS k`);
  arms.push({ sql: `${s.sql} ORDER BY k ${dir} NULLS LAST, c.pk ${dir}`, params: [...term.params, ...s.params] });
  return arms;
}

/**
 * Runs a compiled search's page: `limit` rows after `offset`. Merged arms each give their first
 * offset + limit rows, ordered by (k, pk) with missing keys last, as the order of the whole.
 */
export function pageRows<R extends { pk: number; version: number; k?: number | null }>(
  all: (sql: string, params: unknown[]) => R[], c: CompiledSearch, limit: number, offset: number,
): R[] {
  if (c.arms.length === 1) return all(`${c.arms[0]!.sql} LIMIT ? OFFSET ?`, [...c.arms[0]!.params, limit, offset]);
  const desc = c.pkDescending;
  const rows = c.arms.flatMap((a) => all(`${a.sql} LIMIT ?`, [...a.params, limit + offset]));
  rows.sort((a, b) => {
    const ka = a.k ?? null;
    const kb = b.k ?? null;
    if (ka !== kb) {
      if (ka === null) return 1;
      if (kb === null) return -1;
      return desc ? kb - ka : ka - kb;
    }
    return desc ? b.pk - a.pk : a.pk - b.pk;
  });
  return rows.slice(offset, offset + limit);
}

// ---- choosing the plan ----

interface Plan {
  kind: PlanKind;
  /** The filter that leads (in) or whose index is walked (walk, walk-date). */
  at: number;
  /** Read the type's rows through its (type, deleted, last_updated) index, not in pk order. */
  typeIndex?: boolean;
  /** The lead was probed and is under the cap. */
  narrow?: boolean;
}

/** Equality lookups (tokens, references, uris, strings) narrow better than ranges (dates, numbers). */
const EQUALITY_KINDS = new Set<IndexKind>(['token', 'reference', 'uri', 'string']);

const isPositive = (f: Compiled): f is IndexFilter | LeadOnly => f.kind === 'lead' || (f.kind === 'index' && !f.negate && f.cond.sql !== '1');

function isJoinDriver(f: Compiled): f is IndexFilter {
  return f.kind === 'index' && !f.negate && f.params.length === 1 && f.cond.exactKey === true;
}

/**
 * With an estimator: the narrowest filter (index rows counted up to the cap) leads. When even it
 * is at the cap and the order is one an exact key's index gives (the default order, or the date),
 * the page walks that index instead of reading the filter whole. Without an estimator: a walk
 * when one fits the order, else the first reference, token or other equality filter.
 */
function choosePlan(filters: Compiled[], query: SearchQuery, estimate: Estimator | undefined, cap: number): Plan {
  const candidates = filters.flatMap((f, i) => (isPositive(f) ? [[f, i] as const] : []));
  const drivers = candidates.filter(([f]) => isJoinDriver(f)) as Array<readonly [IndexFilter, number]>;
  const driver = narrowestDriver(drivers, estimate);
  const byLastUpdated = query.sort.length === 1 && query.sort[0]!.code === '_lastUpdated';
  const ordered: Plan | undefined = query.sort.length === 0 ? (driver ? { kind: 'walk', at: driver[1] } : undefined)
    : sortsByPrimaryDate(query) && driver && hasDateIndex(driver[0]) ? { kind: 'walk-date', at: driver[1] }
      : byLastUpdated ? { kind: 'scan', at: -1, typeIndex: true } : undefined;
  if (candidates.length === 0) return scanPlan(query, estimate, cap);
  if (!estimate) {
    if (ordered && ordered.kind !== 'scan') return ordered;
    const ref = candidates.find(([f]) => f.kind === 'lead' && f.narrow);
    const eq = candidates.find(([f]) => f.kind === 'index' && EQUALITY_KINDS.has(kindOf(f.table)));
    return { kind: 'in', at: (ref ?? eq ?? candidates[0]!)[1] };
  }
  const best = fewestRows(candidates, estimate, cap);
  if (query.sort.length === 0 && isJoinDriver(filters[best.at]!)) return { kind: 'walk', at: best.at };
  if (best.rows < cap) return { kind: 'in', at: best.at, narrow: true };
  // Every filter is wide: walk an order the indexes have and stop at the page.
  if (ordered) return ordered;
  if (query.sort.length === 0) return { kind: 'scan', at: -1 };
  return { kind: 'in', at: best.at };
}

/**
 * The exact key to walk: the one with the fewest rows by search_stats (a patient's readings of a
 * rare code: the code), else a reference (a patient's data is narrower than a code's).
 */
function narrowestDriver(drivers: Array<readonly [IndexFilter, number]>, estimate: Estimator | undefined): readonly [IndexFilter, number] | undefined {
  if (drivers.length < 2 || !estimate) return drivers.find(([f]) => kindOf(f.table) === 'reference') ?? drivers[0];
  return drivers.map((d) => [d, keyRows(d[0], estimate)] as const).sort((a, b) => a[1] - b[1])[0]![0];
}

/**
 * The type's rows, no filter leading: in pk order when the type has many (the walk meets them
 * soon), else through the type index, sorted; along that index when sorted by _lastUpdated.
 */
function scanPlan(query: SearchQuery, estimate: Estimator | undefined, cap: number): Plan {
  if (query.sort.length > 0 || !estimate) return { kind: 'scan', at: -1, typeIndex: true };
  const rows = estimate(`SELECT count(*) FROM (SELECT 1 FROM resource_current WHERE type = ? AND deleted = 0 LIMIT ${cap})`, [query.resourceType]);
  return { kind: 'scan', at: -1, typeIndex: rows < cap };
}

/** The candidate with the fewest index rows (counted up to `cap`); likely-narrow ones first. */
function fewestRows(candidates: Array<readonly [IndexFilter | LeadOnly, number]>, estimate: Estimator, cap: number): { at: number; rows: number } {
  const rank = (f: IndexFilter | LeadOnly) => (f.kind === 'lead' ? (f.narrow ? 0 : 2) : isJoinDriver(f) ? 1 : 2);
  const ordered = [...candidates].sort((a, b) => rank(a[0]) - rank(b[0]));
  let best = { at: -1, rows: Infinity };
  for (const [f, i] of ordered) {
    const n = f.kind === 'index' && isJoinDriver(f) ? Math.min(cap, keyRows(f, estimate)) : probe(f, estimate, cap);
    // Ties go to the earlier (join driver over IN list), which also spares a sort.
    if (n < best.rows) best = { at: i, rows: n };
    if (best.rows <= GOOD_ENOUGH) break;
  }
  return best;
}

/** Index rows of a filter, counted up to the cap. */
function probe(f: IndexFilter | LeadOnly, estimate: Estimator, cap: number): number {
  const rows = f.kind === 'lead' ? f.rows : rowsSql(f);
  return estimate(`SELECT count(*) FROM (${rows.sql} LIMIT ${cap})`, rows.params);
}

/** An exact key's rows by the counts the writer keeps (no rows counted). */
function keyRows(f: IndexFilter, estimate: Estimator): number {
  const key = keyPopulation(f)?.keys[0]?.stats;
  return key ? estimate('SELECT coalesce((SELECT n FROM search_stats WHERE kind = ? AND a = ? AND b = ? AND c = ?), 0)', key) : Infinity;
}

/** `_sort=date` or `-date` alone, where the type's `date` is the parameter dlo carries. */
function sortsByPrimaryDate(query: SearchQuery): boolean {
  if (query.sort.length !== 1 || query.sort[0]!.code !== PRIMARY_DATE_PARAM) return false;
  const stored = storedParams(query.resourceType, PRIMARY_DATE_PARAM);
  return getTypeSearchParameters(query.resourceType)[PRIMARY_DATE_PARAM]?.type === 'date' && stored.length === 1 && stored[0] === PRIMARY_DATE_PARAM;
}

/** Token and reference rows carry dlo; their (key, dlo, res) indexes hold rows with a system / target type. */
function hasDateIndex(f: IndexFilter): boolean {
  return f.table === indexTable('token') || f.table === indexTable('reference');
}

// ---- leads ----

/** A non-negated filter on the primary date with a bounded range of narrow `lo`. */
function primaryDateFilter(filters: Compiled[]): IndexFilter | undefined {
  return filters.find((f): f is IndexFilter => f.kind === 'index' && kindOf(f.table) === 'date' && !f.negate
    && f.params.length === 1 && f.params[0] === PRIMARY_DATE_PARAM && f.loBounds !== undefined
    && !(f.loBounds[0] <= MIN_TIME && f.loBounds[1] >= MAX_TIME));
}

/**
 * code=system|code (or subject=Patient/x) with date=...: one seek on (param, key, dlo), plus the
 * rows whose resource has no single narrow date (dlo NULL). The date filter itself still applies.
 */
function codeDateLeads(filters: Compiled[]): LeadOnly[] {
  const date = primaryDateFilter(filters);
  if (!date) return [];
  const [min, max] = date.loBounds!;
  return filters.filter((f): f is IndexFilter => isJoinDriver(f) && hasDateIndex(f)).map((t) => {
    const c = paramCond(t, 'param');
    return {
      kind: 'lead',
      implies: t,
      narrow: kindOf(t.table) === 'reference',
      rows: {
        sql: `SELECT res FROM ${t.table} WHERE ${c.sql} AND dlo >= ? AND dlo <= ? UNION ALL SELECT res FROM ${t.table} WHERE ${c.sql} AND dlo IS NULL`,
        params: [...c.params, min, max, ...c.params],
      },
    };
  });
}

/**
 * The access condition's "in the compartment of one of these patients" (a consent-limited
 * practitioner's permitting patients, a confined patient) as a lead: the resources referencing
 * them, so that a page need not test everything the principal cannot see.
 */
function accessLeads(access: AccessCondition | undefined, resourceType: string): LeadOnly[] {
  return compartmentConjuncts(access).map(({ patients, params }): LeadOnly => {
    const p = referenceParamSql(resourceType, params, 'param');
    const targets = valueList('target_id', patients);
    return {
      kind: 'lead',
      narrow: true,
      rows: { sql: `SELECT res FROM ${indexTable('reference')} WHERE ${p.sql} AND target_type = 'Patient' AND ${targets.sql}`, params: [...p.params, ...targets.params] },
    };
  });
}

/** The "in the compartment of one of these patients" conjuncts of an access condition (nonempty ones). */
function compartmentConjuncts(access: AccessCondition | undefined): Array<{ patients: string[]; params: string[] }> {
  const conjuncts = (a: AccessCondition): AccessCondition[] => (typeof a === 'object' && 'and' in a ? a.and.flatMap(conjuncts) : [a]);
  if (access === undefined) return [];
  return conjuncts(access).flatMap((a) => (typeof a === 'object' && 'compartment' in a && a.compartment.patients.length > 0 && a.compartment.params.length > 0 ? [a.compartment] : []));
}

/** date=geA&date=ltB on one parameter is one range: one index seek instead of two half-open scans. */
function mergeDateFilters(filters: Compiled[]): Compiled[] {
  const out: Compiled[] = [];
  const byParam = new Map<string, IndexFilter>();
  for (const f of filters) {
    if (f.kind !== 'index' || kindOf(f.table) !== 'date' || f.negate || !f.loBounds || f.params.length !== 1) {
      out.push(f);
      continue;
    }
    const prev = byParam.get(f.params[0]!);
    if (!prev) {
      const copy = { ...f };
      byParam.set(f.params[0]!, copy);
      out.push(copy);
      continue;
    }
    prev.cond = { sql: `(${prev.cond.sql}) AND (${f.cond.sql})`, params: [...prev.cond.params, ...f.cond.params] };
    prev.loBounds = [Math.max(prev.loBounds![0], f.loBounds[0]), Math.min(prev.loBounds![1], f.loBounds[1])];
  }
  return out;
}

function allOf(parts: Sql[]): Sql {
  return { sql: parts.map((p) => `(${p.sql})`).join(' AND '), params: parts.flatMap((p) => p.params) };
}
