/** The rest of the record in plain words: conditions and medicines. */
import { conceptText } from '../fhir-text.js';
import type { Session } from '../session.js';
import { matches, type Bundle, type Condition, type Medication } from './fhir-types.js';

export async function conditions(session: Session): Promise<Condition[]> {
  const b = await session.get<Bundle<Condition>>(`Condition?patient=${encodeURIComponent(session.patientId)}&_count=100`);
  return matches(b, 'Condition');
}

export async function medications(session: Session): Promise<Medication[]> {
  const p = encodeURIComponent(session.patientId);
  const [req, stmt] = await Promise.all([
    session.get<Bundle<Medication>>(`MedicationRequest?patient=${p}&_count=100`),
    session.get<Bundle<Medication>>(`MedicationStatement?patient=${p}&_count=100`),
  ]);
  return [...matches(req, 'MedicationRequest'), ...matches(stmt, 'MedicationStatement')];
}

export function medicationName(m: Medication): string {
  return conceptText(m.medicationCodeableConcept) || m.medicationReference?.display || 'A medicine';
}

export function medicationDose(m: Medication): string {
  return (m.dosageInstruction ?? m.dosage ?? []).map((d) => d.text).filter(Boolean).join('; ');
}

const STATUS: Record<string, string> = {
  active: 'Taking now', completed: 'Finished', stopped: 'Stopped', 'on-hold': 'Paused', intended: 'Planned', draft: 'Draft',
  cancelled: 'Cancelled', 'entered-in-error': 'Entered in error', 'not-taken': 'Not taken', unknown: '',
};

export function medicationStatus(m: Medication): string {
  return (m.status && STATUS[m.status]) ?? m.status ?? '';
}

export function conditionStatus(c: Condition): string {
  const code = c.clinicalStatus?.coding?.[0]?.code;
  const plain: Record<string, string> = { active: 'Current', recurrence: 'Came back', relapse: 'Came back', inactive: 'Past', remission: 'In remission', resolved: 'Resolved' };
  return (code && plain[code]) || conceptText(c.clinicalStatus);
}
