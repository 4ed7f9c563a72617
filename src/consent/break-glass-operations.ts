import type { Parameters, ParametersParameter } from '@medplum/fhirtypes';
import { FhirError, type FhirRequest, type FhirResponse, type InstanceOperation, type TokenPrincipal } from '../fhir/index.js';
import { patientUserOf } from '../smart-auth/scope-policy.js';
import { BreakGlassInputError, type BreakGlassRecord, type BreakGlassStore } from './break-glass.js';
import type { BreakGlassGrant } from './types.js';

/** What the operations need of the user registry (smart-auth's Registry fits). */
export interface BreakGlassUsers {
  getUser(accountId: string): { accountId: string; fhirUser: string; breakGlass: boolean; disabledAt?: Date } | undefined;
}

const OPERATION = '$break-glass';
const instant = (ms: number) => new Date(ms).toISOString();
const forbidden = (msg: string) => new FhirError(403, 'forbidden', msg);

/** The caller must be a token; anonymous callers get the same 401 as everywhere else. */
function tokenPrincipal(req: FhirRequest): TokenPrincipal {
  const p = req.principal;
  if (p.kind === 'token') return p;
  if (p.kind === 'anonymous') throw new FhirError(401, 'login', 'A valid Bearer access token is required');
  throw forbidden(`${OPERATION} is for users' access tokens`);
}

function patientTarget(target: { resourceType: string; id: string; version?: number }): string {
  if (target.resourceType !== 'Patient') throw new FhirError(400, 'not-supported', `${OPERATION} applies to a Patient only: POST|GET Patient/[id]/${OPERATION}, not ${target.resourceType}`);
  if (target.version !== undefined) throw new FhirError(400, 'not-supported', `${OPERATION} applies to a patient, not to one version of it: drop /_history/${target.version}`);
  return target.id;
}

/**
 * Who may break the glass: the token of an enabled practitioner user registered with
 * `--break-glass`, with a user/ scope that allows reading. Throws 401/403 otherwise, before
 * anything about the patient is looked at.
 */
function assertMayBreakGlass(p: TokenPrincipal, users: BreakGlassUsers): { accountId: string; fhirUser: string } {
  const user = users.getUser(p.subject);
  if (!user) throw forbidden(`${OPERATION} is for practitioner users: this access token was not issued to a user (a client credentials token cannot break the glass)`);
  if (user.disabledAt !== undefined) throw forbidden(`${OPERATION}: this user account is disabled`);
  if (!user.fhirUser.startsWith('Practitioner/')) throw forbidden(`${OPERATION} is for practitioner users; this user is ${user.fhirUser}`);
  if (!user.breakGlass) {
    throw forbidden(`${OPERATION}: this user is not allowed to break the glass (an administrator registers such users with \`custos user add ... --break-glass\`)`);
  }
  if (!p.scopes.some((s) => s.context === 'user' && s.permissions.has('r'))) {
    throw forbidden(`${OPERATION} needs a token with a user/ scope that allows reading patient data (e.g. user/*.rs); this token has "${p.scope}"`);
  }
  return { accountId: user.accountId, fhirUser: user.fhirUser };
}

/** The `reason` of a Parameters body (exactly one, valueString); 400 otherwise. */
function reasonOf(body: unknown): unknown {
  const b = body as Parameters | undefined;
  if (!b || typeof b !== 'object' || Array.isArray(b) || b.resourceType !== 'Parameters') {
    throw new FhirError(400, 'invalid', `${OPERATION} takes a Parameters resource with a "reason" (valueString): why emergency access is needed`);
  }
  const reasons = (Array.isArray(b.parameter) ? b.parameter : []).filter((x) => x && typeof x === 'object' && x.name === 'reason');
  if (reasons.length === 0) throw new FhirError(400, 'required', `${OPERATION} needs a "reason" parameter (valueString): why emergency access is needed`, ['Parameters.parameter']);
  if (reasons.length > 1) throw new FhirError(400, 'invalid', `${OPERATION} takes exactly one "reason" parameter`, ['Parameters.parameter']);
  const value = reasons[0]!.valueString;
  if (typeof value !== 'string') throw new FhirError(400, 'invalid', `the "reason" parameter must have a valueString`, ['Parameters.parameter']);
  return value;
}

