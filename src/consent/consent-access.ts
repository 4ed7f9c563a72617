import type { Consent, Resource } from '@medplum/fhirtypes';
import type Database from 'better-sqlite3';
import type { InstanceOperation } from '../fhir/index.js';
import type { Logger } from '../logger.js';
import type { Store } from '../store/index.js';
import { BreakGlassStore, breakGlassSealKey } from './break-glass.js';
import { breakGlassOperations, type BreakGlassUsers } from './break-glass-operations.js';
import { ConsentPolicy } from './consent-policy.js';
import { explainAccessOperation } from './explain.js';
import { parseConsent } from './provisions.js';
import type { ConsentChainView } from './types.js';

export interface ConsentAccess {
  policy: ConsentPolicy;
  breakGlass: BreakGlassStore;
  operations: { instance: Record<string, InstanceOperation> };
  /** Warnings for a Consent that will not work as written ($validate, create, update). */
  advise: (resource: Resource) => string[];
}

/** The consent decision with its operations ($explain-access, $break-glass), for the server to wire in. */
export function consentAccess(o: {
  store: Store;
  baseUrl: string;
  chain: ConsentChainView;
  base: 'deny' | 'permit';
  breakGlassMinutes: number;
  authDb: Database.Database;
  /** The key-encryption key: break-the-glass records are sealed under a key derived from it. */
  kek: Buffer;
  users: BreakGlassUsers;
  logger?: Logger;
}): ConsentAccess {
  const breakGlass = new BreakGlassStore(o.authDb, o.breakGlassMinutes, Date.now, breakGlassSealKey(o.kek));
  const policy = new ConsentPolicy({ store: o.store, baseUrl: o.baseUrl, chain: o.chain, base: o.base, breakGlass, logger: o.logger });
  const patientExists = async (id: string) => {
    const v = await o.store.read('Patient', id);
    return !!v && !v.deleted;
  };
  return {
    policy,
    breakGlass,
    operations: {
      instance: {
        '$explain-access': Object.assign(explainAccessOperation(policy, o.store, o.chain, o.baseUrl), { types: ['Patient'] }),
        '$break-glass': Object.assign(breakGlassOperations(breakGlass, o.users, patientExists).instance['$break-glass'], { types: ['Patient'] }),
      },
    },
    advise: (resource) => (resource.resourceType === 'Consent' ? consentWarnings(resource as Consent, o.baseUrl) : []),
  };
}

export function consentWarnings(c: Consent, baseUrl: string): string[] {
  const parsed = parseConsent(c, baseUrl);
  const out = parsed.problems.map((p) => `${p}: this Consent grants nothing`);
  if (!parsed.privacy) out.push('Consent.scope is not patient-privacy: this Consent plays no part in access decisions');
  if (parsed.patientId === undefined) out.push('Consent.patient is not a Patient on this server: this Consent plays no part in access decisions');
  return out;
}
