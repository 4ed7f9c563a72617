import type { CodeableConcept, Coding, Consent, ConsentProvision, Period, Reference } from '@medplum/fhirtypes';
import { isResourceType } from '../fhir/index.js';

/**
 * R4 Consent -> the provision tree the decision engine evaluates. Only what is listed here is
 * understood; anything else in a Consent is reported as a problem, and a Consent with problems
 * grants nothing (its deny provisions still apply: denying never widens access).
 */

export const CONSENT_SCOPE_SYSTEM = 'http://terminology.hl7.org/CodeSystem/consentscope';
export const CONSENT_ACTION_SYSTEM = 'http://terminology.hl7.org/CodeSystem/consentaction';
export const RESOURCE_TYPES_SYSTEM = 'http://hl7.org/fhir/resource-types';
/** Consent actor references to a registered OAuth client: identifier with this system and the client id. */
export const CLIENT_ID_SYSTEM = 'urn:custos:client';
const PURPOSE_SYSTEMS = new Set(['http://terminology.hl7.org/CodeSystem/v3-ActReason', 'http://terminology.hl7.org/CodeSystem/v3-PurposeOfUse']);
const ACTIONS = new Set(['collect', 'access', 'use', 'disclose', 'correct']);
export const ACTOR_TYPES = new Set(['Practitioner', 'PractitionerRole', 'Organization', 'CareTeam', 'RelatedPerson', 'Device', 'Patient']);

export interface ParsedProvision {
  /** The Consent it belongs to. */
  consentId: string;
  /** FHIRPath-like location, e.g. "Consent.provision.provision[1]". */
  path: string;
  depth: number;
  type?: 'permit' | 'deny';
  /** Epoch ms bounds (inclusive). */
  period?: { start?: number; end?: number };
  /** "Type/id" or "client:<id>"; with the role as written. */
  actors?: Array<{ ref: string; role?: string }>;
  actions?: string[];
  /** Purpose-of-use codes. */
  purposes?: string[];
  classes?: string[];
  codes?: string[];
  securityLabels?: string[];
  dataPeriod?: { start?: string; end?: string };
  data?: string[];
  children: ParsedProvision[];
}

export interface ParsedConsent {
  id: string;
  patientId?: string;
  status?: string;
  /** scope = patient-privacy. */
  privacy: boolean;
  root?: ParsedProvision;
  /** Elements the engine does not understand (paths, with why). */
  problems: string[];
}

const ROOT_KEYS = new Set(['resourceType', 'id', 'meta', 'implicitRules', 'language', 'text', 'contained', 'extension', 'identifier', 'status', 'scope', 'category',
  'patient', 'dateTime', 'performer', 'organization', 'sourceAttachment', 'sourceReference', 'policy', 'policyRule', 'verification', 'provision']);
const PROVISION_KEYS = new Set(['id', 'type', 'period', 'actor', 'action', 'securityLabel', 'purpose', 'class', 'code', 'dataPeriod', 'data', 'provision']);

