import { getTypeSearchParameters } from '../../fhir/definitions.js';
import { badRequest, notSupported } from '../../fhir/outcome.js';
import { codePointPrefix, MAX_BLIND_PREFIX, normalizeString, type Blinder } from '../blind.js';
import { isParamBlinded, isParamTextBlinded } from '../blinding-policy.js';
import { storedParams } from '../param-aliases.js';
import { ANY_ROW, referenceStorage } from '../reference-aliases.js';
import { MAX_TIME, MIN_TIME, numberRange, parseDateRange, parseReference } from '../indexer.js';
import type { AccessCondition, Prefix, SearchFilter, SearchParamType, SearchPosition, SearchQuery } from '../types.js';
import { indexTable, kindOf, type IndexKind } from './index-tables.js';

/** Upper bound for "starts with" ranges: sorts after every valid UTF-8 string that has the prefix. */
const MAX_CHAR = '\u{10FFFF}';

/** SQL text plus its positional parameters, built up clause by clause. */
export interface Sql {
  sql: string;
  params: unknown[];
  /** Equality on every key column of the table's (param, ..., res) index: one row per resource, in res order. */
  exactKey?: boolean;
}

export interface Ctx {
  blinder: Blinder;
  /** Alias of the resource_current row the clause filters. */
  alias: string;
  /** Resource type of that row (chains compile against the target type). */
  resourceType: string;
}

/** A filter on one index table, before it is placed in the query. Column names in `cond` are unqualified. */
export interface IndexFilter {
  kind: 'index';
  table: string;
  params: string[];
  /** idx_reference: the flags bits (parallel to params) a row must have, when not any. */
  masks?: number[];
  cond: Sql;
  negate: boolean;
  /** Dates: the range `lo` must lie in for narrow rows (span <= NARROW_SPAN), letting the index seek. */
  loBounds?: [number, number];
}

export type SqlFilter = { kind: 'sql'; sql: Sql };

/** The date parameter whose value idx_token.dlo carries. */
export const PRIMARY_DATE_PARAM = 'date';

/** `param = ? AND (cond)` (or `param IN (...)` for several params). */
export function paramCond(f: IndexFilter, column: string): Sql {
  const p = paramSql(f.params, f.masks, column);
  return { sql: `${p.sql} AND (${f.cond.sql})`, params: [...p.params, ...f.cond.params] };
}

/**
 * `param = ?` / `param IN (...)`, with the flags test of aliased reference params (flags is
 * param's neighbour column). Rows of parameters without an alias have every flag bit, so one test
 * serves a list unless two of its parameters need different bits.
 */
function paramSql(params: string[], masks: number[] | undefined, column: string): Sql {
  const flags = column.replace(/^\+/, '').replace(/param$/, 'flags');
  const needed = [...new Set((masks ?? []).filter((m) => m !== ANY_ROW))];
  if (needed.length > 1) {
    const term = (i: number) => (masks![i] === ANY_ROW ? `${column} = ?` : `(${column} = ? AND (${flags} & ${masks![i]}) != 0)`);
    return { sql: `(${params.map((_, i) => term(i)).join(' OR ')})`, params };
  }
  let sql = params.length === 1 ? `${column} = ?` : `${column} IN (${params.map(() => '?').join(', ')})`;
  if (needed.length === 1) sql += ` AND (${flags} & ${needed[0]}) != 0`;
  return { sql, params };
}

/** `column = ?` (or IN) plus the flags test, for reference params of a type, e.g. for _include. */
export function referenceParamSql(resourceType: string, params: string[], column: string): Sql {
  const r = referenceParams(resourceType, params);
  return paramSql(r.params, r.masks, column);
}

/** The stored parameter names whose rows hold these reference params' rows. */
export function storedReferenceParams(resourceType: string, params: string[]): string[] {
  return referenceParams(resourceType, params).params;
}

/** Stored names and flags masks of reference params: an alias (Observation.patient) reads its base's rows. */
function referenceParams(resourceType: string, params: string[]): { params: string[]; masks?: number[] } {
  const byName = new Map<string, number>();
  for (const p of params) {
    for (const s of referenceStorage(resourceType, p)) byName.set(s.param, (byName.get(s.param) ?? 0) | s.mask);
  }
  const masks = [...byName.values()];
  return { params: [...byName.keys()], ...(masks.every((m) => m === ANY_ROW) ? {} : { masks }) };
}

