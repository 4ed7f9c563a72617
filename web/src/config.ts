/** What the server tells the portal about itself (GET /portal/config.json, see src/portal). */
export interface PortalConfig {
  /** The portal's own public client, registered by the server on its first start. */
  clientId: string;
  /** The FHIR base URL (the `iss` of the SMART launch). */
  fhirBase: string;
  /** The scopes the portal asks for. */
  scope: string;
  /** The chain's JSON-RPC URL when the ledger runs (the browser asks the chain itself). */
  chainRpcUrl?: string;
}

export async function loadConfig(): Promise<PortalConfig> {
  const r = await fetch(new URL('config.json', document.baseURI), { headers: { Accept: 'application/json' }, cache: 'no-store' });
  if (!r.ok) throw new Error(`The portal could not load its settings from the server (HTTP ${r.status}).`);
  return await r.json() as PortalConfig;
}
