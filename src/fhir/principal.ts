/**
 * Who is asking. Until SMART auth lands every request is anonymous and the server is open;
 * the smart-auth issue replaces this with client, user, patient context and granted scopes.
 */
export type Principal =
  | { kind: 'anonymous' }
  | { kind: 'system'; reason: string };

export const ANONYMOUS: Principal = { kind: 'anonymous' };

/** One FHIR interaction as the decision step sees it. */
export interface AccessRequest {
  interaction: 'read' | 'vread' | 'search' | 'history' | 'create' | 'update' | 'patch' | 'delete' | 'operation' | 'capabilities';
  resourceType?: string;
  id?: string;
  operation?: string;
}

/**
 * The decision step before the store. The consent issue supplies a policy that also
 * constrains search queries; the open policy here permits everything because no
 * authentication exists yet (it is not a stand-in for one).
 */
export interface AccessPolicy {
  /** Throws a FhirError (401/403/404) when the principal may not perform the interaction. */
  authorize(principal: Principal, request: AccessRequest): void | Promise<void>;
}

export const OPEN_ACCESS: AccessPolicy = { authorize: () => undefined };