/** The params (and masks) of a filter on `table` for the searched type's params. */
function tableParams(table: string, resourceType: string, params: string[]): { params: string[]; masks?: number[] } {
  return kindOf(table) === 'reference' ? referenceParams(resourceType, params) : { params };
}

export function inClause(f: IndexFilter, alias: string): Sql {
  const rows = rowsSql(f);
  return { sql: `${alias}.pk ${f.negate ? 'NOT IN' : 'IN'} (${rows.sql})`, params: rows.params };
}

/**
 * `SELECT res FROM <index> WHERE ...` for a filter. A bounded date filter is a UNION ALL of a seek
 * on `lo` among narrow rows and a scan of the (few) wide rows, which SQLite will not plan from an OR.
 */
export function rowsSql(f: IndexFilter): Sql {
  const cond = paramCond(f, 'param');
  const b = f.loBounds;
  if (!b || (b[0] <= MIN_TIME && b[1] >= MAX_TIME)) return { sql: `SELECT res FROM ${f.table} WHERE ${cond.sql}`, params: cond.params };
  return {
    sql: `SELECT res FROM ${f.table} WHERE wide = 0 AND lo >= ? AND lo <= ? AND ${cond.sql} UNION ALL SELECT res FROM ${f.table} WHERE wide = 1 AND ${cond.sql}`,
    params: [b[0], b[1], ...cond.params, ...cond.params],
  };
}

/**
 * `+x.param` keeps the planner on the (res, n) key, a seek to the resource's few rows; on the
 * param index it would scan every row of the parameter.
 */
export function existsClause(f: IndexFilter, alias: string): Sql {
  const inner = paramCond(f, '+x.param');
  return { sql: `${f.negate ? 'NOT ' : ''}EXISTS (SELECT 1 FROM ${f.table} x WHERE x.res = ${alias}.pk AND ${inner.sql})`, params: inner.params };
}

export function compartmentFilter(c: NonNullable<SearchQuery['compartment']>, resourceType: string): IndexFilter {
  return {
    kind: 'index',
    table: indexTable('reference'),
    ...referenceParams(resourceType, c.params),
    cond: { sql: 'target_id = ? AND target_type = ?', params: [c.id, c.resourceType], exactKey: true },
    negate: false,
  };
}

export function inList(column: string, values: readonly unknown[]): Sql {
  if (values.length === 0) return { sql: '0', params: [] };
  return { sql: `${column} IN (${values.map(() => '?').join(', ')})`, params: [...values] };
}

export function compileFilter(f: SearchFilter, ctx: Ctx): IndexFilter | SqlFilter {
  if (f.chain) return { kind: 'sql', sql: chainClause(f, ctx) };
  if (f.param === '_id') return { kind: 'sql', sql: idClause(f, ctx.alias) };
  if (f.param === '_lastUpdated') return { kind: 'sql', sql: orValues(f, (v) => dateCondition(`${ctx.alias}.last_updated`, `${ctx.alias}.last_updated`, v.prefix, v.value)) };
  if (f.modifier === 'missing') {
    const { table, param } = indexOf(f);
    return { kind: 'index', table, ...tableParams(table, ctx.resourceType, storedParams(ctx.resourceType, param)), cond: { sql: '1', params: [] }, negate: f.values[0]?.value === 'true' };
  }
  const { table, param, condition } = valueMatcher(f, ctx);
  const filter: IndexFilter = { kind: 'index', table, ...tableParams(table, ctx.resourceType, storedParams(ctx.resourceType, param)), cond: orValues(f, condition), negate: f.modifier === 'not' };
  if (kindOf(table) === 'date' && !f.blinded && !f.modifier) {
    const bounds = f.values.map((v) => narrowLoBounds(v.prefix, v.value));
    filter.loBounds = [Math.min(...bounds.map((b) => b[0])), Math.max(...bounds.map((b) => b[1]))];
  }
  return filter;
}

function orValues(f: SearchFilter, condition: (v: SearchFilter['values'][number]) => Sql): Sql {
  const parts = f.values.map(condition);
  if (parts.length === 1) return parts[0]!;
  return { sql: parts.map((p) => `(${p.sql})`).join(' OR ') || '0', params: parts.flatMap((p) => p.params) };
}

