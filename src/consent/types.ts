/**
 * The seams between the consent decision (policy engine, compiled into queries) and what it
 * consults: the chain's view of which Consent versions the patient signed, and break-the-glass
 * grants. Each is implemented in its own module and injected.
 */

/** Where one Consent version stands on chain, as `$consent-status` and `$explain-access` report it. */
export type ChainConsentState =
  | { state: 'off' }
  | { state: 'no-key'; pid: string }
  | { state: 'pending-signature'; pid: string; key: string }
  | { state: 'active'; pid: string; key: string; txHash?: string; blockNumber?: number }
  | { state: 'revoked'; pid: string; key: string; txHash?: string; blockNumber?: number };

/** The server's view of ConsentRegistry: which Consent content hashes each patient has active. */
export interface ConsentChainView {
  /** 'off' (CONSENT_CHAIN=off: Consents grant on their FHIR status alone) or 'required'. */
  readonly mode: 'off' | 'required';
  /**
   * Resolves once the view is no older than CONSENT_SYNC_MS, reading new contract events first
   * when it is older. Cheap when fresh; called before every consent decision.
   */
  fresh(): Promise<void>;
  /** Bumped whenever the set of active hashes changes (part of decision cache keys). */
  readonly generation: number;
  /** Whether `contentHash` (hex, no 0x, as the store records it) is active for Patient/`patientId`. Always true in mode 'off'. */
  isActive(patientId: string, contentHash: string): boolean;
  /** Status detail for one Consent version (for $consent-status / $explain-access). */
  status(patientId: string, contentHash: string): Promise<ChainConsentState>;
  close(): Promise<void>;
}

/** Chain view for CONSENT_CHAIN=off: every active FHIR Consent counts. */
export const CHAIN_OFF: ConsentChainView = {
  mode: 'off',
  generation: 0,
  fresh: async () => undefined,
  isActive: () => true,
  status: async () => ({ state: 'off' }),
  close: async () => undefined,
};

/** One break-the-glass grant: a user's time-boxed read access to one patient. */
export interface BreakGlassGrant {
  id: string;
  /** Account id of the user (TokenPrincipal.subject). */
  userId: string;
  /** The user's fhirUser reference (Practitioner/<id>). */
  practitioner: string;
  patientId: string;
  reason: string;
  /** Epoch ms. */
  grantedAt: number;
  expiresAt: number;
}

/** Break-the-glass grants and the record of what was read under them. */
export interface BreakGlassGrants {
  /** The user's grants that have not expired at `now` (epoch ms). Reads the table on every call: no cache. */
  activeFor(userId: string, now: number): BreakGlassGrant[];
  /** Records that `grant` was used to read these resources ("Type/id"), or to run this search. */
  recordAccess(grantId: string, what: { interaction: string; resources?: string[]; query?: string }): void;
}
