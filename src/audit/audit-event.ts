import type { AuditEvent, AuditEventAgent, AuditEventEntity, Coding } from '@medplum/fhirtypes';
import { AUDIT_SEQUENCE_URL, CLIENT_ID_SYSTEM, type AuditFacts, type AuditInteraction } from '../fhir/audit-port.js';
import type { Principal } from '../fhir/index.js';
import { AUDIT_ENTITY_PATIENT_URL } from '../fhir/audit-view.js';
import type { SecurityEvent } from '../smart-auth/server.js';

/**
 * One FHIR interaction as the audit trail records it, and the R4 AuditEvent it becomes,
 * following the IHE Basic Audit Log Patterns (BALP) RESTful conventions. Only references,
 * codes and the blinded form of queries go into an AuditEvent: never names or identifiers.
 */

export type { AuditFacts, AuditInteraction } from '../fhir/audit-port.js';

export { AUDIT_SEQUENCE, AUDIT_SEQUENCE_URL, CLIENT_ID_SYSTEM } from '../fhir/audit-port.js';

/**
 * The parts every AuditEvent shares are deeply frozen constants: canonical JSON serializes a
 * frozen object once (store/content-hash.ts), and a search's AuditEvent repeats the patient
 * entity's type and role for every patient of its page.
 */
function constant<T>(value: T): T {
  if (typeof value === 'object' && value !== null) {
    for (const v of Object.values(value)) constant(v);
    Object.freeze(value);
  }
  return value;
}

