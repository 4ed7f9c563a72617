import express, { type NextFunction, type Request, type Response } from 'express';
import type Provider from 'oidc-provider';
import type { Logger } from 'pino';
import { escapeHtml } from './provider.js';
import type { LaunchContexts } from './launch-context.js';
import type { LoginRefusal, LoginThrottle } from './login-throttle.js';
import { PasswordBusyError } from './passwords.js';
import type { Registry, UserRecord } from './registry.js';
import { parseScopes } from './scopes.js';
import { scopeWords } from './scope-words.js';

export interface InteractionOptions {
  provider: Provider;
  registry: Registry;
  launches: LaunchContexts;
  fhirBase: string;
  /** Whether a Patient with this id exists (a practitioner picking the patient for launch/patient). */
  patientExists(id: string): Promise<boolean>;
  grantTtlSeconds: number;
  logger: Logger;
  /** Failed logins lock usernames and addresses for a while; checked before any password. */
  throttle: LoginThrottle;
  /**
   * Each login attempt (for the audit trail): 200, 401 for a wrong username or password, 429 when
   * refused unchecked; `account` is the user a refused attempt tried, when that user exists.
   */
  onLogin?: (e: { status: number; clientId?: string; user?: string; account?: string; address?: string }) => void;
}

function refusalMessage(r: LoginRefusal): string {
  const wait = r.retryAfterSeconds === 1 ? '1 second' : `${r.retryAfterSeconds} seconds`;
  switch (r.reason) {
    case 'account': return `Too many failed sign-ins for this username. Try again in ${wait}.`;
    case 'address': return `Too many failed sign-ins from your network address. Try again in ${wait}.`;
    default: return `Too many sign-ins at once. Try again in ${wait}.`;
  }
}

/** Served as /auth/assets/pages.css, so the pages need no inline style under their CSP. */
export const PAGE_STYLE = `*,*::before,*::after{box-sizing:border-box}
body{font-family:system-ui,sans-serif;line-height:1.5;color:#1b1b1b;background:#f4f6fa;margin:0}
.top{display:flex;align-items:center;gap:1rem;padding:.6rem 1rem;background:#1a4fa0;color:#fff}
.top .brand{font-weight:700;font-size:1.15rem}
main{max-width:36rem;margin:1.5rem auto;padding:1.5rem 1.25rem;background:#fff;border:1px solid #c4c4c4;border-radius:.35rem}
h1{font-size:1.6rem;line-height:1.25;margin:0 0 1rem}
label{display:block;margin:.6rem 0 .2rem;font-weight:600}
input[type=text],input[type=password]{display:block;width:100%;padding:.55rem;font-size:1rem;border:1px solid #6b6b6b;border-radius:.35rem}
fieldset{border:1px solid #c4c4c4;border-radius:.35rem;margin:1rem 0;padding:.5rem 1rem}
legend{font-weight:700;padding:0 .3rem}
.scope{display:flex;gap:.6rem;align-items:flex-start;margin:.6rem 0}
.scope input{width:1.3rem;height:1.3rem;margin:.15rem 0 0;flex:none}
.scope label{margin:0;font-weight:400}
small,.secondary{display:block;color:#555;font-size:.85rem;font-weight:400;overflow-wrap:anywhere}
code{background:#eee;padding:0 .2rem}
.actions{display:flex;flex-wrap:wrap;gap:.6rem;margin-top:1rem}
button{font:inherit;font-size:1rem;padding:.55rem 1.1rem;border-radius:.35rem;border:1px solid #1a4fa0;background:#1a4fa0;color:#fff;cursor:pointer}
button:hover{background:#123a78}
button.secondary-action{background:#fff;color:#1a4fa0}
button.secondary-action:hover{background:#f4f6fa}
:focus-visible{outline:3px solid #e0a100;outline-offset:2px}
.err{color:#a00;font-weight:600}
@media (max-width:40rem){main{margin:0;border:0;border-radius:0;padding:1rem .75rem}h1{font-size:1.35rem}}
`;

/** CSP of these pages; forms may also go to the app, since their submission ends in a redirect to it. */
function pagePolicy(redirectUri?: string): string {
  return `default-src 'none'; style-src 'self'; form-action 'self'${redirectSource(redirectUri)}; frame-ancestors 'none'; base-uri 'none'`;
}

function redirectSource(uri: string | undefined): string {
  if (!uri) return '';
  try {
    const u = new URL(uri);
    if (u.protocol === 'http:' || u.protocol === 'https:') return ` ${u.origin}`;
    return /^[a-z][a-z0-9+.-]*:$/i.test(u.protocol) ? ` ${u.protocol}` : '';
  } catch {
    return '';
  }
}

interface App { clientId: string; name?: string }

