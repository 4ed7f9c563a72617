import type { StoreTransaction } from '../store/index.js';
import type { Principal } from './principal.js';

/**
 * What the router tells the audit trail about each interaction (src/audit turns it into an
 * AuditEvent). Only references, codes and blinded query forms: never resource content.
 */
export type AuditInteraction =
  | 'read' | 'vread' | 'update' | 'patch' | 'delete' | 'history-instance' | 'history-type' | 'history-system'
  | 'create' | 'search-type' | 'search-system' | 'operation' | 'batch' | 'transaction'
  /** Security events: logins and token grants at the authorization server, refused access tokens at the FHIR API. */
  | 'login' | 'token-grant' | 'access-token';

export interface AuditFacts {
  interaction: AuditInteraction;
  /** For operations: the operation's name, e.g. "$verify". */
  operation?: string;
  /** The HTTP status the interaction ended with. */
  status: number;
  principal: Principal;
  /** Network address of the client. */
  address?: string;
  /** The resources touched: "Type/id" or "Type/id/_history/vid". */
  resources: string[];
  /** The patients whose data was touched ("Patient/id"). */
  patients: string[];
  /** For each of `resources` in a patient's compartment: that patient (see AUDIT_ENTITY_PATIENT_URL). */
  owners?: Record<string, string[]>;
  /** The search query, with the values of identifying parameters blinded. */
  query?: string;
  /** The resource type searched or written, when no single resource is named. */
  resourceType?: string;
  /** Access granted by break-the-glass (purposeOfEvent ETREAT). */
  breakGlass?: boolean;
  recorded: Date;
}

/** The audit trail's gapless sequence (StoreTransaction.nextSequence) and the extension that carries each AuditEvent's number. */
export const AUDIT_SEQUENCE = 'audit-event';
export const AUDIT_SEQUENCE_URL = 'urn:custos:audit-sequence';
/** identifier.system of an AuditEvent agent that is an OAuth client (its client id). */
export const CLIENT_ID_SYSTEM = 'urn:custos:client';

/** Where the router sends AuditFacts: changes inside their own transaction, the rest batched. */
export interface AuditSink {
  inTransaction(t: StoreTransaction, facts: AuditFacts): Promise<void>;
  later(facts: AuditFacts): void;
  /**
   * Undefined while the trail keeps up; otherwise resolves once it has room again. Requests wait
   * for it before they start, so a writer that falls behind slows the server down instead of
   * letting its backlog (and the time until an AuditEvent is durable) grow without bound.
   */
  admit?(): Promise<void> | undefined;
}
