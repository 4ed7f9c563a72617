/**
 * A driver of the SMART App Launch authorization code flow over real HTTP, as a browser would run
 * it: follows the redirects of /auth/authorize to our login and approval pages
 * (/auth/interaction/<uid>), fills both forms, follows the resume redirects and stops at the
 * redirect to the client's redirect_uri. Cookies are carried by a small jar (oidc-provider keeps
 * the interaction and the session in path-scoped cookies).
 *
 * Typical use in a test against `testServer()`:
 *
 *   const token = await patientToken(server, { patientId: 'p1', scope: 'patient/Observation.rs' });
 *   await fetch(`${server.base}/Observation`, { headers: { authorization: `Bearer ${token}` } });
 */
import { createHash, randomBytes } from 'node:crypto';
import type { SmartAuth } from '../src/smart-auth/index.js';

/** What the helpers need of a running server (`testServer()` returns a superset). */
export interface SmartTestServer {
  /** The FHIR base URL, also the `aud` of authorization requests. */
  base: string;
  app: { auth: SmartAuth };
}

// ---------------------------------------------------------------------------------------------
// Cookie jar (one host; RFC 6265 path matching and expiry, enough for oidc-provider's cookies)
// ---------------------------------------------------------------------------------------------

interface StoredCookie { name: string; value: string; path: string; expires?: number }

export class CookieJar {
  private readonly cookies = new Map<string, StoredCookie>();

  /** Remembers the Set-Cookie headers of a response to a request for `url`. */
  store(url: string, res: Response): void {
    const requestPath = new URL(url).pathname;
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(';');
      const eq = pair!.indexOf('=');
      if (eq <= 0) continue;
      const c: StoredCookie = { name: pair!.slice(0, eq).trim(), value: pair!.slice(eq + 1).trim(), path: defaultPath(requestPath) };
      for (const a of attrs) {
        const [k, ...v] = a.split('=');
        const key = k!.trim().toLowerCase();
        const val = v.join('=').trim();
        if (key === 'path' && val.startsWith('/')) c.path = val;
        else if (key === 'max-age') c.expires = Date.now() + Number(val) * 1000;
        else if (key === 'expires' && c.expires === undefined) c.expires = Date.parse(val);
      }
      const id = `${c.name};${c.path}`;
      if (c.expires !== undefined && c.expires <= Date.now()) this.cookies.delete(id);
      else this.cookies.set(id, c);
    }
  }

  /** The Cookie header for a request to `url` (undefined when no cookie applies). */
  header(url: string): string | undefined {
    const p = new URL(url).pathname;
    const now = Date.now();
    const matching = [...this.cookies.values()]
      .filter((c) => (c.expires === undefined || c.expires > now) && pathMatches(p, c.path))
      .sort((a, b) => b.path.length - a.path.length);
    return matching.length ? matching.map((c) => `${c.name}=${c.value}`).join('; ') : undefined;
  }
}

function defaultPath(requestPath: string): string {
  const i = requestPath.lastIndexOf('/');
  return i <= 0 ? '/' : requestPath.slice(0, i);
}

