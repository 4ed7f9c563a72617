import type { SearchParameter } from '@medplum/fhirtypes';
import { isParamBlinded, isParamTextBlinded } from '../../store/index.js';
import { numberRange, parseDateRange } from '../../store/indexer.js';
import type { Prefix, SearchFilter, SearchParamType, SearchQuery, SortRule } from '../../store/types.js';
import { getTypeSearchParameters, isResourceType } from '../definitions.js';
import { badRequest, FhirError, notSupported } from '../outcome.js';

/**
 * Bounds on what one search compiles to. Repeated parameters are ANDed and a parameter's values
 * ORed in the SQL, and SQLite refuses an expression tree deeper than 1,000 ("Expression tree is
 * too large"): 1,000 repetitions of one parameter, or 500 values in one, reached it.
 */
export const MAX_SEARCH_FILTERS = 100;
/** Comma-separated (ORed) values of one parameter; `_id` lists compile to an IN list and are exempt. */
export const MAX_PARAMETER_VALUES = 100;

export interface IncludeSpec {
  sourceType: string;
  /** Reference parameter code on sourceType, or '*' for all of them. */
  param: string;
  targetType?: string;
  iterate: boolean;
}

export type SummaryMode = 'true' | 'count' | 'data' | 'text' | 'false';

export interface ParsedSearch {
  query: SearchQuery;
  include: IncludeSpec[];
  revinclude: IncludeSpec[];
  elements?: string[];
  summary?: SummaryMode;
  /** Parameters that were ignored (unknown or unsupported); the caller reports them. */
  unknown: string[];
  /** `_cursor`: where the page starts, as a `next` link of this search gave it (opened by search/cursor.ts). */
  cursor?: string;
}

export interface ParseOptions {
  strict: boolean;
  defaultCount: number;
  maxCount: number;
  /** _total when the request does not say; defaults to 'accurate'. */
  defaultTotal?: SearchQuery['total'];
}

const PREFIXES = new Set<Prefix>(['eq', 'ne', 'gt', 'lt', 'ge', 'le', 'sa', 'eb', 'ap']);
const PREFIXED_TYPES = new Set<SearchParamType>(['date', 'number', 'quantity']);
const SORTABLE_TYPES = new Set<SearchParamType>(['token', 'string', 'date', 'number', 'quantity', 'reference', 'uri']);
const IGNORED = new Set(['_format', '_pretty']);
const UNSUPPORTED = new Set(['_has', '_list', '_query', '_filter', '_contained', '_containedType', '_type']);
const FREE_TEXT = new Set(['_text', '_content']);
const SUMMARY = new Set<SummaryMode>(['true', 'count', 'data', 'text', 'false']);
const TOTAL = new Set(['none', 'estimate', 'accurate']);

const MODIFIERS: Record<string, Set<string>> = {
  token: new Set(['missing', 'not', 'text']),
  string: new Set(['missing', 'exact', 'contains']),
  date: new Set(['missing']),
  number: new Set(['missing']),
  quantity: new Set(['missing']),
  reference: new Set(['missing', 'identifier']),
  uri: new Set(['missing', 'below', 'above']),
};

/** Parses a FHIR R4 search (query parameters in order) on one resource type into a SearchQuery. */
export function parseSearch(resourceType: string, params: Array<[string, string]>, opts: ParseOptions): ParsedSearch {
  const out: ParsedSearch = {
    query: { resourceType, filters: [], sort: [], count: opts.defaultCount, offset: 0, total: opts.defaultTotal ?? 'accurate' },
    include: [],
    revinclude: [],
    unknown: [],
  };
  for (const [name, value] of params) parseOne(resourceType, name, value, opts, out);
  return out;
}

