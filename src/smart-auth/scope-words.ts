/**
 * Plain-language wording of SMART scopes for the approval page: what a person allows by ticking
 * each one. Pure functions, no I/O.
 */
import { parseScopes, type Permission, type ResourceScope } from './scopes.js';

interface TypeWords {
  /** The patient's own data of this type, e.g. "your observations (measurements ...)". */
  yours: string;
  /** The plural noun, used with other contexts and with query constraints, e.g. "observations". */
  noun: string;
}

// Friendlier words for the types a patient meets most; other types fall back to their split name.
const FRIENDLY: Readonly<Record<string, TypeWords>> = {
  Observation: { yours: 'your observations (measurements such as heart rate, blood pressure, lab results)', noun: 'observations' },
  Condition: { yours: 'your conditions (illnesses, diagnoses and health problems)', noun: 'conditions' },
  MedicationRequest: { yours: 'your prescriptions (medication requests)', noun: 'prescriptions' },
  AllergyIntolerance: { yours: 'your allergies and intolerances', noun: 'allergies and intolerances' },
  Immunization: { yours: 'your vaccinations (immunizations)', noun: 'vaccinations' },
  Procedure: { yours: 'your procedures (operations, treatments and tests done to you)', noun: 'procedures' },
  DiagnosticReport: { yours: 'your test and imaging reports (diagnostic reports)', noun: 'test and imaging reports' },
  Encounter: { yours: 'your visits and hospital stays (encounters)', noun: 'visits and hospital stays' },
  Consent: { yours: 'your sharing permissions (Consents)', noun: 'sharing permissions (Consents)' },
  AuditEvent: { yours: 'the record of who accessed your data', noun: 'records of who accessed data' },
  Patient: { yours: 'your demographics (name, birth date, contact details)', noun: 'patient demographics' },
  Device: { yours: 'your devices', noun: 'devices' },
};

const OTHER: Readonly<Record<string, string>> = {
  openid: 'Know who you are (confirm that you signed in)',
  fhirUser: 'Know who you are (your user and FHIR record)',
  profile: 'Know your name and profile',
  launch: 'Open with the record you are working with in your health record system',
  'launch/patient': 'Know which patient record you are working with',
  'launch/encounter': 'Know which visit (encounter) you are working in',
  offline_access: 'Stay signed in when you are away (a refresh token)',
  online_access: 'Stay signed in while you use it (a refresh token)',
};

function plural(word: string): string {
  if (/[^aeiou]y$/.test(word)) return `${word.slice(0, -1)}ies`;
  if (/(s|x|z|ch|sh)$/.test(word)) return `${word}es`;
  return `${word}s`;
}

/** "MedicationRequest" -> "medication requests". */
export function humanTypeName(resourceType: string): string {
  const words = resourceType.split(/(?<=[a-z])(?=[A-Z])/).map((w) => w.toLowerCase());
  words[words.length - 1] = plural(words[words.length - 1]!);
  return words.join(' ');
}

function list(words: string[]): string {
  if (words.length <= 1) return words.join('');
  return `${words.slice(0, -1).join(', ')} and ${words[words.length - 1]}`;
}

/** "Read and search", "Create, read, change and delete", ... */
function verbs(p: ReadonlySet<Permission>): string {
  const readOnly = [...p].every((x) => x === 'r' || x === 's');
  const out: string[] = [];
  if (p.has('c')) out.push('create');
  if (p.has('r') && p.has('s') && readOnly) out.push('read and search');
  else if (p.has('r')) out.push('read'); // searching goes with reading when more is asked
  else if (p.has('s')) out.push('search');
  if (p.has('u')) out.push('change');
  if (p.has('d')) out.push('delete');
  const text = list(out);
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** A search-parameter value as a person reads it: the code of a system|code token. */
function shownValue(v: string): string {
  const bar = v.lastIndexOf('|');
  return bar >= 0 && bar < v.length - 1 ? v.slice(bar + 1) : v;
}

function objectWords(s: ResourceScope): string {
  const friendly = FRIENDLY[s.resourceType];
  const noun = s.resourceType === '*' ? 'health records' : friendly?.noun ?? humanTypeName(s.resourceType);
  const where = s.query.length ? ` of ${s.query.map(([n, v]) => `${n} ${shownValue(v)}`).join(' and ')}` : '';
  switch (s.context) {
    case 'patient':
      if (where) return `your ${noun}${where}`;
      if (s.resourceType === '*') return 'all of your health records';
      return friendly?.yours ?? `your ${noun}`;
    case 'user':
      return s.resourceType === '*' && !where ? 'the records you are allowed to see' : `the ${noun}${where} you are allowed to see`;
    case 'system':
      return s.resourceType === '*' && !where ? 'every record on this server, of every patient' : `${noun}${where} of every patient on this server`;
  }
}

/** The plain words for one scope; unknown scopes are said to be unknown. */
export function scopeWords(scope: string): string {
  const { resource, other } = parseScopes(scope);
  const r = resource[0];
  if (r) return `${verbs(r.permissions)} ${objectWords(r)}`;
  const o = other[0];
  if (o) return OTHER[o] ?? o;
  return 'An access this server does not know';
}
