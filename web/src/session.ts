/**
 * The SMART App Launch session (standalone launch, public client, PKCE) through `fhirclient`,
 * and the one way the pages talk to the FHIR server. fhirclient keeps its state and tokens in
 * sessionStorage (never localStorage); a refresh token (online_access) renews the access token
 * while the tab lives. When the session cannot be renewed, calls throw SessionExpired and the
 * shell offers to sign in again, returning to the same page with the patient's drafts intact.
 */
import FHIR from 'fhirclient';
import type { PortalConfig } from './config.js';

type SmartClient = Awaited<ReturnType<typeof FHIR.oauth2.ready>>;

const RETURN_TO = 'custos-return-to';

export class SessionExpired extends Error {
  constructor() { super('Your session has ended. Sign in again to continue; what you typed is kept.'); }
}

/** A FHIR request the server refused or could not answer: `status` and the OperationOutcome's text. */
export class FhirProblem extends Error {
  constructor(readonly status: number, message: string, readonly outcome?: unknown) { super(message); }
}

/** Fired on window whenever a call finds the session gone (the shell shows the sign-in prompt). */
export const SESSION_EXPIRED_EVENT = 'custos-session-expired';

export interface Session {
  readonly patientId: string;
  /** The signed-in user's FHIR reference (fhirUser), e.g. "Patient/123". */
  readonly fhirUser?: string;
  readonly config: PortalConfig;
  /** GET a path relative to the FHIR base ("Observation?code=..."), or an absolute URL on it. */
  get<T = any>(path: string): Promise<T>;
  post<T = any>(path: string, body: unknown): Promise<T>;
  put<T = any>(path: string, body: unknown): Promise<T>;
  /** An absolute URL on the FHIR base. */
  url(path: string): string;
}

export function signIn(config: PortalConfig): Promise<never> {
  sessionStorage.setItem(RETURN_TO, location.hash);
  const redirectUri = new URL('./', document.baseURI).href;
  return FHIR.oauth2.authorize({
    iss: config.fhirBase, clientId: config.clientId, scope: config.scope, redirectUri, pkceMode: 'required',
  }) as Promise<never>;
}

export function signOut(): void {
  for (const k of Object.keys(sessionStorage)) sessionStorage.removeItem(k);
  location.assign(new URL('./', document.baseURI).href);
}

/** The session after the authorization redirect or a reload; undefined when the patient must sign in. */
export async function resumeSession(config: PortalConfig): Promise<Session | undefined> {
  const q = new URLSearchParams(location.search);
  const returning = q.has('code') || q.has('error');
  if (!returning && !sessionStorage.getItem('SMART_KEY')) return undefined;
  if (q.has('error')) {
    history.replaceState(null, '', location.pathname);
    const why = q.get('error') === 'access_denied' ? 'You did not allow the portal to open your record.' : `Sign-in did not complete (${q.get('error_description') ?? q.get('error')}).`;
    throw new Error(why);
  }
  let client: SmartClient;
  try {
    client = await FHIR.oauth2.ready();
  } catch (err) {
    if (!returning) return undefined; // a stale state from an earlier session: start again
    throw new Error(`Sign-in did not complete: ${(err as Error).message}`);
  }
  // fhirclient removes code and state; the authorization server's iss (RFC 9207) stays behind.
  if (location.search) history.replaceState(null, '', location.pathname + location.hash);
  const back = sessionStorage.getItem(RETURN_TO);
  if (back !== null) { sessionStorage.removeItem(RETURN_TO); if (back) location.hash = back; }
  const patientId = client.getPatientId();
  if (!patientId) throw new Error('This account is not linked to a patient record, so the portal has nothing to show.');
  return new SmartSession(client, config, patientId);
}

class SmartSession implements Session {
  readonly fhirUser?: string;
  constructor(private readonly client: SmartClient, readonly config: PortalConfig, readonly patientId: string) {
    const u = client.getFhirUser();
    if (u) this.fhirUser = u;
  }

  url(path: string): string {
    const base = this.client.state.serverUrl.replace(/\/+$/, '') + '/';
    return path.startsWith(base) ? path : base + path.replace(/^\/+/, '');
  }

  get<T>(path: string): Promise<T> { return this.call<T>('GET', path); }
  post<T>(path: string, body: unknown): Promise<T> { return this.call<T>('POST', path, body); }
  put<T>(path: string, body: unknown): Promise<T> { return this.call<T>('PUT', path, body); }

  private async token(): Promise<string> {
    try {
      await this.client.refreshIfNeeded();
    } catch {
      throw this.expired();
    }
    const t = this.client.state.tokenResponse?.access_token;
    if (!t) throw this.expired();
    return t;
  }

  private expired(): SessionExpired {
    window.dispatchEvent(new Event(SESSION_EXPIRED_EVENT));
    return new SessionExpired();
  }

  private async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const headers: Record<string, string> = { Authorization: `Bearer ${await this.token()}`, Accept: 'application/fhir+json' };
    if (body !== undefined) headers['Content-Type'] = 'application/fhir+json';
    let r: Response;
    try {
      r = await fetch(this.url(path), { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    } catch {
      throw new FhirProblem(0, 'The server cannot be reached. Check your connection and try again.');
    }
    if (r.status === 401) throw this.expired();
    const text = await r.text();
    let json: unknown;
    try { json = text ? JSON.parse(text) : undefined; } catch { json = undefined; }
    if (!r.ok) throw new FhirProblem(r.status, outcomeText(json) ?? `The server answered HTTP ${r.status}.`, json);
    return json as T;
  }
}

/** The diagnostics of an OperationOutcome, joined. */
export function outcomeText(body: unknown): string | undefined {
  const o = body as { resourceType?: string; issue?: Array<{ diagnostics?: string; details?: { text?: string } }> } | undefined;
  if (o?.resourceType !== 'OperationOutcome' || !Array.isArray(o.issue)) return undefined;
  const texts = o.issue.map((i) => i.diagnostics ?? i.details?.text).filter((t): t is string => !!t);
  return texts.length ? texts.join(' ') : undefined;
}
