export { FhirRouter, type RouterOptions } from './router.js';
export { fhirHttpRouter, sendOutcome, toFhirError, FHIR_JSON } from './http.js';
export { loadDefinitions, getResourceTypes, isResourceType } from './definitions.js';
export { FhirError } from './outcome.js';
export { OPEN_ACCESS, ANONYMOUS, type AccessPolicy, type AccessRequest, type AccessDecision, type Principal, type TokenPrincipal, type ScopeGrant, type Permission } from './principal.js';
export type { FhirRequest, FhirResponse } from './request.js';
export { InlinePreparer, WorkerPreparer, type WritePreparer } from './write-pool.js';
export { fromWorkerFailure } from './outcome.js';
export type { SearchArgs } from './search-service.js';
