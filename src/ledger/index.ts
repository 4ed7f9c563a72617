export { LedgerService, type LedgerChainAccess, type LedgerConfig, type LedgerStatus, type VersionProof } from './service.js';
export { ledgerOperations, proofParameters, versionHash } from './fhir-operations.js';
export { MerkleTree, verifyInclusion, rootFromInclusionProof, leafHash } from './merkle.js';
export { AnchorRegistryClient } from './anchor-registry.js';