/** The grant as the POST answers it. */
export function grantParameters(g: BreakGlassGrant, minutes: number): Parameters {
  return {
    resourceType: 'Parameters',
    parameter: [
      { name: 'grant', valueId: g.id },
      { name: 'patient', valueReference: { reference: `Patient/${g.patientId}` } },
      { name: 'practitioner', valueReference: { reference: g.practitioner } },
      { name: 'reason', valueString: g.reason },
      { name: 'granted', valueInstant: instant(g.grantedAt) },
      { name: 'expires', valueInstant: instant(g.expiresAt) },
      Number.isInteger(minutes) ? { name: 'minutes', valueInteger: minutes } : { name: 'minutes', valueDecimal: minutes },
    ],
  };
}

/**
 * A patient's break-the-glass record: one `grant` part per grant, newest first, with its
 * practitioner, reason, granted, expires, active and one `access` part per recorded read (time,
 * interaction, what: a valueReference per resource read and/or a valueString with the query).
 */
export function breakGlassRecordParameters(patientId: string, records: BreakGlassRecord[], now: number): Parameters {
  return {
    resourceType: 'Parameters',
    parameter: [
      { name: 'patient', valueReference: { reference: `Patient/${patientId}` } },
      ...records.map((g): ParametersParameter => ({
        name: 'grant',
        part: [
          { name: 'id', valueId: g.id },
          { name: 'practitioner', valueReference: { reference: g.practitioner } },
          { name: 'reason', valueString: g.reason },
          { name: 'granted', valueInstant: instant(g.grantedAt) },
          { name: 'expires', valueInstant: instant(g.expiresAt) },
          { name: 'active', valueBoolean: g.expiresAt > now },
          ...g.accesses.map((a): ParametersParameter => ({
            name: 'access',
            part: [
              { name: 'time', valueInstant: instant(a.at) },
              { name: 'interaction', valueCode: a.interaction },
              ...(a.what.resources ?? []).map((r): ParametersParameter => ({ name: 'what', valueReference: { reference: r } })),
              ...(a.what.query !== undefined ? [{ name: 'what', valueString: a.what.query }] : []),
            ],
          })),
        ],
      })),
    ],
  };
}

/**
 * POST Patient/[id]/$break-glass (grant; Parameters with a `reason`) and GET
 * Patient/[id]/$break-glass (the patient's record), for the FHIR router. The handler checks its
 * own access (the practitioner may not see the patient yet):
 * - POST: an enabled practitioner user flagged `--break-glass` whose token has a user/ read
 *   scope; anyone else 403 (before the patient is looked up, so that the 404 for an unknown
 *   patient tells nothing to someone not allowed).
 * - GET: the patient themself (a patient user's token with some read scope) or an administrator
 *   (a trusted client's token with a system/ read scope on * or Patient); anyone else 403.
 */
export function breakGlassOperations(
  store: BreakGlassStore,
  users: BreakGlassUsers,
  patientExists: (id: string) => Promise<boolean>,
): { instance: { '$break-glass': InstanceOperation } } {
  const post = async (req: FhirRequest, patientId: string): Promise<FhirResponse> => {
    const user = assertMayBreakGlass(tokenPrincipal(req), users);
    const reason = reasonOf(req.body);
    if (!(await patientExists(patientId))) throw new FhirError(404, 'not-found', `Patient/${patientId} is not known`);
    let grant: BreakGlassGrant;
    try {
      grant = store.grant(user, patientId, reason);
    } catch (err) {
      if (err instanceof BreakGlassInputError) throw new FhirError(400, 'invalid', err.message);
      throw err;
    }
    return { status: 201, body: grantParameters(grant, store.minutes) };
  };

  const get = async (req: FhirRequest, patientId: string): Promise<FhirResponse> => {
    const p = tokenPrincipal(req);
    const self = patientUserOf(p) === patientId && p.scopes.some((s) => s.permissions.has('r'));
    const admin = p.trusted === true
      && p.scopes.some((s) => s.context === 'system' && s.permissions.has('r') && (s.resourceType === '*' || s.resourceType === 'Patient') && s.query.length === 0);
    if (!self && !admin) {
      throw forbidden(`The break-the-glass record of a patient is shown only to that patient (with a token that allows reading) and to administrators`);
    }
    const records = store.forPatient(patientId);
    if (records.length === 0 && !(await patientExists(patientId))) throw new FhirError(404, 'not-found', `Patient/${patientId} is not known`);
    return { status: 200, body: breakGlassRecordParameters(patientId, records, store.now()) };
  };

  const handler: InstanceOperation = async (req, target) => {
    const patientId = patientTarget(target);
    return req.method === 'POST' ? post(req, patientId) : get(req, patientId);
  };
  handler.checksOwnAccess = true;
  return { instance: { [OPERATION]: handler } as { '$break-glass': InstanceOperation } };
}
