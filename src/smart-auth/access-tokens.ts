import type Database from 'better-sqlite3';
import { createLocalJWKSet, decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JWK, type JWTPayload } from 'jose';
import { TOKEN_ALG } from './signing-keys.js';

/** The claims of one of our access tokens that the resource server uses. */
export interface AccessTokenClaims extends JWTPayload {
  jti: string;
  exp: number;
  client_id: string;
  scope?: string;
  patient?: string;
  fhirUser?: string;
  /** The stored id of the authorization grant (authorization code / refresh flows). */
  gid?: string;
}

export class TokenError extends Error {
  constructor(readonly description: string) {
    super(description);
  }
}

export function looksLikeJwt(token: string): boolean {
  try {
    return !!decodeProtectedHeader(token);
  } catch {
    return false;
  }
}

const CACHE_MAX = 5000;

/**
 * Verifies access tokens this server issued: signature with a published key, RS256 only (so
 * `alg: none` and HMAC confusion fail), issuer, audience = the FHIR base, expiry, issued no later
 * than now plus the clock-skew allowance, not revoked,
 * client not revoked. Signature checks are cached per token until it expires; revocation and
 * the client's status are read from auth.db on every use, so they apply at once.
 */
export class AccessTokenVerifier {
  private readonly jwks;
  private readonly verified = new Map<string, AccessTokenClaims>();
  private readonly isRevoked;
  private readonly grantAlive;
  private readonly clientActive;
  private readonly revoke;

  /** `clockSkewSeconds`: how far in the future a token's iat may be (the issuer's clock may run ahead). */
  constructor(db: Database.Database, publicJwks: JWK[], private readonly issuer: string, private readonly audience: string, private readonly clockSkewSeconds = 60) {
    this.jwks = createLocalJWKSet({ keys: publicJwks });
    this.isRevoked = db.prepare('SELECT 1 FROM revoked_token WHERE jti = ?').pluck();
    this.clientActive = db.prepare('SELECT trusted, actor FROM client WHERE client_id = ? AND revoked_at IS NULL');
    this.grantAlive = db.prepare("SELECT 1 FROM oidc_payload WHERE model = 'Grant' AND id = ? AND (expires_at IS NULL OR expires_at > ?)").pluck();
    this.revoke = db.prepare('INSERT OR IGNORE INTO revoked_token (jti, expires_at) VALUES (?, ?)');
  }

  /** The token's claims, whether its client is (still) registered as trusted, and the actor it acts for. */
  async verify(token: string): Promise<AccessTokenClaims & { clientTrusted: boolean; clientActor?: string }> {
    let claims = this.verified.get(token);
    if (!claims) {
      claims = await this.checkSignature(token);
      if (this.verified.size >= CACHE_MAX) this.verified.delete(this.verified.keys().next().value!);
      this.verified.set(token, claims);
    }
    if (claims.exp * 1000 <= Date.now()) {
      this.verified.delete(token);
      throw new TokenError('the access token has expired');
    }
    if (this.isRevoked.get(claims.jti)) throw new TokenError('the access token has been revoked');
    if (claims.gid !== undefined && !this.grantAlive.get(claims.gid, Math.floor(Date.now() / 1000))) throw new TokenError('the authorization this access token came from has been revoked');
    const client = this.clientActive.get(claims.client_id) as { trusted: number; actor: string | null } | undefined;
    if (client === undefined) throw new TokenError('the client of this access token is not registered (or was revoked)');
    return { ...claims, clientTrusted: client.trusted === 1, ...(client.actor !== null ? { clientActor: client.actor } : {}) };
  }

  /** RFC 7009 for our JWT access tokens: remember the jti until the token would expire anyway. */
  revokeToken(claims: AccessTokenClaims): void {
    this.revoke.run(claims.jti, claims.exp * 1000);
  }

  private async checkSignature(token: string): Promise<AccessTokenClaims> {
    try {
      const { payload } = await jwtVerify(token, this.jwks, { issuer: this.issuer, audience: this.audience, algorithms: [TOKEN_ALG], requiredClaims: ['exp', 'iat', 'jti', 'client_id'] });
      // A token from the future was not issued by this server as it runs now (a clock set back, a leaked key).
      if (payload.iat! > Date.now() / 1000 + this.clockSkewSeconds) {
        throw new TokenError(`the access token's "iat" claim is more than ${this.clockSkewSeconds} s in the future`);
      }
      return payload as AccessTokenClaims;
    } catch (err) {
      if (err instanceof TokenError) throw err;
      throw new TokenError(describe(err));
    }
  }
}

function describe(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'the access token has expired';
  if (err instanceof joseErrors.JWTClaimValidationFailed) return `the access token's "${err.claim}" claim is not valid here (${err.reason})`;
  if (err instanceof joseErrors.JWKSNoMatchingKey) return 'the access token is not signed with a key of this server';
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'the access token signature is not valid';
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'the access token uses an algorithm this server does not accept';
  if (err instanceof joseErrors.JWTInvalid || err instanceof joseErrors.JWSInvalid) return 'the access token is malformed';
  return 'the access token is not valid';
}

export function unverifiedClaims(token: string): AccessTokenClaims | undefined {
  try {
    return decodeJwt(token) as AccessTokenClaims;
  } catch {
    return undefined;
  }
}
