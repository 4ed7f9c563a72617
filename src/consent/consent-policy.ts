import { FhirError, type AccessDecision, type AccessPolicy, type AccessRequest, type Principal, type ReadRule, type TokenPrincipal } from '../fhir/index.js';
import type { AccessExpr } from '../fhir/access-expr.js';
import { satisfying } from '../fhir/access-constraints.js';
import { getPatientCompartmentParams } from '../fhir/definitions.js';
import { parseSearch } from '../fhir/search/parse.js';
import type { Logger } from '../logger.js';
import { patientUserOf, ScopePolicy } from '../smart-auth/scope-policy.js';
import type { Store } from '../store/index.js';
import { ConsentIndex, type ConsentSnapshot } from './consent-index.js';
import { and, applicableRules, not, or, permitExpr, type RequestContext } from './decide.js';
import { localReference } from './provisions.js';
import type { BreakGlassGrant, BreakGlassGrants, ConsentChainView } from './types.js';

export interface ConsentPolicyOptions {
  store: Store;
  baseUrl: string;
  chain: ConsentChainView;
  /** CONSENT_BASE: what applies to a patient's data where no provision of theirs decides. */
  base: 'deny' | 'permit';
  breakGlass?: BreakGlassGrants;
  logger?: Logger;
}

/** Normal access is for treatment; break-the-glass is emergency treatment. */
export const TREATMENT = 'TREAT';

const WRITES = new Set(['create', 'update', 'patch', 'delete']);
const NOT_AUDIT: AccessExpr = not({ types: ['AuditEvent'] });
const CACHE_MAX = 1000;

/**
 * Types that say who an actor is (roles, organizations, practitioners) or whom a device writes
 * for (Device.patient). They are no patient's data (outside the Patient compartment), so no
 * patient's Consent can permit writing them: only the operator's trusted integrations (and the
 * server) may, or a practitioner could make himself a member of any organization a Consent
 * permits. A device client may still update its own Device, bound to its patient (bindDevice).
 */
const AUTHORITY_TYPES: ReadonlySet<string> = new Set(['PractitionerRole', 'Organization', 'Practitioner', 'Device']);
/**
 * Patient data that carries authority: CareTeam membership makes an actor for every Consent that
 * names the team. Written by trusted integrations, or under a permit that names CareTeam.
 */
const PATIENT_AUTHORITY_TYPES: ReadonlySet<string> = new Set(['CareTeam']);

/** Refuses writes of what decides access to those not entitled to it, whatever their scopes. */
function assertEntitledWriter(p: TokenPrincipal, request: AccessRequest, limited: boolean): void {
  const type = request.resourceType!;
  if (p.trusted === true) return;
  if (AUTHORITY_TYPES.has(type) && !isOwnDeviceUpdate(p, request)) {
    const what = type === 'Device' ? 'Device.patient decides whom a device writes for' : `${type} resources say who an actor is`;
    throw new FhirError(403, 'forbidden', `${what}: only the operator's trusted integrations may write them`);
  }
  if (type === 'Consent' && patientUserOf(p) === undefined) {
    throw new FhirError(403, 'forbidden', "A patient's Consent is written only by the patient and the operator's trusted integrations");
  }
  if (type === 'CareTeam' && !limited) {
    // A patient's care team may be named by other patients' Consents: its members are not the patient's to choose alone.
    throw new FhirError(403, 'forbidden', "CareTeam membership decides who may act for patients: it is written by the operator's trusted integrations, or by those a patient's Consent permits to write CareTeam");
  }
}

/** A device client's update of its own Device record (kept to its patient by bindDevice). */
function isOwnDeviceUpdate(p: TokenPrincipal, r: AccessRequest): boolean {
  return r.resourceType === 'Device' && p.actor?.startsWith('Device/') === true && (r.interaction === 'update' || r.interaction === 'patch')
    && (r.id === undefined || `Device/${r.id}` === p.actor);
}

function actionOf(interaction: AccessRequest['interaction']): RequestContext['action'] {
  if (interaction === 'create') return 'collect';
  if (WRITES.has(interaction)) return 'correct';
  return 'access';
}

/** The patients whose Consents decide alike for one request context, and what they decide. */
interface PatientGroup { expr: AccessExpr; patients: string[] }

interface PatientDecisions {
  base: 'deny' | 'permit';
  /** Patients with at least one stored Consent (the others get the base policy). */
  consenting: string[];
  groups: PatientGroup[];
}

interface ConsentView extends PatientDecisions { stamp: string; validUntil: number; access: AccessExpr; known: AccessExpr }

/**
 * What a principal may see, from each patient's decision: a resource is visible only if EVERY
 * patient whose compartment holds it permits it (deny wins), so one patient's permit never
 * releases another's data. `override`: patients whose own decision is set aside (break-the-glass).
 */
