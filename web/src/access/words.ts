/** An access said as a sentence a patient understands ("Dr Jane Smith read your blood pressure"). */
import type { Access } from './trail.js';

const ONE: Record<string, string> = {
  Patient: 'personal details', Observation: 'measurement', Condition: 'condition', Procedure: 'procedure',
  DiagnosticReport: 'test report', MedicationRequest: 'prescription', MedicationStatement: 'medication', MedicationAdministration: 'medication',
  Immunization: 'vaccination', AllergyIntolerance: 'allergy', Device: 'device', Encounter: 'visit', CarePlan: 'care plan',
  DocumentReference: 'document', Consent: 'sharing choice', AuditEvent: 'access history', Provenance: 'record history',
};
const MANY: Record<string, string> = {
  Patient: 'personal details', Observation: 'measurements and test results', Condition: 'conditions', Procedure: 'procedures',
  DiagnosticReport: 'test reports', MedicationRequest: 'prescriptions', MedicationStatement: 'medications', MedicationAdministration: 'medications',
  Immunization: 'vaccinations', AllergyIntolerance: 'allergies', Device: 'devices', Encounter: 'visits', CarePlan: 'care plans',
  DocumentReference: 'documents', Consent: 'sharing choices', AuditEvent: 'access history', Provenance: 'record history',
};

/** "measurement" for Observation; an unknown type as itself. */
export const oneOf = (type: string): string => ONE[type] ?? type;
export const manyOf = (type: string): string => MANY[type] ?? `${type} records`;

/** "Blood pressure" reads "blood pressure" inside a sentence; "HIV test" stays. */
function inSentence(label: string): string {
  return /^[A-Z][a-z]/.test(label) ? label[0]!.toLowerCase() + label.slice(1) : label;
}

/** What was touched: "your blood pressure", "your personal details", "your blood pressure and 2 other records". */
export function whatOf(a: Access, label: (ref: string) => string | undefined): string {
  if (a.resources.length === 0) return a.searched ? `your ${manyOf(a.searched)}` : 'your record';
  const first = a.resources.find((r) => !r.startsWith('Patient/')) ?? a.resources[0]!;
  const type = first.split('/')[0]!;
  const named = label(first);
  const head = `your ${named ? inSentence(named) : oneOf(type)}`;
  const others = a.resources.filter((r) => r !== first && !r.startsWith('Patient/')).length;
  return others === 0 ? head : `${head} and ${others} other record${others === 1 ? '' : 's'}`;
}

const OPERATION: Record<string, string> = {
  '$access-report': 'looked at who saw your data',
  '$break-glass': 'opened your record in an emergency',
  '$verify': 'checked that a record is genuine',
  '$explain-access': 'asked who may see your data',
  '$everything': 'opened your whole record',
};

/** The verb phrase after the actor's name: "read your blood pressure", "tried to read your X but was refused". */
export function deed(a: Access, label: (ref: string) => string | undefined, ourApp: (clientId: string) => string | undefined): string {
  const what = whatOf(a, label);
  let done: string; let tried: string;
  switch (a.interaction) {
    case 'read': case 'vread': done = `read ${what}`; tried = `read ${what}`; break;
    case 'history-instance': case 'history-type': case 'history-system': done = `looked at the earlier versions of ${what}`; tried = `look at the earlier versions of ${what}`; break;
    case 'search-type': case 'search-system': case 'search': done = `searched ${a.searched ? `your ${manyOf(a.searched)}` : 'your record'}`; tried = done.replace(/^searched/, 'search'); break;
    case 'create': done = `added ${what.replace(/^your /, 'a ')} to your record`; tried = `add ${what.replace(/^your /, 'a ')} to your record`; break;
    case 'update': case 'patch': done = `changed ${what}`; tried = `change ${what}`; break;
    case 'delete': done = `removed ${what}`; tried = `remove ${what}`; break;
    case 'batch': case 'transaction': done = 'sent several changes at once'; tried = 'send several changes at once'; break;
    case 'login': done = 'signed in'; tried = 'sign in to your account'; break;
    case 'token-grant': {
      const app = a.clientId ? ourApp(a.clientId) : undefined;
      done = `let ${app ?? 'an app'} open your record`; tried = `let ${app ?? 'an app'} open your record`; break;
    }
    case 'access-token': done = 'used an access pass'; tried = 'use an access pass that was no longer valid'; break;
    case 'operation': {
      const op = a.operation ?? '';
      const known = OPERATION[op] ?? (op.startsWith('$consent') ? 'worked on your sharing choices' : `used “${op || 'an operation'}” on your record`);
      done = known;
      // "looked at ..." -> "look at ...", "used ..." -> "use ...".
      tried = known.replace(/^(\w+)ed\b/, (_, stem: string) => (stem === 'us' ? 'use' : stem));
      break;
    }
    default: done = `used your record`; tried = 'use your record';
  }
  if (a.refused) return `tried to ${tried} but was refused`;
  if (a.failed) return `tried to ${tried} but the server failed`;
  return done;
}