function idClause(f: SearchFilter, alias: string): Sql {
  const list = inList(`${alias}.id`, f.values.map((v) => v.value));
  return f.modifier === 'not' ? { sql: `NOT (${list.sql})`, params: list.params } : list;
}

/** Index table and row param that hold a filter's values (modifiers redirect :text and :identifier). */
function indexOf(f: SearchFilter): { table: string; param: string } {
  if (f.modifier === 'text') return { table: indexTable('string'), param: `${f.param}:text` };
  if (f.modifier === 'identifier') return { table: indexTable('token'), param: `${f.param}:identifier` };
  if (f.type === 'date' && f.blinded) return { table: indexTable('string'), param: f.param };
  return { table: indexTable(f.type as IndexKind), param: f.param };
}

type Condition = (v: SearchFilter['values'][number]) => Sql;

function valueMatcher(f: SearchFilter, ctx: Ctx): { table: string; param: string; condition: Condition } {
  const { table, param } = indexOf(f);
  const b = ctx.blinder;
  if (f.modifier === 'text') return { table, param, condition: (v) => textCondition(param, v.value, f.blinded, b) };
  if (f.modifier === 'identifier') return { table, param, condition: (v) => tokenCondition(param, v.value, true, b) };
  switch (f.type as SearchParamType) {
    case 'token': return { table, param, condition: (v) => tokenCondition(param, v.value, f.blinded, b) };
    case 'string': return { table, param, condition: (v) => stringCondition(param, v.value, f.modifier, f.blinded, b) };
    case 'date':
      if (f.blinded) return { table, param, condition: (v) => blindedDateCondition(param, v.prefix, v.value, b) };
      return { table, param, condition: (v) => dateCondition('lo', 'hi', v.prefix, v.value) };
    case 'number': return { table, param, condition: (v) => numberCondition(f.param, v.prefix, v.value) };
    case 'quantity': return { table, param, condition: (v) => quantityCondition(f.param, v.prefix, v.value) };
    case 'reference': return { table, param, condition: (v) => referenceCondition(f, ctx.resourceType, v.value) };
    case 'uri': return { table, param, condition: (v) => uriCondition(v.value, f.modifier) };
    default: throw notSupported(`Search parameter '${f.param}' of type ${f.type} is not supported`);
  }
}

// ---- token ----

/** Splits `system|code` on the first unescaped '|' and unescapes `\|`, `\$`, `\\`. */
export function splitToken(value: string): { system: string | undefined; code: string } {
  const m = /^((?:[^|\\]|\\.)*)\|(.*)$/.exec(value);
  const unescape = (s: string) => s.replace(/\\([|$,\\])/g, '$1');
  return m ? { system: unescape(m[1]!), code: unescape(m[2]!) } : { system: undefined, code: unescape(value) };
}

function tokenCondition(param: string, value: string, blinded: boolean, blinder: Blinder): Sql {
  const { system, code } = splitToken(value);
  const c = blinded && code !== '' ? blinder.token(param, code) : code;
  if (system === undefined) return { sql: 'code = ?', params: [c] };
  if (system === '') return { sql: 'code = ? AND system IS NULL', params: [c] };
  if (code === '') return { sql: 'system = ?', params: [system] };
  return { sql: 'code = ? AND system = ?', params: [c, system], exactKey: true };
}

// ---- string ----

function stringCondition(param: string, value: string, modifier: string | undefined, blinded: boolean, blinder: Blinder): Sql {
  if (blinded) {
    if (modifier === 'contains') throw notSupported(`Parameter '${param}' is blinded, so ':contains' is not supported`);
    if (modifier === 'exact') return { sql: 'value = ?', params: [blinder.exact(param, value)] };
    const prefix = codePointPrefix(normalizeString(value), MAX_BLIND_PREFIX);
    return { sql: 'value = ?', params: [blinder.prefix(param, prefix)] };
  }
  const normalized = normalizeString(value);
  // Index (param, value) first narrows by the normalized form; `exact` then checks the case and accents.
  if (modifier === 'exact') return { sql: 'value = ? AND exact = ?', params: [normalized, value] };
  if (modifier === 'contains') return { sql: "value LIKE ? ESCAPE '\\'", params: [`%${escapeLike(normalized)}%`] };
  return { sql: 'value >= ? AND value < ?', params: [normalized, normalized + MAX_CHAR] };
}

