import { getSearchParameterDetails, toTypedValue, type TypedValue } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';
import { getTypeSearchParameters, isResourceType } from '../fhir/definitions.js';
import { normalizeString, type Blinder } from './blind.js';
import { compileDirectPaths, evalDirectPaths, type DirectPath } from './direct-paths.js';
import { isBlinded, isTextBlinded, paramDetails } from './blinding-policy.js';
import { isUnionParam } from './param-aliases.js';
import type { IndexRows, SearchParamType } from './types.js';

/** Parameters that are columns of resource_current, or Medplum-internal, and never get index rows. */
const NOT_INDEXED = new Set(['_id', '_lastUpdated', '_compartment']);
const INDEXED_TYPES = new Set<SearchParamType>(['token', 'string', 'date', 'number', 'quantity', 'reference', 'uri']);

export const MAX_TIME = Number.MAX_SAFE_INTEGER;
export const MIN_TIME = -Number.MAX_SAFE_INTEGER;

interface Evaluable {
  eval(context: { variables: Record<string, TypedValue> }, input: TypedValue[]): TypedValue[];
}

interface ParamPlan {
  code: string;
  type: SearchParamType;
  expr: Evaluable;
  blinded: boolean;
  /** Whether the derived `<code>:text` string rows of a token parameter are blinded. */
  textBlinded: boolean;
  /** Top-level elements the expression can read; null when it may yield values without any of them. */
  roots: string[] | null;
  /** The expression as plain property paths, when it is that simple (then FHIRPath is not run). */
  direct: DirectPath[] | null;
}

export interface Indexer {
  extract(resource: Resource): IndexRows;
}

const plans = new Map<string, ParamPlan[]>();

function planFor(resourceType: string): ParamPlan[] {
  let plan = plans.get(resourceType);
  if (!plan) {
    plan = buildPlan(resourceType);
    plans.set(resourceType, plan);
  }
  return plan;
}

function buildPlan(resourceType: string): ParamPlan[] {
  const out: ParamPlan[] = [];
  for (const [code, sp] of Object.entries(getTypeSearchParameters(resourceType))) {
    const type = sp.type as SearchParamType;
    if (NOT_INDEXED.has(code) || !INDEXED_TYPES.has(type) || !sp.expression || isUnionParam(resourceType, code)) continue;
    const parsed = getSearchParameterDetails(resourceType, sp).parsedExpression;
    const blinded = isBlinded(resourceType, code, type, paramDetails(resourceType, code));
    const expression = parsed.toString();
    out.push({
      code, type, expr: parsed as Evaluable, blinded, textBlinded: type === 'token' && isTextBlinded(resourceType, blinded),
      roots: expressionRoots(expression, resourceType), direct: compileDirectPaths(resourceType, expression),
    });
  }
  return out;
}

const WHITELISTED_CALLS = /\.where\(\((?:resolve\(\) is \w+|system = '[\w-]+')\)\)|\.as\(\w+\)/g;

/**
 * Top-level element names a FHIRPath expression reads, when it is a plain union of paths rooted at
 * the resource (with `as` casts and simple where-filters). Evaluating FHIRPath is the bulk of
 * extraction cost and most parameters address absent elements, so this lets extract skip them.
 * Null for anything else (functions such as exists() can yield values from absent elements).
 */
