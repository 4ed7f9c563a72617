import { createHmac } from 'node:crypto';
import type Database from 'better-sqlite3';
import Provider, { errors, type ClientMetadata, type Configuration, type KoaContextWithOIDC } from 'oidc-provider';
import type { Logger } from 'pino';
import type { ClientRecord, Registry } from './registry.js';
import { createAdapterFactory, grantRowId } from './oidc-adapter.js';
import { covers, grantableScopes, parseScopes } from './scopes.js';
import { TOKEN_ALG, type SigningKeys } from './signing-keys.js';
import type { LaunchContexts } from './launch-context.js';

/** Where the authorization server lives relative to the FHIR base (http://host/fhir -> http://host/auth). */
export interface AuthEndpoints {
  issuer: string;
  fhirBase: string;
  authorize: string;
  token: string;
  introspect: string;
  revoke: string;
  jwks: string;
}

export const ROUTES = {
  authorization: '/authorize', token: '/token', introspection: '/introspect', revocation: '/revoke',
  jwks: '/jwks', userinfo: '/userinfo', end_session: '/logout',
} as const;

export function authEndpoints(fhirBase: string): AuthEndpoints {
  const issuer = `${new URL(fhirBase).origin}/auth`;
  return {
    issuer, fhirBase,
    authorize: issuer + ROUTES.authorization, token: issuer + ROUTES.token, introspect: issuer + ROUTES.introspection,
    revoke: issuer + ROUTES.revocation, jwks: issuer + ROUTES.jwks,
  };
}

/** Context scopes and identity scopes oidc-provider manages itself (SMART resource scopes go to the resource server). */
export const STATIC_SCOPES = ['openid', 'fhirUser', 'profile', 'launch', 'launch/patient', 'launch/encounter', 'offline_access', 'online_access'];

/** Client assertions may be at most this far in the future (SMART Backend Services: 5 minutes). */
const MAX_ASSERTION_LIFETIME_S = 300;

export interface ProviderOptions {
  endpoints: AuthEndpoints;
  db: Database.Database;
  registry: Registry;
  keys: SigningKeys;
  launches: LaunchContexts;
  cookieSecret: Buffer;
  accessTokenTtl: number;
  /** Host names whose jwks_uri may resolve to loopback/private addresses (oidc-provider refuses those by default). */
  jwksPrivateHosts: string[];
  logger: Logger;
}

function clientMetadata(c: ClientRecord & { clientSecret?: string }): ClientMetadata {
  // oidc-provider knows only its static scopes; the SMART resource scopes a client may have are
  // looked up in the registry by getResourceServerInfo.
  const statics = c.scope.split(' ').filter((s) => STATIC_SCOPES.includes(s));
  const common = { client_id: c.clientId, client_name: c.name, scope: statics.join(' ') || undefined };
  if (c.type === 'backend') {
    return {
      ...common, grant_types: ['client_credentials'], response_types: [], redirect_uris: [],
      token_endpoint_auth_method: 'private_key_jwt',
      ...(c.jwksUri ? { jwks_uri: c.jwksUri } : { jwks: c.jwks as ClientMetadata['jwks'] }),
    };
  }
  return {
    ...common, grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'], redirect_uris: c.redirectUris,
    ...(c.type === 'public' ? { token_endpoint_auth_method: 'none' }
      : c.jwks || c.jwksUri
        ? { token_endpoint_auth_method: 'private_key_jwt', ...(c.jwksUri ? { jwks_uri: c.jwksUri } : { jwks: c.jwks as ClientMetadata['jwks'] }) }
        : { token_endpoint_auth_method: 'client_secret_basic', client_secret: c.clientSecret }),
  };
}

/** Every resource-scope string this request carries, from the parameters and the code/refresh token/grant it uses. */
function candidateScopes(ctx: KoaContextWithOIDC, fhirBase: string): string[] {
  const e = ctx.oidc.entities as Record<string, { scope?: string; resources?: Record<string, string> } | undefined>;
  const texts = [ctx.oidc.params?.scope as string | undefined, e.AuthorizationCode?.scope, e.RefreshToken?.scope, e.Grant?.resources?.[fhirBase]];
  return texts.flatMap((t) => parseScopes(t).resource.map((s) => s.raw));
}

