import { createHmac } from 'node:crypto';
import type Database from 'better-sqlite3';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { CapabilityStatementRestSecurity } from '@medplum/fhirtypes';
import type Provider from 'oidc-provider';
import type { KoaContextWithOIDC } from 'oidc-provider';
import type { Logger } from 'pino';
import { FhirError, sendOutcome, type TokenPrincipal } from '../fhir/index.js';
import type { MasterKeys } from '../store/index.js';
import { AccessTokenVerifier, looksLikeJwt, TokenError, unverifiedClaims } from './access-tokens.js';
import { openAuthDb } from './auth-db.js';
import { grantRowId } from './oidc-adapter.js';
import { interactionRouter, pageStyleHandler } from './interactions.js';
import { LaunchContexts } from './launch-context.js';
import { LoginThrottle, type LoginThrottleOptions } from './login-throttle.js';
import { PasswordHasher } from './passwords.js';
import { authEndpoints, createProvider, ROUTES, STATIC_SCOPES, type AuthEndpoints } from './provider.js';
import { Registry } from './registry.js';
import { ScopePolicy } from './scope-policy.js';
import { NON_RESOURCE_SCOPES, parseScopes } from './scopes.js';
import { loadSigningKeys } from './signing-keys.js';

export interface SmartAuthOptions {
  dataDir: string;
  fhirBase: string;
  masterKeys: MasterKeys;
  accessTokenTtl: number;
  signingKeyRotationDays: number;
  jwksPrivateHosts: string[];
  /** How far in the future an access token's iat may be (clock skew), in seconds. */
  clockSkewSeconds: number;
  /** Login throttling, and `queue`: password checks that may wait for the hashing thread. */
  login: LoginThrottleOptions & { queue: number };
  patientExists(id: string): Promise<boolean>;
  logger: Logger;
}

const GRANT_TTL_S = 90 * 24 * 3600;
const REALM = 'custos';

/** A login, a token grant or a refused access token at the FHIR API, for the audit trail. */
export interface SecurityEvent {
  kind: 'login' | 'token-grant' | 'access-token';
  /** 200 on success, else the status the attempt was refused with. */
  status: number;
  /** For a refused access token: the client it names, unverified (it only names, never authorizes). */
  clientId?: string;
  /** The user's fhirUser reference ("Patient/1", "Practitioner/2"), when known. */
  user?: string;
  /** A refused login's target: the fhirUser of the username it tried, when that user exists. */
  account?: string;
  address?: string;
}

/** What a client id looks like (registry.ts makes them); anything else a refused token claims is not recorded. */
const CLAIMED_CLIENT_ID = /^[A-Za-z0-9._~:@-]{1,128}$/;

/** Everything SMART on FHIR: the authorization server, the discovery document and the token check. */
export class SmartAuth {
  readonly policy = new ScopePolicy();
  readonly endpoints: AuthEndpoints;
  /** Receives logins and token grants (the audit trail); set by the server once it exists. */
  onSecurityEvent?: (e: SecurityEvent) => void;
  private constructor(
    readonly db: Database.Database,
    readonly registry: Registry,
    readonly launches: LaunchContexts,
    readonly provider: Provider,
    private readonly verifier: AccessTokenVerifier,
    private readonly o: SmartAuthOptions,
    /** Hashes and checks passwords on its own thread. */
    readonly passwords: PasswordHasher,
    readonly loginThrottle: LoginThrottle,
  ) {
    this.endpoints = authEndpoints(o.fhirBase);
  }