/** Token `:text`: starts-with of the whole text; blinded texts through their stored prefixes. */
function textCondition(param: string, value: string, blinded: boolean, blinder: Blinder): Sql {
  if (!blinded) return stringCondition(param, value, undefined, false, blinder);
  return { sql: 'value IN (SELECT text FROM text_prefix WHERE prefix = ?)', params: [blinder.textPrefix(value)] };
}

function escapeLike(s: string): string {
  return s.replace(/[\\%_]/g, (c) => `\\${c}`);
}

// ---- date ----

function dateRangeOf(value: string): [number, number] {
  const r = parseDateRange(value);
  if (!r) throw badRequest(`Invalid date '${value}'`);
  return r;
}

/** FHIR R4 date prefixes: target [lo, hi] against search range [a, b] at the search value's precision. */
function dateCondition(lo: string, hi: string, prefix: Prefix, value: string): Sql {
  const [a, b] = dateRangeOf(value);
  switch (prefix) {
    case 'eq': return { sql: `${lo} >= ? AND ${hi} <= ?`, params: [a, b] };
    case 'ne': return { sql: `${lo} < ? OR ${hi} > ?`, params: [a, b] };
    case 'gt': return { sql: `${hi} > ?`, params: [b] };
    case 'lt': return { sql: `${lo} < ?`, params: [a] };
    case 'ge': return { sql: `${hi} > ? OR (${lo} >= ? AND ${hi} <= ?)`, params: [b, a, b] };
    case 'le': return { sql: `${lo} < ? OR (${lo} >= ? AND ${hi} <= ?)`, params: [a, a, b] };
    case 'sa': return { sql: `${lo} > ?`, params: [b] };
    case 'eb': return { sql: `${hi} < ?`, params: [a] };
    case 'ap': {
      // Approximately: the search range widened by 10% of its distance from now, overlapping the target.
      const slack = Math.round(0.1 * Math.abs(Date.now() - (a + b) / 2));
      return { sql: `${lo} <= ? AND ${hi} >= ?`, params: [b + slack, a - slack] };
    }
  }
}

/** Rows whose range spans more than this are "wide"; the others have lo within NARROW_SPAN of hi. */
export const NARROW_SPAN = 2 * 86_400_000;

/** Where `lo` of a narrow row must lie for the row to match (a superset; the exact test still applies). */
function narrowLoBounds(prefix: Prefix, value: string): [number, number] {
  const [a, b] = dateRangeOf(value);
  const W = NARROW_SPAN;
  switch (prefix) {
    case 'eq': return [a, b];
    case 'ne': return [MIN_TIME, MAX_TIME];
    case 'gt': return [b - W, MAX_TIME];
    case 'lt': case 'eb': return [MIN_TIME, a];
    case 'ge': return [Math.min(a, b - W), MAX_TIME];
    case 'le': return [MIN_TIME, b];
    case 'sa': return [b, MAX_TIME];
    case 'ap': {
      const slack = Math.round(0.1 * Math.abs(Date.now() - (a + b) / 2));
      return [a - slack - W, b + slack];
    }
  }
}

function blindedDateCondition(param: string, prefix: Prefix, value: string, blinder: Blinder): Sql {
  if (prefix !== 'eq' || !/^\d{4}(-\d{2}(-\d{2})?)?$/.test(value)) {
    throw notSupported(`Parameter '${param}' is blinded; only equality on YYYY, YYYY-MM or YYYY-MM-DD is supported`);
  }
  return { sql: 'value = ?', params: [blinder.exact(param, value)] };
}

// ---- number / quantity ----

function numberOf(param: string, value: string): { value: number; lo: number; hi: number } {
  const r = numberRange(value);
  if (!r) throw badRequest(`Parameter '${param}' has an invalid number '${value}'`);
  return r;
}