function pathMatches(requestPath: string, cookiePath: string): boolean {
  if (requestPath === cookiePath) return true;
  if (!requestPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith('/') || requestPath[cookiePath.length] === '/';
}

/** fetch without following redirects, sending and storing the jar's cookies. */
export async function jarFetch(jar: CookieJar, url: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  const cookie = jar.header(url);
  if (cookie) headers.set('cookie', cookie);
  const res = await fetch(url, { ...init, headers, redirect: 'manual' });
  jar.store(url, res);
  return res;
}

// ---------------------------------------------------------------------------------------------
// PKCE, authorize URL, token exchange
// ---------------------------------------------------------------------------------------------

/** A PKCE S256 pair: a random verifier and its challenge (RFC 7636). */
export function pkcePair(): { verifier: string; challenge: string; method: 'S256' } {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url'), method: 'S256' };
}

export interface AuthorizeParams {
  clientId: string;
  redirectUri: string;
  scope: string;
  /** The FHIR base URL (SMART `aud`). */
  aud: string;
  state?: string;
  /** S256 challenge; omit `codeChallenge` to send none. */
  codeChallenge?: string;
  codeChallengeMethod?: string;
  launch?: string;
  /** Extra or overriding parameters. */
  extra?: Record<string, string>;
}

/** The full /auth/authorize?... URL for these parameters (response_type=code). */
export function authorizeUrl(authorizeEndpoint: string, p: AuthorizeParams): string {
  const u = new URL(authorizeEndpoint);
  const q = u.searchParams;
  q.set('response_type', 'code');
  q.set('client_id', p.clientId);
  q.set('redirect_uri', p.redirectUri);
  q.set('scope', p.scope);
  q.set('aud', p.aud);
  q.set('state', p.state ?? randomBytes(12).toString('base64url'));
  if (p.codeChallenge !== undefined) {
    q.set('code_challenge', p.codeChallenge);
    q.set('code_challenge_method', p.codeChallengeMethod ?? 'S256');
  }
  if (p.launch !== undefined) q.set('launch', p.launch);
  for (const [k, v] of Object.entries(p.extra ?? {})) q.set(k, v);
  return u.href;
}

export interface TokenResult<T = Record<string, any>> { status: number; headers: Headers; body: T }

/** POSTs a form to an OAuth endpoint; returns status, headers and the JSON body (or {} when empty). */
export async function postForm(url: string, form: Record<string, string>, headers: Record<string, string> = {}): Promise<TokenResult> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', ...headers },
    body: new URLSearchParams(form),
  });
  const text = await res.text();
  let body: Record<string, any> = {};
  if (text) {
    try {
      body = JSON.parse(text) as Record<string, any>;
    } catch {
      body = { raw: text };
    }
  }
  return { status: res.status, headers: res.headers, body };
}

/** Exchanges an authorization code at the token endpoint (public client: client_id in the body; confidential: HTTP Basic). */
export async function exchangeCode(tokenUrl: string, o: { code: string; verifier: string; redirectUri: string; clientId: string; clientSecret?: string }): Promise<TokenResult> {
  const form: Record<string, string> = { grant_type: 'authorization_code', code: o.code, redirect_uri: o.redirectUri, code_verifier: o.verifier };
  const headers: Record<string, string> = {};
  if (o.clientSecret !== undefined) headers.authorization = basicAuth(o.clientId, o.clientSecret);
  else form.client_id = o.clientId;
  return postForm(tokenUrl, form, headers);
}

/** Uses a refresh token (optionally asking for `scope`). */
export async function refreshToken(tokenUrl: string, o: { refreshToken: string; clientId: string; clientSecret?: string; scope?: string }): Promise<TokenResult> {
  const form: Record<string, string> = { grant_type: 'refresh_token', refresh_token: o.refreshToken };
  if (o.scope !== undefined) form.scope = o.scope;
  const headers: Record<string, string> = {};
  if (o.clientSecret !== undefined) headers.authorization = basicAuth(o.clientId, o.clientSecret);
  else form.client_id = o.clientId;
  return postForm(tokenUrl, form, headers);
}

export function basicAuth(clientId: string, secret: string): string {
  // RFC 6749 2.3.1: form-urlencode both parts before base64.
  const enc = (s: string) => encodeURIComponent(s).replace(/%20/g, '+');
  return `Basic ${Buffer.from(`${enc(clientId)}:${enc(secret)}`).toString('base64')}`;
}

// ---------------------------------------------------------------------------------------------
// Login and approval
// ---------------------------------------------------------------------------------------------

/** The authorization server sent the browser back to the client with an error instead of a code. */
export class AuthorizeRedirectError extends Error {
  constructor(readonly redirectedTo: string, readonly error: string | null, readonly errorDescription: string | null) {
    super(`authorization ended with ${error ?? 'no code'}: ${errorDescription ?? ''} (${redirectedTo})`);
  }
}

/** An authorization step answered with a page that is neither the login nor the approval form. */
export class AuthorizePageError extends Error {
  constructor(readonly url: string, readonly status: number, readonly html: string) {
    super(`authorization stopped at ${url} with HTTP ${status}: ${pageText(html).slice(0, 300)}`);
  }
}