/** "Patient/1", an absolute URL on this server's base, -> "Patient/1"; anything else undefined. */
export function localReference(ref: string | undefined, baseUrl: string): string | undefined {
  if (!ref) return undefined;
  const rel = ref.startsWith(`${baseUrl}/`) ? ref.slice(baseUrl.length + 1) : ref;
  const m = /^([A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/.exec(rel);
  return m && isResourceType(m[1]!) ? `${m[1]}/${m[2]}` : undefined;
}

const token = (c: Coding) => `${c.system ?? ''}|${c.code ?? ''}`;

export function parseConsent(c: Consent, baseUrl: string): ParsedConsent {
  const problems: string[] = [];
  for (const k of Object.keys(c)) if (!ROOT_KEYS.has(k)) problems.push(`Consent.${k} is not supported`);
  if (c.implicitRules) problems.push('Consent.implicitRules is not supported');
  const patient = localReference(c.patient?.reference, baseUrl);
  const privacy = (c.scope?.coding ?? []).some((x) => x.system === CONSENT_SCOPE_SYSTEM && x.code === 'patient-privacy');
  const out: ParsedConsent = { id: c.id ?? '', status: c.status, privacy, problems };
  if (patient?.startsWith('Patient/')) out.patientId = patient.slice('Patient/'.length);
  if (c.provision) out.root = parseProvision(c.provision, out.id, 'Consent.provision', 0, problems, baseUrl);
  return out;
}

function parseProvision(p: ConsentProvision, consentId: string, path: string, depth: number, problems: string[], baseUrl: string): ParsedProvision {
  const out: ParsedProvision = { consentId, path, depth, children: [] };
  for (const k of Object.keys(p)) if (!PROVISION_KEYS.has(k)) problems.push(`${path}.${k} is not supported`);
  if (p.type !== undefined) {
    if (p.type !== 'permit' && p.type !== 'deny') problems.push(`${path}.type must be permit or deny`);
    else out.type = p.type;
  } else if (depth > 0) problems.push(`${path}.type is required in nested provisions`);
  if (p.period) out.period = epochPeriod(p.period, `${path}.period`, problems);
  if (p.dataPeriod) {
    epochPeriod(p.dataPeriod, `${path}.dataPeriod`, problems);
    out.dataPeriod = { ...(p.dataPeriod.start ? { start: p.dataPeriod.start } : {}), ...(p.dataPeriod.end ? { end: p.dataPeriod.end } : {}) };
  }
  if (p.actor) {
    out.actors = [];
    p.actor.forEach((a, i) => {
      const ref = actorRef(a.reference, baseUrl);
      if (!ref) problems.push(`${path}.actor[${i}].reference must be a local ${[...ACTOR_TYPES].join('/')} reference or an identifier of system ${CLIENT_ID_SYSTEM}`);
      else out.actors!.push({ ref, ...(a.role?.coding?.[0]?.code ? { role: a.role.coding[0].code } : {}) });
    });
  }
  if (p.action) {
    out.actions = [];
    p.action.forEach((a: CodeableConcept, i) => {
      for (const c of a.coding ?? []) {
        if (c.system === CONSENT_ACTION_SYSTEM && c.code && ACTIONS.has(c.code)) out.actions!.push(c.code);
        else problems.push(`${path}.action[${i}] ${token(c)} is not a ${CONSENT_ACTION_SYSTEM} code`);
      }
      if (!a.coding?.length) problems.push(`${path}.action[${i}] has no coding`);
    });
  }
  if (p.purpose) {
    out.purposes = [];
    p.purpose.forEach((c, i) => {
      if (c.code && (!c.system || PURPOSE_SYSTEMS.has(c.system))) out.purposes!.push(c.code);
      else problems.push(`${path}.purpose[${i}] ${token(c)} is not a v3 purpose-of-use code`);
    });
  }
  if (p.class) {
    out.classes = [];
    p.class.forEach((c, i) => {
      if ((!c.system || c.system === RESOURCE_TYPES_SYSTEM) && c.code && isResourceType(c.code)) out.classes!.push(c.code);
      else problems.push(`${path}.class[${i}] ${token(c)} is not a resource type (system ${RESOURCE_TYPES_SYSTEM})`);
    });
  }
  if (p.code) {
    out.codes = [];
    p.code.forEach((cc, i) => {
      for (const c of cc.coding ?? []) if (c.code) out.codes!.push(token(c));
      if (!cc.coding?.some((c) => c.code)) problems.push(`${path}.code[${i}] has no coded value`);
    });
  }
  if (p.securityLabel) {
    out.securityLabels = [];
    p.securityLabel.forEach((c, i) => {
      if (c.code) out.securityLabels!.push(token(c));
      else problems.push(`${path}.securityLabel[${i}] has no code`);
    });
  }
  if (p.data) {
    out.data = [];
    p.data.forEach((d, i) => {
      const ref = localReference(d.reference?.reference, baseUrl);
      if (d.meaning !== 'instance') problems.push(`${path}.data[${i}].meaning ${String(d.meaning)} is not supported (only instance)`);
      else if (!ref) problems.push(`${path}.data[${i}].reference must be a local reference`);
      else out.data!.push(ref);
    });
  }
  (p.provision ?? []).forEach((child, i) => out.children.push(parseProvision(child, consentId, `${path}.provision[${i}]`, depth + 1, problems, baseUrl)));
  return out;
}

function actorRef(r: Reference | undefined, baseUrl: string): string | undefined {
  if (r?.identifier?.system === CLIENT_ID_SYSTEM && r.identifier.value && !r.reference) return `client:${r.identifier.value}`;
  const ref = localReference(r?.reference, baseUrl);
  return ref && ACTOR_TYPES.has(ref.split('/')[0]!) ? ref : undefined;
}

function epochPeriod(p: Period, path: string, problems: string[]): { start?: number; end?: number } {
  const out: { start?: number; end?: number } = {};
  for (const k of ['start', 'end'] as const) {
    const v = p[k];
    if (v === undefined) continue;
    const t = Date.parse(v);
    if (Number.isNaN(t)) problems.push(`${path}.${k} is not a valid dateTime`);
    // A date-only end covers that whole day.
    else out[k] = k === 'end' && /^\d{4}(-\d{2}(-\d{2})?)?$/.test(v) ? endOf(v) : t;
  }
  return out;
}

function endOf(v: string): number {
  const parts = v.split('-').map(Number);
  const [y, m, d] = [parts[0]!, parts[1], parts[2]];
  if (d !== undefined) return Date.UTC(y, m! - 1, d + 1) - 1;
  if (m !== undefined) return Date.UTC(y, m, 1) - 1;
  return Date.UTC(y + 1, 0, 1) - 1;
}