export function createProvider(o: ProviderOptions): Provider {
  const { endpoints, registry, launches } = o;
  const fhirBase = endpoints.fhirBase;

  const config: Configuration = {
    adapter: createAdapterFactory(o.db, registry, clientMetadata),
    jwks: { keys: o.keys.privateJwks as never },
    cookies: { keys: [createHmac('sha256', o.cookieSecret).update('custos/cookies/v1').digest('base64url')] },
    routes: ROUTES,
    scopes: STATIC_SCOPES,
    claims: { openid: ['sub'], fhirUser: ['fhirUser'], profile: ['fhirUser'] },
    // fhirUser must be in the ID token of a code flow (SMART), not only at userinfo.
    conformIdTokenClaims: false,
    clientAuthMethods: ['none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt'],
    enabledJWA: {
      clientAuthSigningAlgValues: ['RS384', 'ES384', 'RS256', 'ES256'],
      idTokenSigningAlgValues: [TOKEN_ALG],
    },
    clientDefaults: { id_token_signed_response_alg: TOKEN_ALG },
    pkce: { required: () => true },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      // Access tokens are JWTs for the FHIR server (resource indicator), not for userinfo; the ID token carries fhirUser.
      userinfo: { enabled: false },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => fhirBase,
        useGrantedResource: async () => true,
        getResourceServerInfo: async (ctx, indicator, client) => {
          if (indicator !== fhirBase) throw new errors.InvalidTarget(`the only resource is ${fhirBase}`);
          const allowed = registry.getClient(client.clientId)?.scope ?? '';
          const params = ctx.oidc.params as Record<string, string | undefined>;
          // Narrow what is asked to what this client may have, keeping the intersections of wildcards
          // (asked patient/*.rs, allowed patient/Observation.rs -> patient/Observation.rs).
          if (params.scope && (ctx.oidc.route === 'authorization' || ctx.oidc.route === 'resume'
            || (ctx.oidc.route === 'token' && params.grant_type === 'client_credentials'))) {
            params.scope = grantableScopes(params.scope, allowed).join(' ') || undefined;
          }
          const allowedScopes = parseScopes(allowed).resource;
          const recognized = new Set<string>();
          for (const raw of candidateScopes(ctx, fhirBase)) {
            const s = parseScopes(raw).resource[0]!;
            if (allowedScopes.some((a) => covers(a, s))) recognized.add(raw);
          }
          return {
            scope: [...recognized].join(' '),
            audience: fhirBase,
            accessTokenTTL: o.accessTokenTtl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: TOKEN_ALG } },
          };
        },
      },
    },
    extraParams: {
      // SMART: aud names the FHIR server the app wants to talk to; a mismatch must stop the flow.
      aud: async (ctx, value) => {
        if (ctx.oidc.route !== 'authorization' && ctx.oidc.route !== 'pushed_authorization_request') return;
        if (!value) throw new errors.InvalidRequest('aud is required: the FHIR base URL this app will use');
        if (String(value).replace(/\/+$/, '') !== fhirBase) throw new errors.InvalidRequest(`aud must be this server's FHIR base URL (${fhirBase})`);
      },
      launch: async (ctx, value) => {
        if (ctx.oidc.route !== 'authorization' || value === undefined) return;
        if (!launches.find(String(value))) throw new errors.InvalidRequest('launch is unknown or expired');
      },
    },
    extraTokenClaims: async (_ctx, token) => {
      const grantId = (token as { grantId?: string }).grantId;
      if (!grantId) return undefined;
      const context = launches.forGrant(grantId);
      return {
        // The grant the token came from (as stored, hashed): when the grant is revoked (refresh token
        // revoked, authorization code replayed) its access tokens stop working too.
        gid: grantRowId(grantId),
        ...(context?.patient ? { patient: context.patient } : {}),
        ...(context?.fhirUser ? { fhirUser: context.fhirUser } : {}),
      };
    },
    findAccount: async (_ctx, id) => {
      const user = registry.getUser(id);
      if (!user || user.disabledAt) return undefined;
      return { accountId: id, claims: async () => ({ sub: id, fhirUser: `${fhirBase}/${user.fhirUser}` }) };
    },
    issueRefreshToken: async (_ctx, client, code) => client.grantTypeAllowed('refresh_token')
      && (code.scopes.has('offline_access') || code.scopes.has('online_access')),
    ttl: {
      AccessToken: o.accessTokenTtl,
      ClientCredentials: o.accessTokenTtl,
      IdToken: 3600,
      AuthorizationCode: 60,
      Interaction: 1800,
      Session: 8 * 3600,
      Grant: 90 * 24 * 3600,
      RefreshToken: (_ctx, token) => (token.scopes.has('offline_access') ? 90 * 24 * 3600 : 8 * 3600),
    },
    interactions: { url: async (_ctx, interaction) => `/auth/interaction/${interaction.uid}` },
    assertJwtClientAuthClaimsAndHeader: async (ctx, claims) => {
      // SMART Backend Services: aud is the token endpoint, and the assertion lives at most 5 minutes.
      const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
      if (ctx.oidc.route === 'token' && !aud.includes(endpoints.token)) {
        throw new errors.InvalidClientAuth(`aud must be the token endpoint ${endpoints.token}`);
      }
      const now = Math.floor(Date.now() / 1000);
      if (typeof claims.exp !== 'number' || claims.exp - now > MAX_ASSERTION_LIFETIME_S) {
        throw new errors.InvalidClientAuth('client assertion exp must be at most 5 minutes in the future');
      }
    },
    fetch: (url, options) => {
      // oidc-provider guards outgoing requests (client jwks_uri) against private addresses;
      // hosts the operator names explicitly (an intranet key server, a test) may be reached.
      const opts = options as RequestInit & { dispatcher?: unknown };
      if (o.jwksPrivateHosts.includes(new URL(String(url)).hostname.replace(/^\[|\]$/g, ''))) delete opts.dispatcher;
      return globalThis.fetch(url, opts);
    },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      ctx.body = `<!doctype html><meta charset="utf-8"><title>Authorization error</title><h1>Authorization error</h1><p>${escapeHtml(String(out.error))}: ${escapeHtml(String(out.error_description ?? ''))}</p>`;
    },
  };
  const provider = new Provider(endpoints.issuer, config);
  provider.proxy = true;
  return provider;
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}