function parseOne(resourceType: string, name: string, value: string, opts: ParseOptions, out: ParsedSearch): void {
  if (IGNORED.has(name)) return;
  const base = name.split(/[:.]/, 1)[0]!;
  switch (base) {
    case '_count': return void (out.query.count = Math.min(parseNonNegativeInt(name, value), opts.maxCount));
    case '_offset': return void (out.query.offset = parseNonNegativeInt(name, value));
    case '_cursor':
      if (out.cursor !== undefined) throw badRequest('_cursor may be given once');
      return void (out.cursor = value);
    case '_sort': return void (out.query.sort = parseSort(resourceType, value));
    case '_total': return void (out.query.total = parseEnum(name, value, TOTAL) as SearchQuery['total']);
    case '_summary': return void (out.summary = parseEnum(name, value, SUMMARY) as SummaryMode);
    case '_elements': return void (out.elements = value.split(',').map((s) => s.trim()).filter(Boolean));
    case '_include': return void out.include.push(...parseIncludes(resourceType, name, value, false));
    case '_revinclude': return void out.revinclude.push(...parseIncludes(resourceType, name, value, true));
  }
  if (FREE_TEXT.has(base)) return ignore(name, `Search parameter '${base}' is not supported: narrative, notes and other free text of resources are not indexed (they may describe a patient)`, opts, out);
  if (UNSUPPORTED.has(base)) return ignore(name, `Search parameter '${base}' is not supported`, opts, out);
  const filter = parseFilter(resourceType, name, value);
  if (typeof filter === 'string') return ignore(name, filter, opts, out);
  if (out.query.filters.length >= MAX_SEARCH_FILTERS) {
    throw new FhirError(400, 'too-costly', `A search may have at most ${MAX_SEARCH_FILTERS} search parameters (each repetition and chain counts); this one has more`);
  }
  out.query.filters.push(filter);
}

function ignore(name: string, message: string, opts: ParseOptions, out: ParsedSearch): void {
  if (opts.strict) throw notSupported(message);
  out.unknown.push(name);
}

function parseNonNegativeInt(name: string, value: string): number {
  if (!/^\d{1,9}$/.test(value.trim())) throw badRequest(`Parameter '${name}' must be a non-negative integer, got '${value}'`);
  return Number(value);
}

function parseEnum(name: string, value: string, allowed: Set<string>): string {
  if (!allowed.has(value)) throw badRequest(`Parameter '${name}' must be one of ${[...allowed].join(', ')}, got '${value}'`);
  return value;
}

// ---- filters ----

/** A SearchFilter, or a message saying why the parameter is ignored (unknown / unsupported). */
function parseFilter(resourceType: string, name: string, value: string): SearchFilter | string {
  const dot = name.indexOf('.');
  const head = dot < 0 ? name : name.slice(0, dot);
  const [code, modifier, ...rest] = head.split(':') as [string, string | undefined, ...string[]];
  if (rest.length) throw badRequest(`Malformed search parameter name '${name}'`);
  if (code === '_id') return idFilter(name, modifier, value, dot);
  if (code === '_lastUpdated') return lastUpdatedFilter(name, modifier, value, dot);
  const sp = getTypeSearchParameters(resourceType)[code];
  if (!sp || code === '_compartment') return `Unknown search parameter '${code}' on ${resourceType}`;
  const type = sp.type as SearchParamType;
  if (type === 'composite' || type === 'special') return `Search parameter '${code}' (${type}) is not supported`;
  if (dot >= 0) return chainFilter(resourceType, sp, code, modifier, name.slice(dot + 1), value);
  return valueFilter(resourceType, code, type, modifier, value, sp);
}

function idFilter(name: string, modifier: string | undefined, value: string, dot: number): SearchFilter {
  if (dot >= 0) throw badRequest(`Parameter '_id' cannot be chained`);
  if (modifier && modifier !== 'not') throw badRequest(`Unknown modifier ':${modifier}' on '_id'`);
  const values = splitValues(value).map((v) => ({ prefix: 'eq' as Prefix, value: v }));
  if (values.some((v) => !/^[A-Za-z0-9\-.]{1,64}$/.test(v.value))) throw badRequest(`Parameter '${name}' has an invalid id in '${value}'`);
  return { param: '_id', type: 'token', ...(modifier ? { modifier } : {}), values, blinded: false };
}

function lastUpdatedFilter(name: string, modifier: string | undefined, value: string, dot: number): SearchFilter {
  if (dot >= 0 || modifier) throw badRequest(`Parameter '${name}' takes no modifier or chain`);
  return { param: '_lastUpdated', type: 'date', values: parseValues('_lastUpdated', 'date', value, false), blinded: false };
}