  static async create(o: SmartAuthOptions): Promise<SmartAuth> {
    const db = openAuthDb(o.dataDir);
    const hasher = new PasswordHasher({ maxQueued: o.login.queue });
    const registry = new Registry(db, o.masterKeys, hasher);
    const launches = new LaunchContexts(db);
    const keys = await loadSigningKeys(o.dataDir, o.signingKeyRotationDays);
    if (keys.rotated) o.logger.info({ kid: keys.publicJwks[0]!.kid }, 'generated a new token signing key');
    const endpoints = authEndpoints(o.fhirBase);
    const provider = createProvider({
      endpoints, db, registry, keys, launches, accessTokenTtl: o.accessTokenTtl, logger: o.logger, jwksPrivateHosts: o.jwksPrivateHosts,
      cookieSecret: createHmac('sha256', o.masterKeys.kek).update('custos/oidc-cookies').digest(),
    });
    const verifier = new AccessTokenVerifier(db, keys.publicJwks, endpoints.issuer, o.fhirBase, o.clockSkewSeconds);
    const auth = new SmartAuth(db, registry, launches, provider, verifier, o, hasher, new LoginThrottle(o.login));
    provider.use(offlineAccessNeedsConsent);
    provider.use(auth.tokenEndpointExtras());
    const tokenEvent = (ctx: KoaContextWithOIDC, status: number) => {
      const accountId = (ctx.oidc?.entities as { AccessToken?: { accountId?: string } } | undefined)?.AccessToken?.accountId;
      const user = accountId ? registry.getUser(accountId)?.fhirUser : undefined;
      auth.onSecurityEvent?.({ kind: 'token-grant', status, ...(ctx.oidc?.client?.clientId ? { clientId: ctx.oidc.client.clientId } : {}), ...(user ? { user } : {}), ...(ctx.ip ? { address: ctx.ip } : {}) });
    };
    provider.on('grant.success', (ctx: KoaContextWithOIDC) => tokenEvent(ctx, 200));
    provider.on('grant.error', (ctx: KoaContextWithOIDC, err: { statusCode?: number }) => tokenEvent(ctx, err?.statusCode ?? 400));
    return auth;
  }

  /** Express handler for GET /auth/assets/pages.css (the stylesheet of the login and approval pages). */
  pageStyle() {
    return pageStyleHandler;
  }

  /** Express handler for /auth/interaction (login and approval pages). */
  interactions() {
    return interactionRouter({
      provider: this.provider, registry: this.registry, launches: this.launches, fhirBase: this.o.fhirBase,
      patientExists: this.o.patientExists, grantTtlSeconds: GRANT_TTL_S, logger: this.o.logger, throttle: this.loginThrottle,
      onLogin: (e) => this.onSecurityEvent?.({ kind: 'login', ...e }),
    });
  }

  /**
   * Express middleware for POST /auth/token: SMART public apps refresh with grant_type and
   * refresh_token only, but oidc-provider wants a client_id to find a client that has no
   * credentials. The refresh token names its client; when that client is public, say so.
   * (oidc-provider then reads this parsed body instead of the stream.)
   */
  publicRefresh() {
    const parse = express.urlencoded({ extended: false, limit: '56kb' });
    const clientOf = this.db.prepare("SELECT payload FROM oidc_payload WHERE model = 'RefreshToken' AND id = ?").pluck();
    return (req: Request, res: Response, next: NextFunction) => {
      if (req.headers.authorization || !req.is('application/x-www-form-urlencoded')) {
        next();
        return;
      }
      parse(req, res, (err?: unknown) => {
        if (err) {
          next(err);
          return;
        }
        const body = req.body as Record<string, unknown>;
        if (body.grant_type === 'refresh_token' && body.client_id === undefined && body.client_assertion === undefined && typeof body.refresh_token === 'string') {
          const payload = clientOf.get(grantRowId(body.refresh_token)) as string | undefined;
          const clientId = payload ? (JSON.parse(payload) as { clientId?: string }).clientId : undefined;
          if (clientId && this.registry.getClient(clientId)?.type === 'public') body.client_id = clientId;
        }
        next();
      });
    };
  }

  /** Express handler for everything else under /auth (oidc-provider). */
  oauth() {
    return this.provider.callback();
  }