export interface AuthorizeWithLoginOptions {
  /** The full /auth/authorize?... URL. */
  authorizeUrl: string;
  username: string;
  password: string;
  /** Patient id to type into the approval page when it asks (practitioner standalone launch). */
  patient?: string;
  /** Scopes to leave unticked on the approval page (all listed scopes are ticked otherwise). */
  untick?: string[];
  /** A jar to reuse (an existing session); a fresh one by default. */
  jar?: CookieJar;
  /**
   * Extra fields to post with the approval form, as a tampering browser could (e.g. a `scope` that
   * was not offered, or a `patient` the page did not ask for). Values are appended.
   */
  extraApprovalFields?: Record<string, string | string[]>;
}

export interface AuthorizeResult {
  code: string;
  state: string;
  /** The full URL the authorization server redirected to (the client's redirect_uri with code, state, iss). */
  redirectedTo: string;
  /** The scopes the approval page listed, when it was shown. */
  listedScopes?: string[];
  /** Whether the approval page asked for a patient id. */
  askedForPatient?: boolean;
}

const MAX_STEPS = 20;

/**
 * Runs a browser through the authorization: GET the authorize URL, follow redirects to our pages,
 * post the login form, post the approval form (every listed scope ticked unless in `untick`,
 * `patient` filled in when asked), follow the resume redirects until the redirect leaves /auth/,
 * and return the code. Throws AuthorizeRedirectError when the client gets an error instead of a
 * code, AuthorizePageError when a page is an error page.
 */
export async function authorizeWithLogin(opts: AuthorizeWithLoginOptions): Promise<AuthorizeResult> {
  const jar = opts.jar ?? new CookieJar();
  const authPrefix = `${new URL(opts.authorizeUrl).origin}/auth/`;
  const untick = new Set(opts.untick ?? []);
  let url = opts.authorizeUrl;
  let init: RequestInit = {};
  let listedScopes: string[] | undefined;
  let askedForPatient: boolean | undefined;
  for (let step = 0; step < MAX_STEPS; step++) {
    const res = await jarFetch(jar, url, init);
    if (res.status >= 300 && res.status < 400) {
      await res.arrayBuffer();
      const location = res.headers.get('location');
      if (!location) throw new Error(`redirect without Location from ${url}`);
      const next = new URL(location, url).href;
      if (!next.startsWith(authPrefix)) {
        const q = new URL(next).searchParams;
        const code = q.get('code');
        if (!code) throw new AuthorizeRedirectError(next, q.get('error'), q.get('error_description'));
        return { code, state: q.get('state') ?? '', redirectedTo: next, listedScopes, askedForPatient };
      }
      url = next;
      init = {};
      continue;
    }
    const html = await res.text();
    const action = formAction(html, /\/(login|confirm)$/);
    if (res.status !== 200 || !action) throw new AuthorizePageError(url, res.status, html);
    const target = new URL(action, url).href;
    const form = new URLSearchParams();
    if (action.endsWith('/login')) {
      form.set('username', opts.username);
      form.set('password', opts.password);
    } else {
      listedScopes = checkboxValues(html, 'scope');
      for (const s of listedScopes) if (!untick.has(s)) form.append('scope', s);
      askedForPatient = /<input[^>]*name="patient"/.test(html);
      if (askedForPatient) {
        if (opts.patient === undefined) throw new Error('the approval page asks for a patient id; pass `patient`');
        form.set('patient', opts.patient);
      }
      for (const [k, v] of Object.entries(opts.extraApprovalFields ?? {})) for (const x of [v].flat()) form.append(k, x);
      form.set('decision', 'approve');
    }
    url = target;
    init = { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString() };
  }
  throw new Error(`authorization did not finish within ${MAX_STEPS} steps (last: ${url})`);
}

