import type { Resource } from '@medplum/fhirtypes';
import type { IndexRows } from '../store/index.js';
import type { Principal } from './principal.js';
import type { AuditNote } from './audit-note.js';

/** A FHIR interaction independent of HTTP: what express requests and Bundle entries both become. */
export interface FhirRequest {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** Path below the FHIR base, no leading slash: '', 'metadata', 'Patient', 'Patient/1', 'Patient/1/_history/2', 'Patient/_search', 'Patient/$validate', 'Patient/1/Observation'. */
  path: string;
  /** Query parameters in order (repeats allowed). */
  query: Array<[string, string]>;
  headers: FhirRequestHeaders;
  /** Parsed JSON body (a resource, or a JSON Patch array for PATCH). */
  body?: unknown;
  principal: Principal;
  /** Internal (transaction Bundles): the id a POST create must use instead of a new one. */
  assignedId?: string;
  /** Internal (transaction Bundles): the body was validated before the transaction began. */
  prevalidated?: boolean;
  /** Internal (transaction Bundles): index rows of the final body, extracted before the transaction. */
  preparedIndex?: IndexRows;
  /** Network address of the client (for the audit trail). */
  address?: string;
  /** Internal: a request the server makes for itself (e.g. a conditional entry's search): not audited on its own. */
  internal?: boolean;
  /** Internal: what the router learned for this interaction's AuditEvent. */
  audit?: AuditNote;
}

export interface FhirRequestHeaders {
  ifMatch?: string;
  ifNoneMatch?: string;
  ifNoneExist?: string;
  ifModifiedSince?: string;
  /** Prefer: handling=strict|lenient (search). */
  handling?: 'strict' | 'lenient';
  /** Prefer: return=... (applied by the HTTP layer; Bundles apply it per entry). */
  preferReturn?: 'minimal' | 'representation' | 'OperationOutcome';
  /** Content type of the body, without parameters (e.g. application/json-patch+json). */
  contentType?: string;
}

export interface FhirResponse {
  status: number;
  /** Resource (or OperationOutcome / Bundle) to return; the caller applies Prefer: return=... */
  body?: Resource;
  /** The body already serialized (a search answered by a worker thread); then `body` is unset. */
  bodyJson?: string;
  /** W/"n" */
  etag?: string;
  lastModified?: string;
  /** Absolute URL of the version written (create/update). */
  location?: string;
  /** Informational issues (e.g. ignored search parameters) for Prefer: return=OperationOutcome. */
  outcome?: Resource;
}
