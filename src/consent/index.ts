export { ConsentRegistryClient, ConsentRegistryError, pseudonymousId } from './consent-registry.js';
