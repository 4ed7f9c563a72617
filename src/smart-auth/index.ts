export { SmartAuth, type SmartAuthOptions } from './server.js';
export { ScopePolicy } from './scope-policy.js';
export { parseScopes, grantableScopes, matchingScopes, type ResourceScope } from './scopes.js';
export { authEndpoints, type AuthEndpoints } from './provider.js';
export { Registry, type ClientRecord, type NewClient } from './registry.js';