function valueFilter(resourceType: string, code: string, type: SearchParamType, modifier: string | undefined, value: string, sp: SearchParameter): SearchFilter {
  let blinded = isParamBlinded(resourceType, code);
  if (modifier === 'missing') {
    if (value !== 'true' && value !== 'false') throw badRequest(`Parameter '${code}:missing' must be true or false, got '${value}'`);
    return { param: code, type, modifier, values: [{ prefix: 'eq', value }], blinded };
  }
  if (modifier !== undefined) checkModifier(resourceType, code, type, modifier, sp);
  // :text reads the display/text rows, blinded on patient data even where the codes are clear.
  if (modifier === 'text') blinded = isParamTextBlinded(resourceType, code);
  if (modifier === 'identifier') blinded = true;
  if (blinded && modifier === 'contains') throw notSupported(`Parameter '${code}' is blinded (stored as keyed hashes to protect identity), so ':contains' is not supported; use the default starts-with search or ':exact'`);
  const valueType = modifier === 'identifier' ? 'token' : modifier === 'text' ? 'string' : type;
  const values = parseValues(code, valueType, value, blinded && type === 'date');
  return { param: code, type, ...(modifier ? { modifier } : {}), values, blinded };
}

function checkModifier(resourceType: string, code: string, type: SearchParamType, modifier: string, sp: SearchParameter): void {
  if (MODIFIERS[type]?.has(modifier)) return;
  if (type === 'reference' && isResourceType(modifier)) {
    const targets = sp.target ?? [];
    if (targets.length && !targets.includes(modifier as never)) throw badRequest(`Parameter '${code}' on ${resourceType} cannot refer to ${modifier}`);
    return;
  }
  if (['in', 'not-in', 'above', 'below', 'of-type', 'type', 'iterate'].includes(modifier)) throw notSupported(`Modifier ':${modifier}' on '${code}' is not supported`);
  throw badRequest(`Unknown modifier ':${modifier}' on parameter '${code}' (${type})`);
}

function chainFilter(resourceType: string, sp: SearchParameter, code: string, modifier: string | undefined, chained: string, value: string): SearchFilter {
  if (sp.type !== 'reference') throw badRequest(`Parameter '${code}' is not a reference and cannot be chained`);
  if (chained.includes('.')) throw notSupported(`Chained parameter '${code}.${chained}' is more than one level deep, which is not supported`);
  const [chainCode, chainModifier, ...rest] = chained.split(':') as [string, string | undefined, ...string[]];
  if (rest.length) throw badRequest(`Malformed chained parameter '${code}.${chained}'`);
  let candidates: string[] = (sp.target ?? []) as string[];
  if (modifier !== undefined) {
    checkModifier(resourceType, code, 'reference', modifier, sp);
    if (!isResourceType(modifier)) throw badRequest(`Only a resource type modifier may precede a chain, got '${code}:${modifier}'`);
    candidates = [modifier];
  }
  const targetTypes = candidates.filter((t) => chainCode === '_id' || chainCode === '_lastUpdated' || getTypeSearchParameters(t)[chainCode]);
  if (targetTypes.length === 0) throw badRequest(`Chained parameter '${chainCode}' is not defined on any target of '${code}' (${candidates.join(', ')})`);
  const filters = targetTypes.map((t) => parseFilter(t, chainModifier ? `${chainCode}:${chainModifier}` : chainCode, value));
  const first = filters[0]!;
  for (const f of filters) {
    if (typeof f === 'string') throw badRequest(f);
    if (f.type !== (first as SearchFilter).type) throw badRequest(`Chained parameter '${chainCode}' has different types on ${targetTypes.join(', ')}; add a type modifier, e.g. '${code}:${targetTypes[0]}.${chainCode}'`);
  }
  // Blinding can differ per target type; the SQL compiler re-derives it per type, this flag is "any".
  const filter = { ...(first as SearchFilter), blinded: (filters as SearchFilter[]).some((f) => f.blinded) };
  return { param: code, type: 'reference', chain: { targetTypes, filter }, values: [], blinded: false };
}

// ---- values ----

