import { getSearchParameterDetails } from '@medplum/core';
import { getTypeSearchParameters } from '../fhir/definitions.js';

/**
 * Reference parameters whose values are a filter of another's: Observation.patient is
 * `Observation.subject.where(resolve() is Patient)`. Their rows are stored as the other
 * parameter's rows (idx_reference.param = 'subject'), with a bit in idx_reference.flags saying
 * which of the two parameters a row belongs to, so a reference to a Patient is one row, not two.
 * A union of such filters (AuditEvent.patient) is stored with each of its bases.
 */
export const OWN_ROW = 1;
export const ALIAS_ROW = 2;
export const ANY_ROW = OWN_ROW | ALIAS_ROW;

const aliases = new Map<string, Map<string, string[]>>();

/** alias -> the parameter(s) its rows are stored under, for one resource type. */
export function referenceAliases(resourceType: string): Map<string, string[]> {
  let m = aliases.get(resourceType);
  if (!m) {
    m = findAliases(resourceType);
    aliases.set(resourceType, m);
  }
  return m;
}

const RESOLVE_FILTER = /\.where\(\(resolve\(\) is \w+\)\)$/;

/**
 * An alias is `base.where(resolve() is X)`, or a union of such filters of several bases
 * (AuditEvent.patient: agent.who and entity.what that are Patients).
 */
function findAliases(resourceType: string): Map<string, string[]> {
  const exprs = new Map<string, string>();
  for (const [code, sp] of Object.entries(getTypeSearchParameters(resourceType))) {
    if (sp.type !== 'reference' || !sp.expression) continue;
    exprs.set(code, getSearchParameterDetails(resourceType, sp).parsedExpression.toString());
  }
  const byExpr = new Map([...exprs].map(([code, e]) => [e, code]));
  const found = new Map<string, string[]>();
  for (const [alias, expr] of exprs) {
    const union = expr.startsWith('(') && expr.endsWith(')') && expr.includes(' | ') ? expr.slice(1, -1) : expr;
    const bases = union.split(' | ').map((term) => (RESOLVE_FILTER.test(term) ? byExpr.get(term.replace(RESOLVE_FILTER, '')) : undefined));
    if (bases.length > 0 && bases.every((b) => b !== undefined && b !== alias)) found.set(alias, [...new Set(bases as string[])]);
  }
  // One flag bit per stored parameter: a base with two aliases keeps them as their own rows.
  const perBase = new Map<string, number>();
  for (const bases of found.values()) for (const b of bases) perBase.set(b, (perBase.get(b) ?? 0) + 1);
  const out = new Map<string, string[]>();
  for (const [alias, bases] of found) if (bases.every((b) => perBase.get(b) === 1 && !found.has(b))) out.set(alias, bases);
  return out;
}

/** Where a reference parameter's rows are: the stored param name(s) and the flag bit(s) they carry. */
export function referenceStorage(resourceType: string, param: string): Array<{ param: string; mask: number }> {
  const m = referenceAliases(resourceType);
  const bases = m.get(param);
  if (bases !== undefined) return bases.map((b) => ({ param: b, mask: ALIAS_ROW }));
  for (const list of m.values()) if (list.includes(param)) return [{ param, mask: OWN_ROW }];
  return [{ param, mask: ANY_ROW }];
}
