import type { ClientRecord, Registry } from '../smart-auth/index.js';

/**
 * The scopes of the patient portal: the patient's own record read-only, their Consents read and
 * written, who they are, and `online_access` so the session renews while the tab is open.
 */
export const PORTAL_SCOPE = 'launch/patient openid fhirUser online_access patient/*.rs patient/Consent.cruds';
export const PORTAL_NAME = 'Custos patient portal';

/**
 * The redirect URIs of the portal for a FHIR base URL: `/portal/` at its origin, and on a loopback
 * host the same under the other loopback names, since a person may open either.
 */
export function portalRedirectUris(fhirBase: string): string[] {
  const base = new URL(fhirBase);
  const uris = [new URL('/portal/', base.origin).href];
  const loopback = ['127.0.0.1', 'localhost', '[::1]'];
  if (loopback.includes(base.hostname)) {
    for (const host of loopback) {
      const u = new URL(base.origin);
      u.hostname = host;
      uris.push(new URL('/portal/', u.origin).href);
    }
  }
  return [...new Set(uris)];
}

/** Registers the portal as a public SMART client (PKCE) on the first start; later starts update it. */
export function ensurePortalClient(registry: Registry, fhirBase: string): ClientRecord {
  return registry.ensureOwnClient('portal', { type: 'public', name: PORTAL_NAME, redirectUris: portalRedirectUris(fhirBase), scope: PORTAL_SCOPE });
}