  /** `/.well-known/smart-configuration` (SMART App Launch 2.x). */
  smartConfiguration(): Record<string, unknown> {
    const e = this.endpoints;
    return {
      issuer: e.issuer,
      jwks_uri: e.jwks,
      authorization_endpoint: e.authorize,
      token_endpoint: e.token,
      introspection_endpoint: e.introspect,
      revocation_endpoint: e.revoke,
      grant_types_supported: ['authorization_code', 'client_credentials', 'refresh_token'],
      response_types_supported: ['code'],
      token_endpoint_auth_methods_supported: ['none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt'],
      token_endpoint_auth_signing_alg_values_supported: ['RS384', 'ES384', 'RS256', 'ES256'],
      scopes_supported: [...STATIC_SCOPES, 'patient/*.rs', 'patient/*.cruds', 'user/*.rs', 'user/*.cruds', 'system/*.rs', 'system/*.cruds', 'patient/*.read', 'user/*.read', 'system/*.read', 'patient/*.*', 'user/*.*', 'system/*.*'],
      code_challenge_methods_supported: ['S256'],
      capabilities: [
        'launch-ehr', 'launch-standalone', 'client-public', 'client-confidential-symmetric', 'client-confidential-asymmetric',
        'context-ehr-patient', 'context-standalone-patient', 'permission-offline', 'permission-online', 'permission-patient', 'permission-user',
        'permission-v1', 'permission-v2', 'sso-openid-connect',
      ],
    };
  }

