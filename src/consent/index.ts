export { ConsentRegistryClient, ConsentRegistryError, pseudonymousId } from './consent-registry.js';
export {
  BreakGlassStore, BreakGlassInputError, normalizeReason, MAX_REASON_CHARS,
  type BreakGlassAccess, type BreakGlassAccessWhat, type BreakGlassRecord,
} from './break-glass.js';
export { breakGlassOperations, breakGlassRecordParameters, grantParameters, type BreakGlassUsers } from './break-glass-operations.js';
export { ChainConsentView, ConsentChainUnavailableError, consentPidSecret, type ChainConsentViewOptions, type ConsentEventRecord } from './chain-view.js';
export { openConsentChain, deploymentBlock, recoveryDelaySeconds, type ConsentChain } from './chain-setup.js';
export { consentChainOperations, SIGNATURE_TTL_S, type ConsentChainOperationsOptions } from './chain-operations.js';
export { CHAIN_OFF, type ConsentChainView, type ChainConsentState } from './types.js';
