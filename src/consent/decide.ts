import type { AccessExpr } from '../fhir/access-expr.js';
import type { ParsedProvision } from './provisions.js';

/**
 * The decision rule, compiled into an AccessExpr over the data (type, code, label, date, id) so
 * it can run inside queries. Within one patient's active Consents the most specific (deepest)
 * matching provision decides; deny wins over permit at equal depth; where none matches, the
 * base policy decides.
 */

/** Who asks, for what, when: what provisions are matched against besides the data itself. */
export interface RequestContext {
  /** "Practitioner/1", "Organization/2", "client:<id>", ... */
  actors: ReadonlySet<string>;
  action: 'access' | 'collect' | 'correct';
  /** Purpose-of-use code (v3 ActReason). */
  purpose: string;
  now: number;
  /**
   * A write of a resource that carries authority (CareTeam, Device): only permits that name this
   * type in their class count, so a permit of "everything" never lets someone widen access.
   */
  authorityType?: string;
}

/** One patient's Consents as the rule sees them. */
export interface PatientConsents {
  /** Provision trees of Consents that may grant (active, signed, understood). */
  granting: ParsedProvision[];
  /** Provision trees of Consents that only restrict (not signed, revoked, not understood, tampered): their denies apply. */
  restricting: ParsedProvision[];
  /** Something could not be understood or verified: the patient's data needs an explicit permit even under base permit. */
  governed: boolean;
}

export interface Rule { type: 'permit' | 'deny'; depth: number; consentId: string; path: string; match: AccessExpr }

/** A patient's provisions that apply to the request context, each with the data it matches. */
export function applicableRules(c: PatientConsents, ctx: RequestContext, horizon: { next: number }): Rule[] {
  const rules: Rule[] = [];
  const walk = (p: ParsedProvision, conds: ParsedProvision[], onlyDeny: boolean) => {
    if (!contextMatches(p, ctx, horizon)) return;
    const path = [...conds, p];
    const grants = p.type === 'permit' && !onlyDeny && (ctx.authorityType === undefined || path.some((q) => q.classes?.includes(ctx.authorityType!)));
    if (p.type === 'deny' || (p.type === 'permit' && grants)) rules.push({ type: p.type, depth: p.depth, consentId: p.consentId, path: p.path, match: and(path.map((q) => dataMatch(q, p.type === 'deny'))) });
    for (const child of p.children) walk(child, path, onlyDeny);
  };
  for (const root of c.granting) walk(root, [], false);
  for (const root of c.restricting) walk(root, [], true);
  return rules;
}

/** Whether the patient's consents permit the data matched by the result, for this request context. */
export function permitExpr(rules: Rule[], base: 'deny' | 'permit'): AccessExpr {
  const permits = rules.filter((r) => r.type === 'permit');
  const denies = rules.filter((r) => r.type === 'deny');
  if (base === 'deny') {
    return or(permits.map((p) => and([p.match, not(or(denies.filter((q) => q.depth >= p.depth).map((q) => q.match)))])));
  }
  return not(or(denies.map((q) => and([q.match, not(or(permits.filter((p) => p.depth > q.depth).map((p) => p.match)))]))));
}

function contextMatches(p: ParsedProvision, ctx: RequestContext, horizon: { next: number }): boolean {
  if (p.period) {
    const { start, end } = p.period;
    if (start !== undefined && start > ctx.now) horizon.next = Math.min(horizon.next, start);
    if (end !== undefined && end >= ctx.now) horizon.next = Math.min(horizon.next, end + 1);
    if ((start !== undefined && start > ctx.now) || (end !== undefined && end < ctx.now)) return false;
  }
  if (p.actors && !p.actors.some((a) => ctx.actors.has(a.ref))) return false;
  if (p.actions && !p.actions.some((a) => a === ctx.action || (ctx.action === 'access' && a === 'use'))) return false;
  if (p.purposes && !p.purposes.includes(ctx.purpose)) return false;
  return true;
}

/** The data a provision's own criteria select; `forDeny` keeps undecidable dates on the deny side. */
function dataMatch(p: ParsedProvision, forDeny: boolean): AccessExpr {
  const parts: AccessExpr[] = [];
  if (p.classes) parts.push({ types: p.classes });
  if (p.codes) parts.push({ code: p.codes });
  if (p.securityLabels) parts.push({ security: p.securityLabels });
  if (p.dataPeriod) parts.push({ date: p.dataPeriod, unknown: forDeny });
  if (p.data) parts.push({ refs: p.data });
  return and(parts);
}

export function and(xs: AccessExpr[]): AccessExpr {
  const out: AccessExpr[] = [];
  for (const x of xs) {
    if (x === true) continue;
    if (x === false) return false;
    out.push(x);
  }
  return out.length === 0 ? true : out.length === 1 ? out[0]! : { and: out };
}

export function or(xs: AccessExpr[]): AccessExpr {
  const out: AccessExpr[] = [];
  for (const x of xs) {
    if (x === false) continue;
    if (x === true) return true;
    out.push(x);
  }
  return out.length === 0 ? false : out.length === 1 ? out[0]! : { or: out };
}

export function not(x: AccessExpr): AccessExpr {
  if (typeof x === 'boolean') return !x;
  if ('not' in x) return x.not;
  return { not: x };
}
