/**
 * Who is asking. SMART auth turns a bearer token into a `token` principal; `system` is the
 * server acting for itself (never reachable from HTTP).
 */
import type { ReadRule, ScopeQueries } from './access-constraints.js';
import type { AccessExpr } from './access-expr.js';

export type Permission = 'c' | 'r' | 'u' | 'd' | 's';

/** One granted SMART resource scope, as the decision step needs it. */
export interface ScopeGrant {
  context: 'patient' | 'user' | 'system';
  resourceType: string;
  permissions: ReadonlySet<Permission>;
  query: ReadonlyArray<readonly [string, string]>;
}

export interface TokenPrincipal {
  kind: 'token';
  clientId: string;
  /** Account id of the user, or the client id for client_credentials tokens. */
  subject: string;
  tokenId: string;
  scope: string;
  scopes: readonly ScopeGrant[];
  /** Absolute URL of the user's Patient or Practitioner resource. */
  fhirUser?: string;
  /** Launch context: the patient this token works with. */
  patient?: string;
  /** The client is registered as trusted (`custos client add --trusted`): may run admin operations. */
  trusted?: boolean;
  /** The actor the client is registered to act for (`custos client add --actor Organization/<id>`). */
  actor?: string;
}

export type Principal =
  | { kind: 'anonymous' }
  | { kind: 'system'; reason: string }
  | TokenPrincipal;

export const ANONYMOUS: Principal = { kind: 'anonymous' };

/** One FHIR interaction as the decision step sees it. */
export interface AccessRequest {
  interaction: 'read' | 'vread' | 'search' | 'history' | 'create' | 'update' | 'patch' | 'delete' | 'operation' | 'capabilities';
  resourceType?: string;
  id?: string;
  operation?: string;
}

/** What the decision step permits beyond yes/no: the constraints the router must apply. */
export interface AccessDecision {
  /** Confine the interaction to this patient's compartment (reads, searches, includes, writes). */
  patient?: string;
  /** Granular scopes: the resources touched must match at least one of these queries. */
  queries?: ScopeQueries;
  /**
   * Patient consent: resources of Patient-compartment types must satisfy `access` (reads,
   * searches, includes, chains, history; writes before and after). Where one fails `access` but
   * satisfies `known` (the principal may know it exists), refusals are 403 rather than 404.
   */
  consent?: { access: AccessExpr; known: AccessExpr };
  /**
   * Called with the resources ("Type/id") a read-type interaction returned (break-the-glass
   * records them); resolves true when an emergency grant was what let some of them be read.
   */
  observe?: (refs: string[]) => Promise<boolean>;
}

/**
 * The decision step before the store, in one place: SMART auth supplies it, the consent
 * issue narrows it further.
 */
export interface AccessPolicy {
  /** Throws a FhirError (401/403/404) when the principal may not perform the interaction. */
  authorize(principal: Principal, request: AccessRequest): AccessDecision | void | Promise<AccessDecision | void>;
  /** What the principal may read, for resources a search includes (_include/_revinclude); undefined = anything. */
  readRule?(principal: Principal): ReadRule | undefined;
}

/** Permits everything: only for the server's own in-process use and unit tests of the router. */
export const OPEN_ACCESS: AccessPolicy = { authorize: () => undefined };