/** Number prefixes; eq/ne use the implicit precision of the search value ([lo, hi) around it). */
function numberCondition(param: string, prefix: Prefix, raw: string): Sql {
  const n = numberOf(param, raw);
  switch (prefix) {
    case 'eq': return { sql: 'value >= ? AND value < ?', params: [n.lo, n.hi] };
    case 'ne': return { sql: 'value < ? OR value >= ?', params: [n.lo, n.hi] };
    case 'gt': case 'sa': return { sql: 'value > ?', params: [n.value] };
    case 'lt': case 'eb': return { sql: 'value < ?', params: [n.value] };
    case 'ge': return { sql: 'value >= ?', params: [n.value] };
    case 'le': return { sql: 'value <= ?', params: [n.value] };
    case 'ap': {
      const slack = Math.abs(n.value) * 0.1;
      return { sql: 'value >= ? AND value <= ?', params: [Math.min(n.lo, n.value - slack), Math.max(n.hi, n.value + slack)] };
    }
  }
}

/** `number`, `number|system|code`, `number||code` (code matches code or unit). */
function quantityCondition(param: string, prefix: Prefix, value: string): Sql {
  const [num = '', system, code] = value.split('|');
  const base = numberCondition(param, prefix, num);
  const sql = [`(${base.sql})`];
  const params = [...base.params];
  if (system) {
    sql.push('system = ?');
    params.push(system);
  }
  if (code) {
    sql.push(system ? 'code = ?' : '(code = ? OR unit = ?)');
    params.push(...(system ? [code] : [code, code]));
  }
  return { sql: sql.join(' AND '), params };
}

// ---- reference / uri ----

function referenceCondition(f: SearchFilter, resourceType: string, value: string): Sql {
  const typeModifier = f.modifier && /^[A-Z]/.test(f.modifier) ? f.modifier : undefined;
  if (!value.includes('/') && !value.includes(':')) {
    const targetType = typeModifier ?? singleTarget(resourceType, f.param);
    return targetType ? { sql: 'target_id = ? AND target_type = ?', params: [value, targetType], exactKey: true } : { sql: 'target_id = ?', params: [value] };
  }
  const parsed = parseReference(value);
  if (!parsed) throw badRequest(`Parameter '${f.param}' has an invalid reference '${value}'`);
  if (typeModifier && parsed.targetType && parsed.targetType !== typeModifier) return { sql: '0', params: [] };
  if (parsed.url === null) return { sql: 'target_id = ? AND target_type = ?', params: [parsed.targetId, parsed.targetType], exactKey: true };
  if (parsed.targetType) return { sql: 'url = ? OR (target_id = ? AND target_type = ?)', params: [value, parsed.targetId, parsed.targetType] };
  return { sql: 'url = ?', params: [value] };
}

function singleTarget(resourceType: string, code: string): string | undefined {
  const targets = getTypeSearchParameters(resourceType)[code]?.target ?? [];
  return targets.length === 1 ? targets[0] : undefined;
}

function uriCondition(value: string, modifier: string | undefined): Sql {
  if (modifier === 'below') return { sql: 'value >= ? AND value < ?', params: [value, value + MAX_CHAR] };
  if (modifier === 'above') return { sql: 'substr(?, 1, length(value)) = value', params: [value] };
  return { sql: 'value = ?', params: [value] };
}

// ---- chain ----

/**
 * subject:Patient.name=x: resources whose reference points at a current target that matches the
 * chained filter. Blinding is decided per target type (a name is blinded on Patient, clear on
 * Location), so targets are grouped by the blinding of the chained parameter.
 */
