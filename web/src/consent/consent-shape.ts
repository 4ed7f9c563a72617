/**
 * The Consent the portal writes, in the one shape the server's decision engine understands
 * (src/consent/provisions.ts, decide.ts): a root provision without a type that says *who*
 * (actor), *for what* (action access) and *when* (period); under it one permit per kind of data
 * and one deny for the sensitive labels. Siblings share a depth, where a deny wins, so
 * "except restricted" holds against every permit. A root without data criteria permits nothing
 * by itself.
 */
export const OBSERVATION_CATEGORY = 'http://terminology.hl7.org/CodeSystem/observation-category';
export const CONFIDENTIALITY = 'http://terminology.hl7.org/CodeSystem/v3-Confidentiality';
const RESOURCE_TYPES = 'http://hl7.org/fhir/resource-types';

export interface Coding { system?: string; code?: string; display?: string }
export interface Provision {
  type?: 'permit' | 'deny';
  period?: { start?: string; end?: string };
  actor?: Array<{ role: { coding: Coding[] }; reference: { reference: string; display?: string } }>;
  action?: Array<{ coding: Coding[] }>;
  class?: Coding[];
  code?: Array<{ coding: Coding[] }>;
  securityLabel?: Coding[];
  provision?: Provision[];
}
export interface Consent {
  resourceType: 'Consent'; id?: string; meta?: { lastUpdated?: string; versionId?: string };
  status: string; scope: { coding: Coding[] }; category: Array<{ coding: Coding[] }>;
  patient: { reference: string }; dateTime?: string; policyRule?: { coding: Coding[] }; provision?: Provision;
}

/** Kinds of data in plain words, each as the provision criteria the server enforces. */
export const KINDS: Record<string, { label: string; types: string[]; category?: string }> = {
  'vital-signs': { label: 'Vital signs (heart rate, blood pressure, oxygen, temperature, weight)', types: ['Observation'], category: 'vital-signs' },
  laboratory: { label: 'Lab test results', types: ['Observation'], category: 'laboratory' },
  conditions: { label: 'Conditions and diagnoses', types: ['Condition'] },
  medications: { label: 'Medicines', types: ['MedicationRequest', 'MedicationStatement', 'MedicationAdministration', 'MedicationDispense'] },
  allergies: { label: 'Allergies', types: ['AllergyIntolerance'] },
  immunizations: { label: 'Vaccinations', types: ['Immunization'] },
};

/** Record types a patient may pick one by one, in words. */
export const TYPES: Record<string, string> = {
  Observation: 'All measurements and observations',
  DiagnosticReport: 'Test reports',
  Procedure: 'Procedures and operations',
  Encounter: 'Visits and stays',
  Device: 'Devices that measure you',
  DocumentReference: 'Documents and letters',
  CarePlan: 'Care plans',
};

export const LABELS: Record<string, string> = {
  R: 'restricted (sensitive) information, such as mental health or sexual health',
  V: 'very restricted information',
};

export interface Actor { reference: string; display: string }

export interface ConsentDraft {
  actor?: Actor;
  everything: boolean;
  kinds: string[];
  types: string[];
  except: string[];
  start: string;
  end: string;
}

export const EMPTY_DRAFT: ConsentDraft = { everything: false, kinds: [], types: [], except: ['R', 'V'], start: '', end: '' };

export function draftProblems(d: ConsentDraft): string[] {
  const out: string[] = [];
  if (!d.actor) out.push('Choose who may see your data.');
  if (!d.everything && d.kinds.length === 0 && d.types.length === 0) out.push('Choose what they may see.');
  if (d.start && d.end && d.end < d.start) out.push('The end date is before the start date.');
  return out;
}

export function buildConsent(d: ConsentDraft, patientId: string, now = new Date()): Consent {
  const permits: Provision[] = d.everything
    ? [{ type: 'permit' }]
    : [
        ...d.kinds.map((k) => KINDS[k]!).map((k) => ({
          type: 'permit' as const,
          class: k.types.map((t) => ({ system: RESOURCE_TYPES, code: t })),
          ...(k.category ? { code: [{ coding: [{ system: OBSERVATION_CATEGORY, code: k.category }] }] } : {}),
        })),
        ...(d.types.length ? [{ type: 'permit' as const, class: d.types.map((t) => ({ system: RESOURCE_TYPES, code: t })) }] : []),
      ];
  const deny: Provision[] = d.except.length ? [{ type: 'deny', securityLabel: d.except.map((c) => ({ system: CONFIDENTIALITY, code: c })) }] : [];
  const period = d.start || d.end ? { ...(d.start ? { start: d.start } : {}), ...(d.end ? { end: d.end } : {}) } : undefined;
  return {
    resourceType: 'Consent',
    status: 'active',
    scope: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentscope', code: 'patient-privacy', display: 'Privacy Consent' }] },
    category: [{ coding: [{ system: 'http://loinc.org', code: '59284-0', display: 'Patient Consent' }] }],
    patient: { reference: `Patient/${patientId}` },
    dateTime: now.toISOString(),
    policyRule: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'OPTIN' }] },
    provision: {
      ...(period ? { period } : {}),
      actor: [{ role: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ParticipationType', code: 'IRCP', display: 'information recipient' }] }, reference: { reference: d.actor!.reference, display: d.actor!.display } }],
      action: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/consentaction', code: 'access', display: 'Access' }] }],
      provision: [...permits, ...deny],
    },
  };
}
