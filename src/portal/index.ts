export { ensurePortalClient, portalRedirectUris, PORTAL_NAME, PORTAL_SCOPE } from './portal-client.js';
export { defaultPortalDir, portalPolicy, portalRoutes, type PortalRoutesOptions } from './portal-routes.js';
