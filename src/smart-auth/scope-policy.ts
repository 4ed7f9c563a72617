import { FhirError, type AccessDecision, type AccessPolicy, type AccessRequest, type Principal, type ReadRule, type TokenPrincipal } from '../fhir/index.js';
import { isCompartmentType } from '../fhir/access-constraints.js';
import { matchingScopes, permissionFor, type Interaction, type ResourceScope } from './scopes.js';

function interactionOf(r: AccessRequest): Interaction {
  switch (r.interaction) {
    case 'history': return r.id ? 'history-instance' : r.resourceType ? 'history-type' : 'history-system';
    case 'search': return r.resourceType ? 'search-type' : 'search-system';
    case 'capabilities': return 'read';
    default: return r.interaction;
  }
}

const WRITES: ReadonlySet<AccessRequest['interaction']> = new Set(['create', 'update', 'patch', 'delete']);

const PERMISSION_WORD = { c: 'create', r: 'read', u: 'update', d: 'delete', s: 'search' } as const;

/** Operations for administrators only: a trusted client's token with a system/* scope that allows reading. */
const ADMIN_OPERATIONS: ReadonlySet<string> = new Set(['$integrity-check']);

/** The Patient id of a patient user (fhirUser .../Patient/<id>), if the token's user is a patient. */
export function patientUserOf(p: TokenPrincipal): string | undefined {
  const m = p.fhirUser ? /(?:^|\/)Patient\/([A-Za-z0-9\-.]{1,64})$/.exec(p.fhirUser) : null;
  return m ? m[1] : undefined;
}

/** The scopes of a token that can apply: patient/ scopes only with a patient in context. */
export function usableScopes(p: TokenPrincipal): ResourceScope[] {
  return (p.scopes as ResourceScope[]).filter((s) => s.context !== 'patient' || p.patient !== undefined);
}

/**
 * SMART scopes as the upper bound of every interaction. The consent issue adds the patient's
 * Consent to this same decision.
 */
export class ScopePolicy implements AccessPolicy {
  authorize(principal: Principal, request: AccessRequest): AccessDecision {
    if (principal.kind === 'system' || request.interaction === 'capabilities') return {};
    if (principal.kind !== 'token') throw new FhirError(401, 'login', 'A valid Bearer access token is required');
    if (request.interaction === 'operation' && request.operation !== undefined && ADMIN_OPERATIONS.has(request.operation)) {
      if (principal.trusted !== true || !matchingScopes(usableScopes(principal), 'r', '*', 'system').some((s) => s.query.length === 0)) {
        throw new FhirError(403, 'forbidden', `${request.operation} is for administrators: it needs the token of a client registered with --trusted and a system/* scope`);
      }
      return {};
    }
    const permission = permissionFor(interactionOf(request));
    const type = request.resourceType ?? '*';
    const matches = matchingScopes(usableScopes(principal), permission, type);
    if (matches.length === 0) {
      const what = request.resourceType ? `${PERMISSION_WORD[permission]} ${request.resourceType}` : `${PERMISSION_WORD[permission]} across all types`;
      throw new FhirError(403, 'forbidden', `The access token's scopes do not allow this: to ${what} a scope like ${principal.patient ? 'patient' : 'user'}/${request.resourceType ?? '*'}.${permission} is needed`);
    }
    const decision: AccessDecision = {};
    // Granular scopes (patient/Observation.rs?category=vital-signs) bound the access only when no
    // unconstrained scope allows it too.
    if (matches.every((s) => s.query.length > 0)) decision.queries = matches.map((s) => s.query);
    // A patient user sees only their own record, whatever the scope's context; patient/ scopes
    // confine to the launch patient unless a user/ or system/ scope also allows the interaction.
    const self = patientUserOf(principal);
    if (self !== undefined) decision.patient = self;
    else if (matches.every((s) => s.context === 'patient')) decision.patient = principal.patient!;
    if (decision.patient !== undefined && WRITES.has(request.interaction) && request.resourceType !== undefined && !isCompartmentType(request.resourceType)) {
      throw new FhirError(403, 'forbidden', `This token is limited to one patient's record: it may not write ${request.resourceType} resources, which are not patient data`);
    }
    return decision;
  }

  readRule(principal: Principal): ReadRule | undefined {
    if (principal.kind !== 'token') return principal.kind === 'system' ? undefined : { types: [], queries: {} };
    const readers = usableScopes(principal).filter((s) => s.permissions.has('r'));
    const open = new Set<string>();
    const constrained = new Map<string, Array<ResourceScope['query']>>();
    for (const s of readers) {
      if (s.query.length === 0) open.add(s.resourceType);
      else if (s.resourceType !== '*') constrained.set(s.resourceType, [...(constrained.get(s.resourceType) ?? []), s.query]);
    }
    const queries: ReadRule['queries'] = {};
    for (const [type, groups] of constrained) if (!open.has(type) && !open.has('*')) queries[type] = groups;
    return { types: open.has('*') ? '*' : [...new Set([...open, ...constrained.keys()])], queries };
  }
}
