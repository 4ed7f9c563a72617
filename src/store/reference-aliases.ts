import { getSearchParameterDetails } from '@medplum/core';
import { getTypeSearchParameters } from '../fhir/definitions.js';

/**
 * Reference parameters whose values are a filter of another's: Observation.patient is
 * `Observation.subject.where(resolve() is Patient)`. Their rows are stored as the other
 * parameter's rows (idx_reference.param = 'subject'), with a bit in idx_reference.flags saying
 * which of the two parameters a row belongs to, so a reference to a Patient is one row, not two.
 */
export const OWN_ROW = 1;
export const ALIAS_ROW = 2;
export const ANY_ROW = OWN_ROW | ALIAS_ROW;

const aliases = new Map<string, Map<string, string>>();

/** alias -> the parameter its rows are stored under, for one resource type. */
export function referenceAliases(resourceType: string): Map<string, string> {
  let m = aliases.get(resourceType);
  if (!m) {
    m = findAliases(resourceType);
    aliases.set(resourceType, m);
  }
  return m;
}

function findAliases(resourceType: string): Map<string, string> {
  const exprs = new Map<string, string>();
  for (const [code, sp] of Object.entries(getTypeSearchParameters(resourceType))) {
    if (sp.type !== 'reference' || !sp.expression) continue;
    exprs.set(code, getSearchParameterDetails(resourceType, sp).parsedExpression.toString());
  }
  const found = new Map<string, string>();
  for (const [alias, expr] of exprs) {
    for (const [base, baseExpr] of exprs) {
      if (alias !== base && expr.startsWith(baseExpr) && /^\.where\(\(resolve\(\) is \w+\)\)$/.test(expr.slice(baseExpr.length))) found.set(alias, base);
    }
  }
  // One flag bit per stored parameter: a base with two aliases keeps them as their own rows.
  const perBase = new Map<string, number>();
  for (const base of found.values()) perBase.set(base, (perBase.get(base) ?? 0) + 1);
  const out = new Map<string, string>();
  for (const [alias, base] of found) if (perBase.get(base) === 1 && !found.has(base)) out.set(alias, base);
  return out;
}

/** Where a reference parameter's rows are: the stored param name and the flag bit(s) they carry. */
export function referenceStorage(resourceType: string, param: string): { param: string; mask: number } {
  const m = referenceAliases(resourceType);
  const base = m.get(param);
  if (base !== undefined) return { param: base, mask: ALIAS_ROW };
  for (const b of m.values()) if (b === param) return { param, mask: OWN_ROW };
  return { param, mask: ANY_ROW };
}