function chainClause(f: SearchFilter, ctx: Ctx): Sql {
  const chain = f.chain!;
  const t = ctx.alias === 't' ? 't2' : 't';
  const groups = new Map<boolean, string[]>();
  for (const type of chain.targetTypes) {
    const blinded = chain.filter.param.startsWith('_') ? false : isChainBlinded(type, chain.filter);
    groups.set(blinded, [...(groups.get(blinded) ?? []), type]);
  }
  const branches: Sql[] = [...groups].map(([blinded, types]) => {
    const compiled = compileFilter({ ...chain.filter, blinded }, { ...ctx, alias: t, resourceType: types[0]! });
    const inner = compiled.kind === 'sql' ? compiled.sql : inClause(compiled, t);
    const typeList = inList(`${t}.type`, types);
    if (!chain.access) return { sql: `(${typeList.sql} AND ${inner.sql})`, params: [...typeList.params, ...inner.params] };
    // Each target type with what the principal may see of it.
    const perType = types.map((type) => {
      const a = accessClause(chain.access![type] ?? false, { ...ctx, alias: t, resourceType: type });
      return { sql: `(${t}.type = ? AND ${a.sql})`, params: [type, ...a.params] };
    });
    return {
      sql: `(${inner.sql} AND (${perType.map((x) => x.sql).join(' OR ')}))`,
      params: [...inner.params, ...perType.flatMap((x) => x.params)],
    };
  });
  // Targets first (few, found through their own index), then the references to them.
  const ref = referenceParams(ctx.resourceType, [f.param]);
  const param = paramSql(ref.params, ref.masks, 'r.param');
  const sql = `${ctx.alias}.pk IN (SELECT r.res FROM ${indexTable('reference')} r WHERE ${param.sql} AND (r.target_id, r.target_type) IN `
    + `(SELECT ${t}.id, ${t}.type FROM resource_current ${t} WHERE ${t}.deleted = 0 AND (${branches.map((b) => b.sql).join(' OR ')})))`;
  return { sql, params: [...param.params, ...branches.flatMap((b) => b.params)] };
}

/** A principal's access condition as SQL on the row `ctx.alias` (of type `ctx.resourceType`). */
export function accessClause(a: AccessCondition, ctx: Ctx): Sql {
  if (a === true) return { sql: '1', params: [] };
  if (a === false) return { sql: '0', params: [] };
  if ('and' in a || 'or' in a) {
    const list = 'and' in a ? a.and : a.or;
    if (list.length === 0) return { sql: 'and' in a ? '1' : '0', params: [] };
    const parts = list.map((x) => accessClause(x, ctx));
    return { sql: parts.map((p) => `(${p.sql})`).join('and' in a ? ' AND ' : ' OR '), params: parts.flatMap((p) => p.params) };
  }
  if ('not' in a) {
    const inner = accessClause(a.not, ctx);
    return { sql: `NOT (${inner.sql})`, params: inner.params };
  }
  if ('ids' in a) return valueList(`${ctx.alias}.id`, a.ids);
  if ('compartment' in a || 'outside' in a) {
    const inside = 'compartment' in a;
    const { patients, params } = inside ? a.compartment : a.outside;
    if (params.length === 0 || (inside && patients.length === 0)) return { sql: '0', params: [] };
    const p = referenceParamSql(ctx.resourceType, params, '+x.param');
    const targets = patients.length ? valueList('x.target_id', patients) : { sql: '0', params: [] };
    return {
      sql: `EXISTS (SELECT 1 FROM ${indexTable('reference')} x WHERE x.res = ${ctx.alias}.pk AND ${p.sql} AND x.target_type = 'Patient' AND ${inside ? '' : 'NOT '}(${targets.sql}))`,
      params: [...p.params, ...targets.params],
    };
  }
  const f = compileFilter(a.filter, ctx);
  return f.kind === 'sql' ? f.sql : existsClause(f, ctx.alias);
}

/** `column IN (...)`; long lists as one JSON parameter (SQLite caps the parameters of a statement). */
export function valueList(column: string, values: readonly string[]): Sql {
  if (values.length <= 64) return inList(column, values);
  return { sql: `${column} IN (SELECT value FROM json_each(?))`, params: [JSON.stringify(values)] };
}

function isChainBlinded(type: string, filter: SearchFilter): boolean {
  if (filter.modifier === 'identifier') return true;
  if (filter.modifier === 'text') return isParamTextBlinded(type, filter.param);
  return isParamBlinded(type, filter.param);
}

// ---- sort ----

const SORT_COLUMNS: Partial<Record<SearchParamType, { kind: IndexKind; asc: string; desc: string }>> = {
  token: { kind: 'token', asc: 'MIN(code)', desc: 'MAX(code)' },
  string: { kind: 'string', asc: 'MIN(value)', desc: 'MAX(value)' },
  // By the start of each value in both directions (as HAPI does): a resource with one narrow date
  // then sorts by its dlo, which lets a page walk the (key, dlo, res) indexes in date order.
  date: { kind: 'date', asc: 'MIN(lo)', desc: 'MAX(lo)' },
  number: { kind: 'number', asc: 'MIN(value)', desc: 'MAX(value)' },
  quantity: { kind: 'quantity', asc: 'MIN(value)', desc: 'MAX(value)' },
  reference: { kind: 'reference', asc: "MIN(COALESCE(target_type || '/' || target_id, url))", desc: "MAX(COALESCE(target_type || '/' || target_id, url))" },
  uri: { kind: 'uri', asc: 'MIN(value)', desc: 'MAX(value)' },
};