function decodeEntities(s: string): string {
  return s.replace(/&(amp|lt|gt|quot|#39);/g, (_m, e: string) => ({ amp: '&', lt: '<', gt: '>', quot: '"', '#39': "'" })[e]!);
}

function formAction(html: string, wanted: RegExp): string | undefined {
  for (const m of html.matchAll(/<form\b[^>]*\baction="([^"]*)"/g)) {
    const action = decodeEntities(m[1]!);
    if (wanted.test(action)) return action;
  }
  return undefined;
}

function checkboxValues(html: string, name: string): string[] {
  const out: string[] = [];
  for (const m of html.matchAll(/<input\b[^>]*>/g)) {
    const tag = m[0];
    if (!/\btype="checkbox"/.test(tag) || !new RegExp(`\\bname="${name}"`).test(tag)) continue;
    const v = /\bvalue="([^"]*)"/.exec(tag);
    if (v) out.push(decodeEntities(v[1]!));
  }
  return out;
}

/** The visible text of a page, for error messages. */
export function pageText(html: string): string {
  return decodeEntities(html.replace(/<style[\s\S]*?<\/style>/g, '').replace(/<[^>]+>/g, ' ')).replace(/\s+/g, ' ').trim();
}

// ---------------------------------------------------------------------------------------------
// Whole flows
// ---------------------------------------------------------------------------------------------

export interface CodeFlowOptions {
  clientId: string;
  redirectUri: string;
  scope: string;
  username: string;
  password: string;
  clientSecret?: string;
  patient?: string;
  untick?: string[];
  launch?: string;
  extraApprovalFields?: Record<string, string | string[]>;
  /** Extra authorize parameters (e.g. prompt). */
  extra?: Record<string, string>;
}

export interface CodeFlowResult extends AuthorizeResult {
  verifier: string;
  token: TokenResult;
}

/** Authorize (with login and approval) + code exchange for a registered client and user. */
export async function codeFlow(server: SmartTestServer, o: CodeFlowOptions): Promise<CodeFlowResult> {
  const e = server.app.auth.endpoints;
  const pkce = pkcePair();
  const url = authorizeUrl(e.authorize, { clientId: o.clientId, redirectUri: o.redirectUri, scope: o.scope, aud: server.base, codeChallenge: pkce.challenge, launch: o.launch, extra: o.extra });
  const auth = await authorizeWithLogin({ authorizeUrl: url, username: o.username, password: o.password, patient: o.patient, untick: o.untick, extraApprovalFields: o.extraApprovalFields });
  const token = await exchangeCode(e.token, { code: auth.code, verifier: pkce.verifier, redirectUri: o.redirectUri, clientId: o.clientId, clientSecret: o.clientSecret });
  return { ...auth, verifier: pkce.verifier, token };
}

/** A redirect URI that is never fetched (the flow stops at the redirect). */
export const UNUSED_REDIRECT_URI = 'http://127.0.0.1:9/smart-helpers/callback';

/** A fresh username and password (random, so tests can call this repeatedly on one server). */
export function newCredentials(prefix = 'user'): { username: string; password: string } {
  return { username: `${prefix}-${randomBytes(6).toString('hex')}`, password: randomBytes(12).toString('base64url') };
}

/**
 * An access token of a patient user: registers a public client (allowed `launch/patient` + `scope`)
 * and a user linked to `Patient/<patientId>` (the Patient need not exist), runs the whole
 * standalone launch (login, approval with every scope ticked, code exchange with PKCE) and returns
 * the access token. The token carries `patient: patientId` and the granted `scope`; it confines
 * the bearer to that patient's compartment. Throws if the flow fails.
 *
 *   const token = await patientToken(server, { patientId, scope: 'patient/*.rs' });
 */
export async function patientToken(server: SmartTestServer, o: { patientId: string; scope: string }): Promise<string> {
  const scope = `launch/patient ${o.scope}`;
  const registry = server.app.auth.registry;
  const { client } = registry.addClient({ type: 'public', name: 'patientToken test app', redirectUris: [UNUSED_REDIRECT_URI], scope });
  const creds = newCredentials('patient');
  await registry.addUser({ ...creds, fhirUser: `Patient/${o.patientId}` });
  const flow = await codeFlow(server, { clientId: client.clientId, redirectUri: UNUSED_REDIRECT_URI, scope, ...creds });
  if (flow.token.status !== 200 || typeof flow.token.body.access_token !== 'string') {
    throw new Error(`patientToken: token exchange failed: ${flow.token.status} ${JSON.stringify(flow.token.body)}`);
  }
  return flow.token.body.access_token as string;
}