  /** rest.security for the CapabilityStatement. */
  capabilitySecurity(): CapabilityStatementRestSecurity {
    const e = this.endpoints;
    return {
      cors: true,
      service: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR' }], text: 'OAuth2 using SMART-on-FHIR profile (see http://docs.smarthealthit.org)' }],
      extension: [{
        url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris',
        extension: [
          { url: 'authorize', valueUri: e.authorize },
          { url: 'token', valueUri: e.token },
          { url: 'introspect', valueUri: e.introspect },
          { url: 'revoke', valueUri: e.revoke },
        ],
      }],
      description: `Every interaction except /metadata needs a Bearer token from ${e.token}; discovery: ${this.o.fhirBase}/.well-known/smart-configuration`,
    };
  }

  /** Express middleware in front of the FHIR routes: bearer token -> principal, or a 401. */
  authenticate() {
    return async (req: Request, res: Response, next: NextFunction) => {
      if ((req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS') && (req.path === '/metadata' || req.path === '/.well-known/smart-configuration')) {
        next();
        return;
      }
      const header = req.headers.authorization;
      const m = header ? /^Bearer[ ]+([A-Za-z0-9\-._~+/]+=*)$/i.exec(header.trim()) : null;
      try {
        if (!header) throw new TokenError('a Bearer access token is required');
        if (!m) throw new TokenError('the Authorization header must be "Bearer <access token>"');
        res.locals.principal = await this.principalFor(m[1]!);
        next();
      } catch (err) {
        if (!(err instanceof TokenError)) {
          next(err);
          return;
        }
        this.refusedToken(req, m?.[1]);
        res.set('WWW-Authenticate', `Bearer realm="${REALM}", error="invalid_token", error_description="${err.description.replace(/"/g, "'")}"`);
        sendOutcome(res, new FhirError(401, 'login', `Unauthorized: ${err.description}`));
      }
    };
  }

  /** Every refused authentication at the FHIR API goes to the audit trail, naming the client the token claims. */
  private refusedToken(req: Request, token: string | undefined): void {
    if (!this.onSecurityEvent) return;
    const claimed = token ? unverifiedClaims(token)?.client_id : undefined;
    const clientId = typeof claimed === 'string' && CLAIMED_CLIENT_ID.test(claimed) ? claimed : undefined;
    const address = req.socket.remoteAddress;
    this.onSecurityEvent({ kind: 'access-token', status: 401, ...(clientId ? { clientId } : {}), ...(address ? { address } : {}) });
  }

  async principalFor(token: string): Promise<TokenPrincipal> {
    const claims = await this.verifier.verify(token);
    const patient = typeof claims.patient === 'string' ? claims.patient : undefined;
    return {
      kind: 'token',
      clientId: claims.client_id,
      subject: claims.sub ?? claims.client_id,
      tokenId: claims.jti,
      scope: claims.scope ?? '',
      scopes: parseScopes(claims.scope).resource,
      fhirUser: typeof claims.fhirUser === 'string' ? claims.fhirUser : undefined,
      patient,
      trusted: claims.clientTrusted,
      ...(claims.clientActor !== undefined ? { actor: claims.clientActor } : {}),
    };
  }

  /**
   * oidc-provider post-processing: SMART launch context in the token response, and RFC 7662/7009
   * for JWT access tokens, which oidc-provider leaves to the resource server.
   */
  private tokenEndpointExtras() {
    return async (ctx: KoaContextWithOIDC, next: () => Promise<void>) => {
      await next();
      const route = ctx.oidc?.route;
      if (route === 'token' && ctx.status === 200) {
        this.addLaunchContext(ctx);
        return;
      }
      if ((route === 'introspection' || route === 'revocation') && ctx.status === 400) {
        const token = ctx.oidc.params?.token as string | undefined;
        const client = ctx.oidc.client;
        if (!token || !client || !looksLikeJwt(token)) return;
        if (route === 'introspection') {
          ctx.status = 200;
          ctx.body = await this.introspect(token, client.clientId);
        } else {
          await this.revokeJwt(token, client.clientId);
          ctx.status = 200;
          ctx.body = '';
        }
      }
    };
  }

  private addLaunchContext(ctx: KoaContextWithOIDC): void {
    const body = ctx.body as Record<string, unknown> | undefined;
    if (!body || typeof body.access_token !== 'string') return;
    const claims = unverifiedClaims(body.access_token);
    if (claims?.patient) body.patient = claims.patient;
    // oidc-provider reports only the resource scopes; SMART apps also expect the granted context scopes.
    const granted = new Set(String(body.scope ?? '').split(' ').filter(Boolean));
    const e = ctx.oidc.entities as Record<string, { scope?: string } | undefined>;
    const source = e.AuthorizationCode ?? e.RefreshToken;
    const grant = ctx.oidc.entities.Grant;
    const oidcGranted = new Set((grant?.getOIDCScope() ?? '').split(' '));
    for (const s of String(source?.scope ?? '').split(' ')) if (NON_RESOURCE_SCOPES.has(s) && oidcGranted.has(s)) granted.add(s);
    body.scope = [...granted].join(' ');
  }

  private async introspect(token: string, clientId: string): Promise<Record<string, unknown>> {
    try {
      const c = await this.verifier.verify(token);
      if (c.client_id !== clientId) return { active: false };
      return {
        active: true, token_type: 'Bearer', scope: c.scope, client_id: c.client_id, sub: c.sub, exp: c.exp, iat: c.iat,
        iss: c.iss, aud: c.aud, jti: c.jti, ...(c.patient ? { patient: c.patient } : {}), ...(c.fhirUser ? { fhirUser: c.fhirUser } : {}),
      };
    } catch {
      return { active: false };
    }
  }

  private async revokeJwt(token: string, clientId: string): Promise<void> {
    try {
      const c = await this.verifier.verify(token);
      // RFC 7009: a client may revoke only its own tokens; anything else is silently ignored.
      if (c.client_id === clientId) this.verifier.revokeToken(c);
    } catch {
      // Invalid or expired tokens need no revoking.
    }
  }

  close(): void {
    void this.passwords.close();
    this.db.close();
  }
}

/**
 * oidc-provider keeps offline_access only for requests with prompt=consent (OIDC Core 11);
 * SMART apps ask for it without a prompt, and our approval page is shown for every grant anyway.
 */
async function offlineAccessNeedsConsent(ctx: KoaContextWithOIDC, next: () => Promise<void>): Promise<void> {
  if (ctx.method === 'GET' && ctx.path === ROUTES.authorization) {
    const q = ctx.query as Record<string, string | string[] | undefined>;
    const scope = typeof q.scope === 'string' ? q.scope.split(' ') : [];
    if (scope.includes('offline_access') && q.prompt === undefined) ctx.query = { ...q, prompt: 'consent' };
  }
  await next();
}
