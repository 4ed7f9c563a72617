import { ANONYMOUS, classify, isResourceType, type FhirRequest } from '../fhir/index.js';

const FHIR_METHODS = new Set(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']);
const OPS_PATHS = new Set(['/healthz', '/readyz', '/metrics']);

/**
 * The label of a request in the metrics: its FHIR interaction (as the audit trail classifies it:
 * read, vread, search-type, create, update, patch, delete, history-*, operation, batch,
 * transaction, ...), or capabilities, smart-configuration, preflight, auth, ops, unknown. A small
 * fixed set: never a path, an id, a type the server does not know, or a query value.
 *
 * `path` is the request path as it arrived (before routers strip their mount path);
 * `fhirRequest` is what the FHIR HTTP adapter parsed, when it got that far.
 */
export function interactionLabel(method: string, path: string, fhirRequest: FhirRequest | undefined): string {
  if (path === '/fhir' || path.startsWith('/fhir/')) return fhirInteraction(method, path.slice('/fhir'.length), fhirRequest);
  if (path === '/auth' || path.startsWith('/auth/')) return 'auth';
  if (OPS_PATHS.has(path)) return 'ops';
  return 'unknown';
}

function fhirInteraction(method: string, below: string, parsed: FhirRequest | undefined): string {
  const m = method.toUpperCase() === 'HEAD' ? 'GET' : method.toUpperCase();
  if (m === 'OPTIONS') return 'preflight';
  if (!FHIR_METHODS.has(m)) return 'unknown';
  let req = parsed;
  if (!req) {
    // Refused before the FHIR adapter parsed it (authentication, an undecodable path): classify its path alone.
    let path: string;
    try {
      path = below.split('/').map((s) => decodeURIComponent(s)).filter((s) => s.length > 0).join('/');
    } catch {
      return 'unknown';
    }
    req = { method: m as FhirRequest['method'], path, query: [], headers: {}, principal: ANONYMOUS };
  }
  if (req.path === '.well-known/smart-configuration') return 'smart-configuration';
  const c = classify(req);
  if (!c) return 'capabilities';
  if (c.resourceType !== undefined && !isResourceType(c.resourceType)) return 'unknown';
  return c.interaction;
}