function visibility(d: PatientDecisions, override: string[]): { access: AccessExpr; known: AccessExpr } {
  const overridden = new Set(override);
  const clauses: AccessExpr[] = [];
  const permitting: string[] = [...override];
  const refusing: string[] = [];
  for (const g of d.groups) {
    const patients = g.patients.filter((p) => !overridden.has(p));
    if (patients.length === 0) continue;
    if (g.expr === false) refusing.push(...patients);
    else {
      permitting.push(...patients);
      if (g.expr !== true) clauses.push(or([not({ patients }), g.expr]));
    }
  }
  if (d.base === 'deny') {
    // Someone must permit, and no patient outside those who permit anything may be involved.
    const known = and([{ patients: permitting }, not({ otherPatients: permitting })]);
    return { access: and([known, ...clauses]), known };
  }
  const silent = not({ patients: d.consenting });
  const access = and([not({ patients: refusing }), ...clauses]);
  return { access, known: and([or([{ patients: permitting }, silent]), not({ patients: refusing })]) };
}


/**
 * The decision step: SMART scopes (upper bound) ∩ the patient's Consent ∩ device binding, in one
 * place. Consent does not limit the patient themself, the server, or a client registered as
 * trusted; everyone else sees patient data only as the patients' Consents permit, compiled into
 * every query as an AccessExpr.
 */
export class ConsentPolicy implements AccessPolicy {
  readonly index: ConsentIndex;
  private readonly scopes = new ScopePolicy();
  private readonly views = new Map<string, ConsentView>();
  private readonly actorCache = new Map<string, { watched: number; actors: string[] }>();

  constructor(private readonly o: ConsentPolicyOptions) {
    this.index = new ConsentIndex(o.store, o.baseUrl, o.chain);
  }

  readRule(principal: Principal): ReadRule | undefined {
    return this.scopes.readRule(principal);
  }

  async authorize(principal: Principal, request: AccessRequest): Promise<AccessDecision> {
    const d = this.scopes.authorize(principal, request);
    if (principal.kind !== 'token' || request.interaction === 'capabilities') return d;
    if (principal.actor?.startsWith('Device/') && WRITES.has(request.interaction)) await this.bindDevice(principal.actor, request, d);
    const writes = WRITES.has(request.interaction) ? request.resourceType : undefined;
    if (writes !== undefined) assertEntitledWriter(principal, request, this.limitedByConsent(principal));
    if (!this.limitedByConsent(principal)) return d;
    const ctx: RequestContext = { actors: new Set(await this.actorsOf(principal)), action: actionOf(request.interaction), purpose: TREATMENT, now: Date.now() };
    if (writes !== undefined && PATIENT_AUTHORITY_TYPES.has(writes)) ctx.authorityType = writes;
    const view = await this.view(ctx);
    let { access, known } = view;
    if (ctx.action === 'access' && principal.fhirUser !== undefined) {
      const grants = this.o.breakGlass?.activeFor(principal.subject, ctx.now) ?? [];
      if (grants.length > 0) {
        ({ access, known } = visibility(view, grants.map((g) => g.patientId)));
        d.observe = (refs) => this.recordBreakGlass(grants, request, refs);
      }
    }
    // The audit trail tells who accessed a patient's data: the patient and trusted administrators
    // see it, never a principal whose access is itself what the trail records (not even where a
    // Consent or break-the-glass lets it see the patient's other data).
    d.consent = { access: and([NOT_AUDIT, access]), known: and([NOT_AUDIT, known]) };
    return d;
  }

  /** The patient themself, the server and trusted clients are not limited by consent. */
  private limitedByConsent(p: TokenPrincipal): boolean {
    if (patientUserOf(p) !== undefined) return false;
    return p.trusted !== true;
  }

  /** What the principal acts as: its client, its registered actor, a user's Practitioner with its roles, organizations and care teams. */
  async actorsOf(p: TokenPrincipal): Promise<string[]> {
    const actors = [`client:${p.clientId}`];
    if (p.actor) actors.push(p.actor);
    const user = p.fhirUser ? localReference(p.fhirUser, this.o.baseUrl) : undefined;
    if (user?.startsWith('Practitioner/')) actors.push(...(await this.practitionerActors(user)));
    return [...new Set(actors)];
  }

  async practitionerActors(practitioner: string): Promise<string[]> {
    const watched = this.o.store.watchedChanges();
    const cached = this.actorCache.get(practitioner);
    if (cached?.watched === watched) return cached.actors;
    const actors = [practitioner];
    const roles = (await this.find('PractitionerRole', [['practitioner', practitioner]])).filter((r) => (r.resource as { active?: boolean }).active !== false);
    for (const r of roles) {
      actors.push(`PractitionerRole/${r.id}`);
      const org = localReference((r.resource as { organization?: { reference?: string } }).organization?.reference, this.o.baseUrl);
      if (org) actors.push(org);
    }
    const members = [practitioner, ...roles.map((r) => `PractitionerRole/${r.id}`)].join(',');
    for (const t of await this.find('CareTeam', [['participant', members]])) {
      const status = (t.resource as { status?: string }).status;
      if (status !== 'inactive' && status !== 'entered-in-error') actors.push(`CareTeam/${t.id}`);
    }
    if (this.actorCache.size >= CACHE_MAX) this.actorCache.clear();
    this.actorCache.set(practitioner, { watched, actors });
    return actors;
  }