export function expressionRoots(expression: string, resourceType: string): string[] | null {
  const plain = expression.replace(WHITELISTED_CALLS, '').replace(/ as \w+/g, '');
  if (!/^[\w.() |]+$/.test(plain) || /\w\(/.test(plain)) return null;
  const heads = plain.match(/(?<![.\w])[A-Za-z_]\w*/g) ?? [];
  if (heads.length === 0 || heads.some((h) => h !== resourceType)) return null;
  const roots = [...plain.matchAll(new RegExp(`\\b${resourceType}\\.(\\w+)`, 'g'))].map((m) => m[1]!);
  return roots.length === heads.length ? roots : null;
}

/** Top-level element names present on a resource; choice elements also under each camel-case stem (valueQuantity -> value). */
function presentRoots(resource: Resource): Set<string> {
  const out = new Set<string>();
  for (const key of Object.keys(resource)) {
    out.add(key);
    for (let i = 1; i < key.length; i++) {
      const c = key.charCodeAt(i);
      if (c >= 65 && c <= 90) out.add(key.slice(0, i));
    }
  }
  return out;
}

/** Builds index rows for a resource by evaluating its type's R4 SearchParameter expressions. */
export function createIndexer(blinder: Blinder, o: { fhirPathOnly?: boolean } = {}): Indexer {
  return {
    extract(resource: Resource): IndexRows {
      const rows = new RowSink(blinder);
      const typed = [toTypedValue(resource)];
      const context = { variables: { '%resource': typed[0], '%rootResource': typed[0] } };
      const present = presentRoots(resource);
      for (const plan of planFor(resource.resourceType)) {
        if (plan.roots && !plan.roots.some((r) => present.has(r))) continue;
        let values: TypedValue[];
        try {
          values = plan.direct && !o.fhirPathOnly ? evalDirectPaths(plan.direct, resource) : plan.expr.eval(context, typed);
        } catch {
          // A malformed element must not make the whole resource unwritable; validation reports it.
          continue;
        }
        for (const v of values) addValue(rows, plan, v);
      }
      return rows.rows;
    },
  };
}

function addValue(rows: RowSink, plan: ParamPlan, typed: TypedValue): void {
  // Primitives that carry extensions (_birthDate) arrive boxed (new String(...)).
  const v = typed.value instanceof String || typed.value instanceof Number || typed.value instanceof Boolean
    ? { type: typed.type, value: typed.value.valueOf() }
    : typed;
  switch (plan.type) {
    case 'token': return addToken(rows, plan, v);
    case 'string': return addString(rows, plan.code, plan.blinded, v);
    case 'date': return addDate(rows, plan, v);
    case 'number': return addNumber(rows, plan.code, v);
    case 'quantity': return addQuantity(rows, plan.code, v);
    case 'reference': return addReference(rows, plan.code, v);
    case 'uri': return addUri(rows, plan.code, v);
    default: return;
  }
}

/** Accumulates rows, dropping duplicates and blinding values as it goes. */
class RowSink {
  readonly rows: IndexRows = { token: [], string: [], date: [], number: [], quantity: [], reference: [], uri: [] };
  readonly #seen = new Set<string>();
  constructor(readonly blinder: Blinder) {}

  #first(key: string): boolean {
    if (this.#seen.has(key)) return false;
    this.#seen.add(key);
    return true;
  }

  token(param: string, system: string | null, code: string | null, blinded: boolean): void {
    if (code === null && system === null) return;
    const c = blinded && code !== null ? this.blinder.token(param, code) : code;
    if (this.#first(`t\0${param}\0${system}\0${c}`)) this.rows.token.push({ param, system, code: c });
  }

  string(param: string, value: string, blinded: boolean): void {
    if (!blinded) {
      const normalized = normalizeString(value);
      if (normalized && this.#first(`s\0${param}\0${value}`)) this.rows.string.push({ param, value: normalized, exact: value });
      return;
    }
    for (const v of this.blinder.stringValues(param, value)) this.blindedString(param, v);
  }

  /** The `<token>:text` row of a display or CodeableConcept text. */
  text(param: string, value: string, blinded: boolean): void {
    if (!blinded) return this.string(param, value, false);
    const t = this.blinder.text(value);
    if (!t) return;
    if (this.#first(`x\0${param}\0${t.value}`)) this.rows.string.push({ param, value: t.value, exact: null });
    if (this.#first(`T\0${t.value}`)) (this.rows.texts ??= []).push(t);
  }

  /** Blinded values embed the parameter in their MAC, so the value alone identifies the row. */
  blindedString(param: string, value: string): void {
    if (this.#first(value)) this.rows.string.push({ param, value, exact: null });
  }

  date(param: string, lo: number, hi: number): void {
    if (this.#first(`d\0${param}\0${lo}\0${hi}`)) this.rows.date.push({ param, lo, hi });
  }

  number(param: string, value: number, lo: number, hi: number): void {
    if (this.#first(`n\0${param}\0${value}\0${lo}`)) this.rows.number.push({ param, value, lo, hi });
  }

  quantity(param: string, q: { system: string | null; code: string | null; unit: string | null; value: number; lo: number; hi: number }): void {
    if (this.#first(`q\0${param}\0${q.system}\0${q.code}\0${q.unit}\0${q.value}\0${q.lo}`)) this.rows.quantity.push({ param, ...q });
  }

  reference(param: string, targetType: string | null, targetId: string | null, url: string | null): void {
    if (this.#first(`r\0${param}\0${targetType}\0${targetId}\0${url}`)) this.rows.reference.push({ param, targetType, targetId, url });
  }

  uri(param: string, value: string): void {
    if (this.#first(`u\0${param}\0${value}`)) this.rows.uri.push({ param, value });
  }
}

// ---- token ----

interface CodingLike { system?: string; code?: string; display?: string }
interface CodeableConceptLike { coding?: CodingLike[]; text?: string }

function addToken(rows: RowSink, plan: ParamPlan, v: TypedValue): void {
  const value = v.value as unknown;
  if (value === null || value === undefined) return;
  switch (v.type) {
    case 'CodeableConcept': {
      const cc = value as CodeableConceptLike;
      for (const coding of cc.coding ?? []) addCoding(rows, plan, coding);
      if (cc.text) rows.text(`${plan.code}:text`, cc.text, plan.textBlinded);
      return;
    }
    case 'Coding':
      return addCoding(rows, plan, value as CodingLike);
    case 'Identifier': {
      const id = value as { system?: string; value?: string };
      return rows.token(plan.code, id.system ?? null, id.value ?? null, plan.blinded);
    }
    case 'ContactPoint': {
      // R4: telecom/phone/email tokens match the value only; the system is implied by the parameter.
      const cp = value as { value?: string };
      if (cp.value) rows.token(plan.code, null, cp.value, plan.blinded);
      return;
    }
    default:
      if (typeof value === 'string' || typeof value === 'boolean' || typeof value === 'number') {
        rows.token(plan.code, null, String(value), plan.blinded);
      }
  }
}

function addCoding(rows: RowSink, plan: ParamPlan, coding: CodingLike): void {
  if (coding.code !== undefined || coding.system !== undefined) rows.token(plan.code, coding.system ?? null, coding.code ?? null, plan.blinded);
  if (coding.display) rows.text(`${plan.code}:text`, coding.display, plan.textBlinded);
}

// ---- string ----

const NAME_PARTS = ['family', 'given', 'prefix', 'suffix', 'text'] as const;
const ADDRESS_PARTS = ['line', 'city', 'district', 'state', 'postalCode', 'country', 'text'] as const;

function addString(rows: RowSink, param: string, blinded: boolean, v: TypedValue): void {
  const value = v.value as unknown;
  if (typeof value === 'string') return rows.string(param, value, blinded);
  if (value === null || typeof value !== 'object') return;
  const parts = v.type === 'HumanName' ? NAME_PARTS : v.type === 'Address' ? ADDRESS_PARTS : v.type === 'CodeableConcept' ? (['text'] as const) : undefined;
  if (!parts) return;
  const obj = value as Record<string, unknown>;
  for (const part of parts) {
    const p = obj[part];
    if (typeof p === 'string') rows.string(param, p, blinded);
    else if (Array.isArray(p)) for (const s of p) if (typeof s === 'string') rows.string(param, s, blinded);
  }
}

// ---- date ----

const DATE_RE = /^(-?\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

/**
 * The closed epoch-ms range a FHIR date/dateTime/instant covers at its precision
 * ('2020' -> the whole year). Values without a timezone are taken as UTC. Undefined if unparseable.
 */
export function parseDateRange(s: string): [number, number] | undefined {
  const m = DATE_RE.exec(s.trim());
  if (!m) return undefined;
  const [, ys, mos, ds, hs, mis, ss, frac, tz] = m;
  const y = Number(ys);
  if (mos === undefined) return [utc(y, 0, 1), utc(y + 1, 0, 1) - 1];
  const mo = Number(mos) - 1;
  if (mo < 0 || mo > 11) return undefined;
  if (ds === undefined) return [utc(y, mo, 1), utc(y, mo + 1, 1) - 1];
  const d = Number(ds);
  if (d < 1 || d > daysInMonth(y, mo)) return undefined;
  if (hs === undefined) return [utc(y, mo, d), utc(y, mo, d + 1) - 1];
  const h = Number(hs), mi = Number(mis), sec = ss === undefined ? 0 : Number(ss);
  if (h > 24 || mi > 59 || sec > 60) return undefined;
  const offset = tz === undefined || tz === 'Z' ? 0 : tzOffsetMs(tz);
  const ms = frac === undefined ? 0 : Number(frac.slice(0, 3).padEnd(3, '0'));
  const lo = utc(y, mo, d, h, mi, sec, ms) - offset;
  const width = ss === undefined ? 60_000 : frac === undefined ? 1000 : frac.length >= 3 ? 1 : 10 ** (3 - frac.length);
  return [lo, lo + width - 1];
}

function utc(y: number, mo: number, d: number, h = 0, mi = 0, s = 0, ms = 0): number {
  const t = Date.UTC(y, mo, d, h, mi, s, ms);
  // Date.UTC maps years 0..99 to 1900..1999.
  return y >= 0 && y < 100 ? new Date(t).setUTCFullYear(y) : t;
}

function daysInMonth(y: number, mo: number): number {
  return new Date(utc(y, mo + 1, 1) - 1).getUTCDate();
}

function tzOffsetMs(tz: string): number {
  const sign = tz.startsWith('-') ? -1 : 1;
  return sign * (Number(tz.slice(1, 3)) * 60 + Number(tz.slice(4, 6))) * 60_000;
}

function addDate(rows: RowSink, plan: ParamPlan, v: TypedValue): void {
  const value = v.value as unknown;
  if (plan.blinded) return addBlindedDate(rows, plan.code, value);
  if (typeof value === 'string') {
    const r = parseDateRange(value);
    if (r) rows.date(plan.code, r[0], r[1]);
    return;
  }
  if (value === null || typeof value !== 'object') return;
  if (v.type === 'Period') {
    const p = value as { start?: string; end?: string };
    const lo = p.start ? parseDateRange(p.start)?.[0] : MIN_TIME;
    const hi = p.end ? parseDateRange(p.end)?.[1] : MAX_TIME;
    if (lo !== undefined && hi !== undefined && (p.start || p.end)) rows.date(plan.code, lo, hi);
  } else if (v.type === 'Timing') {
    for (const e of (value as { event?: string[] }).event ?? []) {
      const r = parseDateRange(e);
      if (r) rows.date(plan.code, r[0], r[1]);
    }
  }
}

/** Birth dates are blinded per precision so that eq at year, month or day still matches. */
function addBlindedDate(rows: RowSink, param: string, value: unknown): void {
  if (typeof value !== 'string' || !parseDateRange(value)) return;
  const day = value.slice(0, 10);
  for (const len of [4, 7, 10]) {
    if (day.length >= len) rows.blindedString(param, rows.blinder.exact(param, day.slice(0, len)));
  }
}

// ---- number / quantity ----

/**
 * Implicit-precision range of a decimal as written: '1.5' -> [1.45, 1.55], '100' -> [99.5, 100.5],
 * '1e2' -> [50, 150]. Undefined if not a decimal.
 */
export function numberRange(s: string): { value: number; lo: number; hi: number } | undefined {
  const m = /^([+-]?)(\d+)(?:\.(\d+))?(?:[eE]([+-]?\d+))?$/.exec(s.trim());
  if (!m) return undefined;
  const value = Number(s);
  if (!Number.isFinite(value)) return undefined;
  const decimals = m[3]?.length ?? 0;
  const exponent = m[4] ? Number(m[4]) : 0;
  const half = 0.5 * 10 ** (exponent - decimals);
  return { value, lo: value - half, hi: value + half };
}

function rangeOf(n: number): { value: number; lo: number; hi: number } | undefined {
  return Number.isFinite(n) ? numberRange(String(n)) : undefined;
}

function addNumber(rows: RowSink, param: string, v: TypedValue): void {
  if (typeof v.value !== 'number') return;
  const r = rangeOf(v.value);
  if (r) rows.number(param, r.value, r.lo, r.hi);
}

const QUANTITY_TYPES = new Set(['Quantity', 'SimpleQuantity', 'Age', 'Duration', 'Distance', 'Count', 'MoneyQuantity']);

function addQuantity(rows: RowSink, param: string, v: TypedValue): void {
  const value = v.value as unknown;
  if (value === null || typeof value !== 'object') return;
  if (QUANTITY_TYPES.has(v.type)) {
    const q = value as { value?: number; unit?: string; system?: string; code?: string };
    const r = typeof q.value === 'number' ? rangeOf(q.value) : undefined;
    if (r) rows.quantity(param, { system: q.system ?? null, code: q.code ?? null, unit: q.unit ?? null, ...r });
  } else if (v.type === 'Money') {
    const m = value as { value?: number; currency?: string };
    const r = typeof m.value === 'number' ? rangeOf(m.value) : undefined;
    if (r) rows.quantity(param, { system: m.currency ? 'urn:iso:std:iso:4217' : null, code: m.currency ?? null, unit: m.currency ?? null, ...r });
  }
}

// ---- reference / uri ----

const ABSOLUTE_REF = /\/([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?$/;
const RELATIVE_REF = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})(?:\/_history\/[^/]+)?$/;

/** Splits a reference string into target type/id and/or url, as stored in idx_reference. */
export function parseReference(ref: string): { targetType: string | null; targetId: string | null; url: string | null } | undefined {
  if (!ref || ref.startsWith('#')) return undefined;
  const rel = RELATIVE_REF.exec(ref);
  if (rel && isResourceType(rel[1]!)) return { targetType: rel[1]!, targetId: rel[2]!, url: null };
  const abs = /^[a-z][a-z0-9+.-]*:\/\//i.test(ref) ? ABSOLUTE_REF.exec(ref) : null;
  if (abs && isResourceType(abs[1]!)) return { targetType: abs[1]!, targetId: abs[2]!, url: ref };
  return { targetType: null, targetId: null, url: ref };
}

function addReference(rows: RowSink, param: string, v: TypedValue): void {
  const value = v.value as unknown;
  if (typeof value === 'string') {
    if (v.type === 'canonical' || v.type === 'uri' || v.type === 'url') rows.reference(param, null, null, value);
    return;
  }
  if (v.type !== 'Reference' || value === null || typeof value !== 'object') return;
  const ref = value as { reference?: string; identifier?: { system?: string; value?: string } };
  const parsed = ref.reference ? parseReference(ref.reference) : undefined;
  if (parsed) rows.reference(param, parsed.targetType, parsed.targetId, parsed.url);
  if (ref.identifier?.value) rows.token(`${param}:identifier`, ref.identifier.system ?? null, ref.identifier.value, true);
}

function addUri(rows: RowSink, param: string, v: TypedValue): void {
  if (typeof v.value === 'string' && v.value) rows.uri(param, v.value);
}