function page(title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>${escapeHtml(title)}</title><link rel="stylesheet" href="/auth/assets/pages.css"></head><body><header class="top"><span class="brand"><span aria-hidden="true">◆</span> Custos</span></header><main><h1>${escapeHtml(title)}</h1>${body}</main></body></html>`;
}

/** The app by its registered name; without one, said so, with the client id as secondary text. */
function appName(app: App): string {
  return app.name
    ? `<strong>${escapeHtml(app.name)}</strong>`
    : `<strong>An app without a registered name</strong> <small>(client id ${escapeHtml(app.clientId)})</small>`;
}

function errorBlock(error?: string): string {
  return error ? `<p class="err" role="alert">${escapeHtml(error)}</p>` : '';
}

function loginPage(uid: string, app: App, error?: string, username = ''): string {
  return page('Sign in', `<p>Sign in to let ${appName(app)} use health records on this server.</p>
${errorBlock(error)}
<form method="post" action="/auth/interaction/${escapeHtml(uid)}/login">
<label for="username">Username</label>
<input type="text" id="username" name="username" autocomplete="username" autocapitalize="none" spellcheck="false" required value="${escapeHtml(username)}"${username ? '' : ' autofocus'}>
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required${username ? ' autofocus' : ''}>
<div class="actions"><button type="submit">Sign in</button></div></form>
<form method="post" action="/auth/interaction/${escapeHtml(uid)}/abort"><div class="actions"><button type="submit" class="secondary-action">Cancel and go back to the app</button></div></form>`);
}

function approvePage(uid: string, app: App, user: UserRecord, scopes: string[], needsPatient: boolean, error?: string): string {
  const items = scopes.map((s, i) => `<div class="scope"><input type="checkbox" id="scope-${i}" name="scope" value="${escapeHtml(s)}" checked><label for="scope-${i}">${escapeHtml(scopeWords(s))} <small title="The permission as the app asked for it">${escapeHtml(s)}</small></label></div>`).join('\n');
  const picker = needsPatient
    ? `<label for="patient">Patient id (the record this app will work with)</label>
<input type="text" id="patient" name="patient" required autocomplete="off" pattern="[A-Za-z0-9\\-.]{1,64}">`
    : '';
  return page('Approve access', `<p>${appName(app)} asks to use health records on this server.</p>
<p>You are signed in as <strong>${escapeHtml(user.username)}</strong> <small>(${escapeHtml(user.fhirUser)})</small></p>
${errorBlock(error)}
<form method="post" action="/auth/interaction/${escapeHtml(uid)}/confirm">
<fieldset><legend>This app asks to:</legend>
<p class="secondary">Untick anything you do not want to allow.</p>
${items}
</fieldset>
${picker}
<div class="actions"><button type="submit" name="decision" value="approve">Allow what is ticked</button></div>
</form>
<form method="post" action="/auth/interaction/${escapeHtml(uid)}/abort"><div class="actions"><button type="submit" class="secondary-action">Deny and go back to the app</button></div></form>`);
}

/** Server-rendered login and approval pages for the authorization code flow. */
export function interactionRouter(o: InteractionOptions): express.Router {
  const r = express.Router();
  r.use(express.urlencoded({ extended: false, limit: '16kb' }));
  r.use((_req, res, next) => {
    res.set('Cache-Control', 'no-store');
    res.set('Content-Security-Policy', pagePolicy());
    next();
  });

  const appOf = (clientId: string): App => {
    const name = o.registry.getClient(clientId)?.name?.trim();
    return name ? { clientId, name } : { clientId };
  };
  const allowRedirect = (res: Response, params: Record<string, unknown>) => {
    res.set('Content-Security-Policy', pagePolicy(typeof params.redirect_uri === 'string' ? params.redirect_uri : undefined));
  };

  r.get('/:uid', async (req: Request, res: Response, next: NextFunction) => {
    try {
      const details = await o.provider.interactionDetails(req, res);
      allowRedirect(res, details.params);
      const name = appOf(String(details.params.client_id));
      if (details.prompt.name === 'login') {
        res.type('html').send(loginPage(details.uid, name));
        return;
      }
      const user = details.session?.accountId ? o.registry.getUser(details.session.accountId) : undefined;
      if (!user) {
        res.type('html').send(loginPage(details.uid, name));
        return;
      }
      const scopes = String(details.params.scope ?? '').split(' ').filter(Boolean);
      res.type('html').send(approvePage(details.uid, name, user, scopes, needsPatientPick(user, scopes, details.params.launch as string | undefined)));
    } catch (err) {
      next(err);
    }
  });

  r.post('/:uid/login', async (req: Request, res: Response, next: NextFunction) => {
    try {
      const details = await o.provider.interactionDetails(req, res);
      allowRedirect(res, details.params);
      const body = req.body as Record<string, string | undefined>;
      const username = String(body.username ?? '');
      const clientId = String(details.params.client_id);
      const address = req.socket.remoteAddress;
      const record = (status: number, user?: string) => {
        const account = status === 200 ? undefined : o.registry.getUserByUsername(username)?.fhirUser;
        o.onLogin?.({ status, clientId, ...(user ? { user } : {}), ...(account ? { account } : {}), ...(address ? { address } : {}) });
      };
      const refuse = async (r: LoginRefusal) => {
        record(429);
        res.status(429).set('Retry-After', String(r.retryAfterSeconds)).type('html').send(loginPage(details.uid, appOf(clientId), refusalMessage(r), username));
      };
      const gate = o.throttle.begin(username, address);
      if ('refused' in gate) {
        await refuse(gate.refused);
        return;
      }
      let user: UserRecord | undefined;
      try {
        user = await o.registry.authenticate(username, String(body.password ?? ''));
      } catch (err) {
        gate.ticket.abandoned();
        if (err instanceof PasswordBusyError) {
          await refuse({ reason: 'busy', retryAfterSeconds: 1 });
          return;
        }
        throw err;
      }
      if (!user) {
        const { locked, lockSeconds } = gate.ticket.failed();
        if (locked) o.logger.warn({ locked, lockSeconds, address }, 'login locked after repeated failures');
        record(401);
        res.status(401).type('html').send(loginPage(details.uid, appOf(clientId), 'Unknown username or wrong password.', username));
        return;
      }
      gate.ticket.succeeded();
      record(200, user.fhirUser);
      await o.provider.interactionFinished(req, res, { login: { accountId: user.accountId } }, { mergeWithLastSubmission: false });
    } catch (err) {
      next(err);
    }
  });

  r.post('/:uid/confirm', async (req: Request, res: Response, next: NextFunction) => {
    try {
      const details = await o.provider.interactionDetails(req, res);
      allowRedirect(res, details.params);
      const accountId = details.session?.accountId;
      const user = accountId ? o.registry.getUser(accountId) : undefined;
      if (!user || details.prompt.name !== 'consent') throw new Error('no signed-in user for this authorization request');
      const body = req.body as Record<string, string | string[] | undefined>;
      const asked = String(details.params.scope ?? '').split(' ').filter(Boolean);
      const ticked = new Set([body.scope ?? []].flat());
      const approved = asked.filter((s) => ticked.has(s));
      const launchId = details.params.launch as string | undefined;
      const launch = launchId ? o.launches.find(launchId) : undefined;
      if (launchId && !launch) throw new Error('the EHR launch has expired');
      let patient: string | undefined;
      if (user.fhirUser.startsWith('Patient/')) patient = user.fhirUser.slice('Patient/'.length);
      else if (launch?.patient) patient = launch.patient;
      else if (approved.includes('launch/patient')) {
        const picked = String(body.patient ?? '').trim();
        if (!/^[A-Za-z0-9\-.]{1,64}$/.test(picked) || !(await o.patientExists(picked))) {
          res.status(400).type('html').send(approvePage(details.uid, appOf(String(details.params.client_id)), user, asked, true, `No patient with id "${picked}".`));
          return;
        }
        patient = picked;
      }
      const { resource, other } = parseScopes(approved.join(' '));
      const declined = parseScopes(asked.filter((s) => !ticked.has(s)).join(' '));
      const grant = details.grantId
        ? (await o.provider.Grant.find(details.grantId))!
        : new o.provider.Grant({ accountId: user.accountId, clientId: String(details.params.client_id) });
      if (other.length) grant.addOIDCScope(other.join(' '));
      if (resource.length) grant.addResourceScope(o.fhirBase, resource.map((s) => s.raw).join(' '));
      // Declined scopes count as answered, so the consent prompt does not come back for them.
      if (declined.other.length) grant.rejectOIDCScope(declined.other.join(' '));
      if (declined.resource.length) grant.rejectResourceScope(o.fhirBase, declined.resource.map((s) => s.raw).join(' '));
      const grantId = await grant.save();
      o.launches.setForGrant(grantId, { patient, encounter: launch?.encounter, fhirUser: `${o.fhirBase}/${user.fhirUser}` }, o.grantTtlSeconds);
      await o.provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
    } catch (err) {
      next(err);
    }
  });

  r.post('/:uid/abort', async (req: Request, res: Response, next: NextFunction) => {
    try {
      allowRedirect(res, (await o.provider.interactionDetails(req, res)).params);
      await o.provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'The user denied the request' }, { mergeWithLastSubmission: false });
    } catch (err) {
      next(err);
    }
  });

  r.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
    const message = (err as Error)?.message ?? String(err);
    o.logger.info({ err: message }, 'authorization interaction failed');
    res.status(400).type('html').send(page('Authorization error', `<p class="err">${escapeHtml(message)}</p><p>Start again from the app.</p>`));
  });
  return r;
}

/** GET handler for the pages' stylesheet (/auth/assets/pages.css). */
export function pageStyleHandler(_req: Request, res: Response): void {
  res.set('Cache-Control', 'public, max-age=86400');
  res.set('X-Content-Type-Options', 'nosniff');
  res.type('text/css').send(PAGE_STYLE);
}

function needsPatientPick(user: UserRecord, scopes: string[], launch: string | undefined): boolean {
  return user.fhirUser.startsWith('Practitioner/') && !launch && scopes.includes('launch/patient');
}