/** One `_sort` rule as an expression on the row; `nullable`: resources without a value (they sort last). */
export interface OrderTerm extends Sql { descending: boolean; nullable: boolean }

export function orderTerms(query: SearchQuery, alias: string): OrderTerm[] {
  return query.sort.map((rule) => {
    if (rule.code === '_id') return { sql: `${alias}.id`, params: [], descending: rule.descending, nullable: false };
    if (rule.code === '_lastUpdated') return { sql: `${alias}.last_updated`, params: [], descending: rule.descending, nullable: false };
    return { ...sortExpression(query.resourceType, rule.code, rule.descending, alias), descending: rule.descending, nullable: true };
  });
}

/** ORDER BY for the _sort rules; resources without a value sort last; ties by pk, in the first rule's direction. */
export function joinTerms(terms: OrderTerm[], alias: string, pkDescending = terms[0]?.descending ?? false): { orderBy: string; params: unknown[] } {
  const parts = terms.map((t) => `${t.sql} ${t.descending ? 'DESC' : 'ASC'}${t.nullable ? ' NULLS LAST' : ''}`);
  parts.push(`${alias}.pk ${pkDescending ? 'DESC' : 'ASC'}`);
  return { orderBy: parts.join(', '), params: terms.flatMap((t) => t.params) };
}

/**
 * The rows after `at` in the order (terms..., pk), nulls last: for each term, "equal on every
 * earlier term and beyond on this one", then "equal on all and beyond on pk".
 */
export function afterClause(terms: OrderTerm[], at: SearchPosition, pk: string, pkDescending = false): Sql {
  if (at.keys.length !== terms.length) throw badRequest('The paging cursor does not fit this search\'s sort order');
  const alternatives: Sql[] = [];
  const equal: Sql[] = [];
  terms.forEach((t, i) => {
    const key = at.keys[i] ?? null;
    if (key !== null) {
      const op = t.descending ? '<' : '>';
      const beyond = t.nullable ? `(${t.sql} ${op} ? OR ${t.sql} IS NULL)` : `${t.sql} ${op} ?`;
      alternatives.push(allOf([...equal, { sql: beyond, params: t.nullable ? [...t.params, key, ...t.params] : [...t.params, key] }]));
      equal.push({ sql: `${t.sql} = ?`, params: [...t.params, key] });
    } else {
      // Nothing sorts after a missing value but other missing values (by pk).
      equal.push({ sql: `${t.sql} IS NULL`, params: t.params });
    }
  });
  alternatives.push(allOf([...equal, { sql: `${pk} ${pkDescending ? '<' : '>'} ?`, params: [at.pk] }]));
  return { sql: alternatives.map((a) => `(${a.sql})`).join(' OR '), params: alternatives.flatMap((a) => a.params) };
}

function allOf(parts: Sql[]): Sql {
  return { sql: parts.map((p) => `(${p.sql})`).join(' AND '), params: parts.flatMap((p) => p.params) };
}

function sortExpression(resourceType: string, code: string, descending: boolean, alias: string): Sql {
  const sp = getTypeSearchParameters(resourceType)[code];
  const col = sp ? SORT_COLUMNS[sp.type as SearchParamType] : undefined;
  if (!col) throw badRequest(`Cannot sort by '${code}' on ${resourceType}`);
  if (isParamBlinded(resourceType, code)) throw notSupported(`Cannot sort by '${code}': it is blinded (stored as keyed hashes)`);
  const table = indexTable(col.kind);
  const stored = tableParams(table, resourceType, storedParams(resourceType, code));
  // `+param`: seek on the (res, n) key, as in existsClause.
  const param = paramSql(stored.params, stored.masks, '+param');
  return { sql: `(SELECT ${descending ? col.desc : col.asc} FROM ${table} WHERE res = ${alias}.pk AND ${param.sql})`, params: param.params };
}
