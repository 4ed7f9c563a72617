import type { AccessCondition, IndexRows, SearchFilter } from '../store/index.js';
import { normalizeString, parseDateRange, splitToken, storedParams } from '../store/index.js';

/**
 * Decides an access condition on one version's own index rows, in memory: old versions have no
 * index rows in the store (those describe the current version), yet each version must be judged
 * on its own content (its patients, labels, codes, dates).
 *
 * Three-valued: `undefined` is a filter this evaluator cannot decide (a blinded value, a chain,
 * a modifier it does not know). It stays undecided through `not`, and the caller treats an
 * undecided answer as "not visible", so what cannot be decided is never released.
 */
export function rowsSatisfy(c: AccessCondition, type: string, id: string, rows: IndexRows): boolean | undefined {
  if (typeof c === 'boolean') return c;
  if ('and' in c) {
    let out: boolean | undefined = true;
    for (const x of c.and) {
      const v = rowsSatisfy(x, type, id, rows);
      if (v === false) return false;
      if (v === undefined) out = undefined;
    }
    return out;
  }
  if ('or' in c) {
    let out: boolean | undefined = false;
    for (const x of c.or) {
      const v = rowsSatisfy(x, type, id, rows);
      if (v === true) return true;
      if (v === undefined) out = undefined;
    }
    return out;
  }
  if ('not' in c) {
    const v = rowsSatisfy(c.not, type, id, rows);
    return v === undefined ? undefined : !v;
  }
  if ('ids' in c) return c.ids.includes(id);
  if ('compartment' in c || 'outside' in c) {
    const inside = 'compartment' in c;
    const { patients, params } = inside ? c.compartment : c.outside;
    return rows.reference.some((r) => r.targetType === 'Patient' && r.targetId !== null && params.includes(r.param) && patients.includes(r.targetId) === inside);
  }
  return filterMatches(c.filter, type, id, rows);
}

function filterMatches(f: SearchFilter, type: string, id: string, rows: IndexRows): boolean | undefined {
  if (f.chain || f.blinded) return undefined;
  if (f.param === '_id') {
    const hit = f.values.some((v) => v.value === id);
    return f.modifier === 'not' ? !hit : f.modifier === undefined ? hit : undefined;
  }
  if (f.param === '_lastUpdated') return undefined;
  const params = new Set(storedParams(type, f.param));
  const kind = f.type;
  if (f.modifier === 'missing') {
    const list = kind === 'token' || kind === 'string' || kind === 'date' || kind === 'reference' || kind === 'uri' ? rows[kind] : undefined;
    if (!list) return undefined;
    const present = list.some((r) => params.has(r.param));
    return f.values.some((v) => (v.value === 'true') === !present);
  }
  switch (kind) {
    case 'token': {
      if (f.modifier !== undefined && f.modifier !== 'not') return undefined;
      const hit = f.values.some((v) => rows.token.some((r) => params.has(r.param) && tokenMatches(v.value, r.system, r.code)));
      return f.modifier === 'not' ? !hit : hit;
    }
    case 'reference': {
      if (f.modifier !== undefined) return undefined;
      return f.values.some((v) => rows.reference.some((r) => params.has(r.param) && referenceMatches(v.value, r.targetType, r.targetId, r.url)));
    }
    case 'date': {
      if (f.modifier !== undefined) return undefined;
      let out: boolean | undefined = false;
      for (const v of f.values) {
        for (const r of rows.date) {
          if (!params.has(r.param)) continue;
          const m = dateMatches(v.prefix, v.value, r.lo, r.hi);
          if (m === true) return true;
          if (m === undefined) out = undefined;
        }
      }
      return out;
    }
    case 'string': {
      if (f.modifier !== undefined && f.modifier !== 'exact') return undefined;
      return f.values.some((v) => rows.string.some((r) => params.has(r.param) && (f.modifier === 'exact' ? r.exact === v.value : r.value.startsWith(normalizeString(v.value)))));
    }
    default:
      return undefined;
  }
}

function tokenMatches(value: string, system: string | null, code: string | null): boolean {
  const t = splitToken(value);
  if (t.system === undefined) return code === t.code;
  if (t.system === '') return code === t.code && system === null;
  if (t.code === '') return system === t.system;
  return code === t.code && system === t.system;
}

function referenceMatches(value: string, type: string | null, id: string | null, url: string | null): boolean {
  if (url !== null && url === value) return true;
  const parts = value.split('/');
  if (parts.length === 1) return id === value;
  return type === parts[parts.length - 2] && id === parts[parts.length - 1];
}

/** As the store's date condition: target [lo, hi] against the search value's range [a, b]. */
function dateMatches(prefix: string, value: string, lo: number, hi: number): boolean | undefined {
  const r = parseDateRange(value);
  if (!r) return undefined;
  const [a, b] = r;
  switch (prefix) {
    case 'eq': return lo >= a && hi <= b;
    case 'ne': return lo < a || hi > b;
    case 'gt': return hi > b;
    case 'lt': return lo < a;
    case 'ge': return hi > b || (lo >= a && hi <= b);
    case 'le': return lo < a || (lo >= a && hi <= b);
    case 'sa': return lo > b;
    case 'eb': return hi < a;
    default: return undefined;
  }
}