  private async find(type: string, params: Array<[string, string]>) {
    const q = parseSearch(type, params, { strict: true, defaultCount: 1000, maxCount: 1000 }).query;
    return (await this.o.store.search(q)).matches;
  }

  /** What patients' Consents permit for this request context, cached until any input changes. */
  async view(ctx: RequestContext): Promise<ConsentView> {
    await this.freshChain();
    const snap = await this.index.snapshot();
    const key = `${[...ctx.actors].sort().join(',')}|${ctx.action}|${ctx.purpose}|${ctx.authorityType ?? ''}`;
    const hit = this.views.get(key);
    if (hit && hit.stamp === snap.stamp && ctx.now < hit.validUntil) return hit;
    const view = this.compute(snap, ctx);
    if (this.views.size >= CACHE_MAX) this.views.clear();
    this.views.set(key, view);
    return view;
  }

  /** Brings the chain view up to date (CONSENT_SYNC_MS); a chain that cannot be read is a 503, never an old answer. */
  async freshChain(): Promise<void> {
    try {
      await this.o.chain.fresh();
    } catch (err) {
      throw new FhirError(503, 'transient', `The consent registry on chain cannot be read right now, so no consent-governed data can be served: ${(err as Error).message}`);
    }
  }

  /** The effective base: permit only while every stored Consent can be read (an unreadable one may have been an opt-out). */
  baseFor(snap: ConsentSnapshot): 'deny' | 'permit' {
    return this.o.base === 'permit' && snap.unreadable === 0 ? 'permit' : 'deny';
  }

  private compute(snap: ConsentSnapshot, ctx: RequestContext): ConsentView {
    const base = this.baseFor(snap);
    const horizon = { next: Number.POSITIVE_INFINITY };
    const groups = new Map<string, PatientGroup>();
    const consenting: string[] = [];
    for (const [patient, consents] of snap.byPatient) {
      consenting.push(patient);
      const expr = permitExpr(applicableRules(consents, ctx, horizon), consents.governed ? 'deny' : base);
      const k = JSON.stringify(expr);
      const g = groups.get(k) ?? { expr, patients: [] };
      g.patients.push(patient);
      groups.set(k, g);
    }
    const view = { base, consenting, groups: [...groups.values()] };
    return { stamp: snap.stamp, validUntil: horizon.next, ...view, ...visibility(view, []) };
  }

  /** A device client writes only Observations about its own patient, and its own Device record. */
  private async bindDevice(actor: string, request: AccessRequest, d: AccessDecision): Promise<void> {
    const deviceId = actor.slice('Device/'.length);
    const device = await this.o.store.read('Device', deviceId);
    const patient = device?.resource && !device.deleted
      ? localReference((device.resource as { patient?: { reference?: string } }).patient?.reference, this.o.baseUrl)
      : undefined;
    if (!patient?.startsWith('Patient/')) throw new FhirError(403, 'forbidden', `This client acts for ${actor}, which has no patient: it may not write`);
    let bound: Array<[string, string]>;
    if (request.resourceType === 'Observation' && request.interaction === 'create') bound = [['subject', patient]];
    else if (request.resourceType === 'Device' && (request.interaction === 'update' || request.interaction === 'patch') && (request.id === undefined || request.id === deviceId)) {
      bound = [['_id', deviceId], ['patient', patient]];
    } else {
      throw new FhirError(403, 'forbidden', `This client acts for ${actor}: it may only create Observations whose subject is ${patient} and update its own Device`);
    }
    d.queries = (d.queries ?? [[]]).map((g) => [...g, ...bound]);
  }

  /** Records the resources read under each grant; true when there were any. */
  private async recordBreakGlass(grants: BreakGlassGrant[], request: AccessRequest, refs: string[]): Promise<boolean> {
    let used = false;
    for (const g of grants) {
      const byType = new Map<string, string[]>();
      for (const r of refs) {
        const [type, id] = r.split('/') as [string, string];
        byType.set(type, [...(byType.get(type) ?? []), id]);
      }
      const seen: string[] = [];
      for (const [type, ids] of byType) {
        const cond = type === 'Patient' ? { ids: [g.patientId] } : { compartment: { patients: [g.patientId], params: getPatientCompartmentParams(type) } };
        for (const id of await satisfying(this.o.store, type, ids, cond)) seen.push(`${type}/${id}`);
      }
      if (seen.length > 0) {
        this.o.breakGlass!.recordAccess(g.id, { interaction: request.interaction, resources: seen });
        used = true;
      }
    }
    return used;
  }
}
