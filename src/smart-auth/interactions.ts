import express, { type NextFunction, type Request, type Response } from 'express';
import type Provider from 'oidc-provider';
import type { Logger } from 'pino';
import { escapeHtml } from './provider.js';
import type { LaunchContexts } from './launch-context.js';
import type { LoginRefusal, LoginThrottle } from './login-throttle.js';
import { PasswordBusyError } from './passwords.js';
import type { Registry, UserRecord } from './registry.js';
import { parseScopes } from './scopes.js';

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

const PAGE_STYLE = 'body{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem}label{display:block;margin:.4rem 0}input[type=text],input[type=password]{width:100%;padding:.4rem}button{margin:.8rem .4rem 0 0;padding:.4rem 1rem}.err{color:#a00}code{background:#eee;padding:0 .2rem}';

function page(title: string, body: string): string {
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>${escapeHtml(title)}</title><style>${PAGE_STYLE}</style></head><body><h1>${escapeHtml(title)}</h1>${body}</body></html>`;
}

function loginPage(uid: string, clientName: string, error?: string): string {
  return page('Sign in', `<p>Sign in to let <b>${escapeHtml(clientName)}</b> access health data on this server.</p>
${error ? `<p class="err">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/auth/interaction/${escapeHtml(uid)}/login" autocomplete="off">
<label>Username <input type="text" name="username" required autofocus></label>
<label>Password <input type="password" name="password" required></label>
<button type="submit">Sign in</button></form>
<form method="post" action="/auth/interaction/${escapeHtml(uid)}/abort"><button type="submit">Cancel</button></form>`);
}

function approvePage(uid: string, clientName: string, user: UserRecord, scopes: string[], needsPatient: boolean, error?: string): string {
  const items = scopes.map((s) => `<label><input type="checkbox" name="scope" value="${escapeHtml(s)}" checked> <code>${escapeHtml(s)}</code></label>`).join('\n');
  const picker = needsPatient
    ? `<label>Patient id (the record this app will work with) <input type="text" name="patient" required pattern="[A-Za-z0-9\\-.]{1,64}"></label>`
    : '';
  return page('Approve access', `<p>Signed in as <b>${escapeHtml(user.username)}</b> (${escapeHtml(user.fhirUser)}).</p>
<p><b>${escapeHtml(clientName)}</b> asks for:</p>
${error ? `<p class="err">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/auth/interaction/${escapeHtml(uid)}/confirm">
${items}
${picker}
<button type="submit" name="decision" value="approve">Approve</button>
</form>
<form method="post" action="/auth/interaction/${escapeHtml(uid)}/abort"><button type="submit">Deny</button></form>`);
}

/** Server-rendered login and approval pages for the authorization code flow. */
export function interactionRouter(o: InteractionOptions): express.Router {
  const r = express.Router();
  r.use(express.urlencoded({ extended: false, limit: '16kb' }));
  r.use((_req, res, next) => {
    res.set('Cache-Control', 'no-store');
    res.set('Content-Security-Policy', "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'");
    next();
  });

  const clientName = async (clientId: string) => {
    const c = o.registry.getClient(clientId);
    return c?.name || clientId;
  };

  r.get('/:uid', async (req: Request, res: Response, next: NextFunction) => {
    try {
      const details = await o.provider.interactionDetails(req, res);
      const name = await clientName(String(details.params.client_id));
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
        res.status(429).set('Retry-After', String(r.retryAfterSeconds)).type('html').send(loginPage(details.uid, await clientName(clientId), refusalMessage(r)));
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
        res.status(401).type('html').send(loginPage(details.uid, await clientName(clientId), 'Unknown username or wrong password.'));
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
          res.status(400).type('html').send(approvePage(details.uid, await clientName(String(details.params.client_id)), user, asked, true, `No patient with id "${picked}".`));
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

function needsPatientPick(user: UserRecord, scopes: string[], launch: string | undefined): boolean {
  return user.fhirUser.startsWith('Practitioner/') && !launch && scopes.includes('launch/patient');
}