const DCM = 'http://dicom.nema.org/resources/ontology/DCM';
const USER_AUTHENTICATION: Coding = constant({ system: DCM, code: '110114' });
const REST_TYPE: Coding = constant({ system: 'http://terminology.hl7.org/CodeSystem/audit-event-type', code: 'rest' });
const INTERACTION_SYSTEM = 'http://hl7.org/fhir/restful-interaction';
const ENTITY_TYPE = 'http://terminology.hl7.org/CodeSystem/audit-entity-type';
const OBJECT_ROLE = 'http://terminology.hl7.org/CodeSystem/object-role';
const PURPOSE = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
const PERSON_TYPE: Coding = constant({ system: ENTITY_TYPE, code: '1' });
const PATIENT_ROLE: Coding = constant({ system: OBJECT_ROLE, code: '1' });
const SYSTEM_OBJECT_TYPE: Coding = constant({ system: ENTITY_TYPE, code: '2' });
const DOMAIN_RESOURCE_ROLE: Coding = constant({ system: OBJECT_ROLE, code: '4' });
const QUERY_ROLE: Coding = constant({ system: OBJECT_ROLE, code: '24' });
const APPLICATION_AGENT = constant({ coding: [{ system: DCM, code: '110150', display: 'Application' }] });
const RECIPIENT_AGENT = constant({ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP', display: 'information recipient' }] });
const SERVER_SOURCE_TYPE = constant([{ system: 'http://terminology.hl7.org/CodeSystem/security-source-type', code: '4', display: 'Application Server' }]);
const EMERGENCY_TREATMENT = constant([{ coding: [{ system: PURPOSE, code: 'ETREAT', display: 'Emergency Treatment' }] }]);
// Codings of indexed elements (type, subtype, entity type and role) carry no display: each display
// would add a `:text` index row to every event, and the codes are fixed vocabularies a client maps.

/** BALP: C create, R read/vread/history, U update/patch, D delete, E search and operations. */
function actionOf(i: AuditInteraction): AuditEvent['action'] {
  switch (i) {
    case 'create': return 'C';
    case 'update': case 'patch': return 'U';
    case 'delete': return 'D';
    case 'login': case 'token-grant': case 'access-token': return 'E';
    case 'read': case 'vread': case 'history-instance': case 'history-type': case 'history-system': return 'R';
    default: return 'E';
  }
}

/** 0 success, 4 minor failure (the request was refused or wrong), 8 serious failure (the server failed). */
function outcomeOf(status: number): AuditEvent['outcome'] {
  return status < 400 ? '0' : status < 500 ? '4' : '8';
}

export function buildAuditEvent(f: AuditFacts, source: { observer: string; seq: number }): AuditEvent {
  const agent: AuditEventAgent[] = [];
  const network = f.address ? { network: { address: f.address, type: '2' as const } } : {};
  const p = f.principal;
  if (p.kind === 'token') {
    agent.push({ type: APPLICATION_AGENT, who: { identifier: { system: CLIENT_ID_SYSTEM, value: p.clientId } }, requestor: p.fhirUser === undefined, ...network });
    if (p.fhirUser) agent.push({ type: RECIPIENT_AGENT, who: { reference: relative(p.fhirUser) }, requestor: true, ...network });
  } else {
    agent.push({ who: { display: p.kind === 'system' ? 'custos (the server itself)' : 'anonymous' }, requestor: true, ...network });
  }
  const entity: AuditEventEntity[] = f.resources.map((r) => {
    const owners = f.owners?.[r] ?? [];
    return {
      ...(owners.length ? { extension: owners.map((p) => ({ url: AUDIT_ENTITY_PATIENT_URL, valueReference: { reference: p } })) } : {}),
      what: { reference: r }, type: SYSTEM_OBJECT_TYPE, role: DOMAIN_RESOURCE_ROLE,
    };
  });
  for (const patient of f.patients) {
    if (!f.resources.includes(patient)) entity.push({ what: { reference: patient }, type: PERSON_TYPE, role: PATIENT_ROLE });
  }
  if (f.query !== undefined) {
    entity.push({ type: SYSTEM_OBJECT_TYPE, role: QUERY_ROLE, query: Buffer.from(f.query, 'utf8').toString('base64'), ...(f.resourceType ? { description: f.resourceType } : {}) });
  }
  const security = f.interaction === 'login' || f.interaction === 'token-grant' || f.interaction === 'access-token';
  const subtype: Coding[] = f.interaction === 'login'
    ? [{ system: DCM, code: '110122' }]
    : security
      ? [{ system: 'urn:custos:audit', code: f.interaction }]
      : [{ system: INTERACTION_SYSTEM, code: f.interaction }];
  if (f.operation) subtype.push({ system: 'urn:custos:operation', code: f.operation });
  return {
    resourceType: 'AuditEvent',
    extension: [{ url: AUDIT_SEQUENCE_URL, valueInteger: source.seq }],
    type: security ? USER_AUTHENTICATION : REST_TYPE,
    subtype,
    action: actionOf(f.interaction),
    recorded: f.recorded.toISOString(),
    outcome: outcomeOf(f.status),
    // The status only: error messages may quote request values (search terms) in the clear.
    ...(f.status >= 400 ? { outcomeDesc: `HTTP ${f.status}` } : {}),
    ...(f.breakGlass ? { purposeOfEvent: EMERGENCY_TREATMENT } : {}),
    agent,
    source: { observer: { display: source.observer }, type: SERVER_SOURCE_TYPE },
    ...(entity.length ? { entity } : {}),
  };
}

/** ".../fhir/Practitioner/1" -> "Practitioner/1" (the AuditEvent is indexed by local references). */
function relative(ref: string): string {
  const m = /([A-Za-z]+\/[A-Za-z0-9\-.]{1,64})$/.exec(ref);
  return m ? m[1]! : ref;
}

/**
 * A login, token grant or refused access token as audit facts. The user's Patient is its patient;
 * the account a refused login tried is its entity (a patient's, so that the patient sees attempts
 * on their account), never an agent: the attempt was not theirs.
 */
export function securityFacts(e: SecurityEvent): AuditFacts {
  const principal: Principal = e.clientId
    ? { kind: 'token', clientId: e.clientId, subject: e.clientId, tokenId: '', scope: '', scopes: [], ...(e.user ? { fhirUser: e.user } : {}) }
    : { kind: 'anonymous' };
  const account = e.account !== undefined ? relative(e.account) : undefined;
  const patients = [e.user, account].filter((r): r is string => r?.startsWith('Patient/') === true);
  return {
    interaction: e.kind, status: e.status, principal, recorded: new Date(),
    resources: account !== undefined && !account.startsWith('Patient/') ? [account] : [],
    patients: [...new Set(patients)],
    ...(e.address ? { address: e.address } : {}),
  };
}
