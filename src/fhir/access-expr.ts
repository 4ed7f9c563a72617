import { isParamBlinded, type AccessCondition, type SearchFilter } from '../store/index.js';
import { getPatientCompartmentParams, getTypeSearchParameters } from './definitions.js';
import { isCompartmentType } from './access-constraints.js';
import { parseSearch } from './search/parse.js';

/**
 * What a principal may see of patient data, as plain data (it crosses into search worker
 * threads), independent of resource type: consent compiles to this, and it is specialized into
 * a store AccessCondition for each type a query touches (searched type, chain targets, includes).
 * It applies to types in the Patient compartment only; other types (Practitioner, Medication,
 * ...) are not patient data.
 */
export type AccessExpr =
  | boolean
  | { and: AccessExpr[] }
  | { or: AccessExpr[] }
  | { not: AccessExpr }
  /** The resource is of one of these types. */
  | { types: string[] }
  /** The resource is in the compartment of one of these patients (a Patient: is one of them). */
  | { patients: string[] }
  /**
   * The resource is in the compartment of some patient not among these (a Patient: is not one of
   * them): what makes a resource of several patients need every one's permission.
   */
  | { otherPatients: string[] }
  /** The resource's `code` matches one of these tokens (system|code). */
  | { code: string[] }
  /** The resource's meta.security matches one of these tokens (system|code). */
  | { security: string[] }
  /** The resource is one of these ("Type/id"). */
  | { refs: string[] }
  /**
   * The resource's clinical date overlaps [start, end] (either open). `unknown` is the answer for
   * resources without one (and types that have none): true where a deny must stay on the safe side.
   */
  | { date: { start?: string; end?: string }; unknown: boolean };

/** The search parameter that carries a type's clinical date, if any. */
const CLINICAL_DATE: Record<string, string> = { Condition: 'onset-date' };

export function clinicalDateParam(type: string): string | undefined {
  const name = CLINICAL_DATE[type] ?? 'date';
  // A blinded date (an identifying one) supports equality only: no ranges, so no dataPeriod.
  return getTypeSearchParameters(type)[name] && !isParamBlinded(type, name) ? name : undefined;
}

function filterOf(type: string, name: string, value: string): SearchFilter | undefined {
  if (!getTypeSearchParameters(type)[name.split(':')[0]!]) return undefined;
  return parseSearch(type, [[name, value]], { strict: true, defaultCount: 1, maxCount: 1 }).query.filters[0];
}

const escapeValue = (v: string) => v.replace(/[\\,$]/g, (c) => `\\${c}`);

export const OBSERVATION_CATEGORY_SYSTEM = 'http://terminology.hl7.org/CodeSystem/observation-category';

/** Resources whose search parameter `name` matches one of the tokens (false when the type has no such parameter). */
function tokenCondition(type: string, name: string, tokens: string[]): AccessCondition {
  if (tokens.length === 0) return false;
  const f = filterOf(type, name, tokens.map(escapeValue).join(','));
  return f ? { filter: f } : false;
}

/**
 * The store condition for resources of `type`, or undefined when the type is not patient data
 * (no consent applies). Atoms a type cannot have fold to constants, so SQL stays small.
 */
export function accessConditionFor(expr: AccessExpr, type: string): AccessCondition | undefined {
  if (!isCompartmentType(type)) return undefined;
  return simplify(specialize(expr, type));
}

function specialize(e: AccessExpr, type: string): AccessCondition {
  if (typeof e === 'boolean') return e;
  if ('and' in e) return { and: e.and.map((x) => specialize(x, type)) };
  if ('or' in e) return { or: e.or.map((x) => specialize(x, type)) };
  if ('not' in e) return { not: specialize(e.not, type) };
  if ('types' in e) return e.types.includes(type);
  if ('patients' in e) {
    if (type === 'Patient') return { ids: e.patients };
    return { compartment: { patients: e.patients, params: getPatientCompartmentParams(type) } };
  }
  if ('otherPatients' in e) {
    if (type === 'Patient') return { not: { ids: e.otherPatients } };
    // An AuditEvent of several patients is shown to each of them without the others' part
    // (audit-view.ts), not withheld; principals limited by consent never see the trail.
    if (type === 'AuditEvent') return false;
    return { outside: { patients: e.otherPatients, params: getPatientCompartmentParams(type) } };
  }
  if ('refs' in e) {
    const ids = e.refs.filter((r) => r.startsWith(`${type}/`)).map((r) => r.slice(type.length + 1));
    return ids.length ? { ids } : false;
  }
  if ('security' in e) return tokenCondition(type, '_security', e.security);
  if ('code' in e) {
    // A Consent code is "found in an instance" (R4 ConsentProvision.code): an Observation
    // category code (vital-signs, laboratory, ...) is found in its category, any other in its code.
    const categories = e.code.filter((t) => t.startsWith(`${OBSERVATION_CATEGORY_SYSTEM}|`));
    const codes = e.code.filter((t) => !categories.includes(t));
    const parts = [tokenCondition(type, 'code', codes), tokenCondition(type, 'category', categories)].filter((c) => c !== false);
    return parts.length === 0 ? false : parts.length === 1 ? parts[0]! : { or: parts };
  }
  const param = clinicalDateParam(type);
  if (!param) return e.unknown;
  const parts: AccessCondition[] = [];
  if (e.date.start) parts.push({ filter: filterOf(type, param, `ge${e.date.start}`)! });
  if (e.date.end) parts.push({ filter: filterOf(type, param, `le${e.date.end}`)! });
  const within: AccessCondition = { and: parts };
  return e.unknown ? { or: [within, { filter: filterOf(type, `${param}:missing`, 'true')! }] } : within;
}

/** Folds constants out of and/or/not. */
export function simplify(c: AccessCondition): AccessCondition {
  if (typeof c === 'boolean') return c;
  if ('not' in c) {
    const inner = simplify(c.not);
    return typeof inner === 'boolean' ? !inner : { not: inner };
  }
  if ('and' in c || 'or' in c) {
    const isAnd = 'and' in c;
    const out: AccessCondition[] = [];
    for (const x of (isAnd ? c.and : c.or).map(simplify)) {
      if (x === isAnd) continue;
      if (x === !isAnd) return !isAnd;
      out.push(x);
    }
    if (out.length === 0) return isAnd;
    if (out.length === 1) return out[0]!;
    return isAnd ? { and: out } : { or: out };
  }
  return c;
}