/** Splits on commas not escaped with a backslash; unescapes `\,` only (other escapes are type-specific). */
export function splitValues(value: string): string[] {
  const out: string[] = [];
  let cur = '';
  for (let i = 0; i < value.length; i++) {
    const ch = value[i]!;
    if (ch === '\\' && value[i + 1] === ',') {
      cur += ',';
      i++;
    } else if (ch === ',') {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

function parseValues(code: string, type: SearchParamType, value: string, blindedDate: boolean): SearchFilter['values'] {
  const parts = splitValues(value);
  if (parts.length > MAX_PARAMETER_VALUES) {
    throw new FhirError(400, 'too-costly', `Parameter '${code}' may have at most ${MAX_PARAMETER_VALUES} comma-separated values; it has ${parts.length}`);
  }
  if (parts.some((p) => p === '')) throw badRequest(`Parameter '${code}' has an empty value in '${value}'`);
  return parts.map((raw) => {
    const { prefix, rest } = PREFIXED_TYPES.has(type) ? splitPrefix(code, raw) : { prefix: 'eq' as Prefix, rest: raw };
    checkValue(code, type, prefix, rest, blindedDate);
    return { prefix, value: rest };
  });
}

function splitPrefix(code: string, raw: string): { prefix: Prefix; rest: string } {
  const m = /^([a-z]{2})(?=[-+.\d])/.exec(raw);
  if (!m) return { prefix: 'eq', rest: raw };
  if (!PREFIXES.has(m[1] as Prefix)) throw badRequest(`Unknown prefix '${m[1]}' in '${raw}' for parameter '${code}'`);
  return { prefix: m[1] as Prefix, rest: raw.slice(2) };
}

function checkValue(code: string, type: SearchParamType, prefix: Prefix, value: string, blindedDate: boolean): void {
  if (type === 'date') {
    if (!parseDateRange(value)) throw badRequest(`Parameter '${code}' has an invalid date '${value}' (expected YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss][Z|±hh:mm])`);
    if (blindedDate && prefix !== 'eq') throw notSupported(`Parameter '${code}' is blinded (stored as keyed hashes to protect identity), so only equality is supported, not '${prefix}'`);
    if (blindedDate && !/^\d{4}(-\d{2}(-\d{2})?)?$/.test(value)) throw notSupported(`Parameter '${code}' is blinded; search it by YYYY, YYYY-MM or YYYY-MM-DD`);
  } else if (type === 'number') {
    if (!numberRange(value)) throw badRequest(`Parameter '${code}' has an invalid number '${value}'`);
  } else if (type === 'quantity') {
    const num = value.split('|', 1)[0]!;
    if (!numberRange(num)) throw badRequest(`Parameter '${code}' has an invalid quantity '${value}' (expected number[|system|code])`);
  }
}

// ---- _sort / _include ----

function parseSort(resourceType: string, value: string): SortRule[] {
  return value.split(',').map((s) => s.trim()).filter(Boolean).map((item) => {
    const descending = item.startsWith('-');
    const code = descending ? item.slice(1) : item;
    if (code === '_id' || code === '_lastUpdated') return { code, descending };
    const sp = getTypeSearchParameters(resourceType)[code];
    if (!sp || code === '_compartment') throw badRequest(`Cannot sort by '${code}': not a search parameter of ${resourceType}`);
    if (!SORTABLE_TYPES.has(sp.type as SearchParamType)) throw badRequest(`Cannot sort by '${code}': ${sp.type} parameters are not sortable`);
    if (isParamBlinded(resourceType, code)) throw notSupported(`Cannot sort by '${code}': it is blinded (stored as keyed hashes to protect identity), so its order is not known to the server`);
    return { code, descending };
  });
}

function parseIncludes(resourceType: string, name: string, value: string, reverse: boolean): IncludeSpec[] {
  const modifier = name.split(':')[1];
  if (modifier !== undefined && modifier !== 'iterate' && modifier !== 'recurse') throw badRequest(`Unknown modifier on '${name}'`);
  const iterate = modifier !== undefined;
  return value.split(',').filter(Boolean).map((item) => {
    if (item === '*') return { sourceType: resourceType, param: '*', iterate };
    const [sourceType, param, targetType, ...rest] = item.split(':');
    if (!sourceType || !param || rest.length) throw badRequest(`Parameter '${name}' must be Type:param[:targetType], got '${item}'`);
    if (!isResourceType(sourceType)) throw badRequest(`Parameter '${name}': unknown resource type '${sourceType}'`);
    if (!reverse && sourceType !== resourceType) throw badRequest(`Parameter '${name}': '${item}' does not start with the searched type ${resourceType}`);
    if (param !== '*') {
      const sp = getTypeSearchParameters(sourceType)[param];
      if (!sp || sp.type !== 'reference') throw badRequest(`Parameter '${name}': '${param}' is not a reference parameter of ${sourceType}`);
    }
    if (targetType !== undefined && !isResourceType(targetType)) throw badRequest(`Parameter '${name}': unknown target type '${targetType}'`);
    return { sourceType, param, ...(targetType ? { targetType } : {}), iterate };
  });
}
