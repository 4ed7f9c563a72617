/**
 * Names for references, read with the patient's own token: people (Practitioner, RelatedPerson)
 * and organizations are shared resources a patient may read; the patient's own records tell what
 * they are (the code of an Observation). What cannot be read stays unnamed and is said generically.
 */
import { conceptText, humanName, type CodeableConcept, type HumanName } from '../fhir-text.js';
import type { Session } from '../session.js';

interface Named {
  resourceType: string; id?: string;
  name?: HumanName[] | string;
  code?: CodeableConcept; medicationCodeableConcept?: CodeableConcept; type?: CodeableConcept;
  deviceName?: Array<{ name?: string }>;
}

/** Label of a resource: a person's or organization's name, or what a record is about. */
export function labelOf(r: Named): string {
  if (typeof r.name === 'string') return r.name;
  if (Array.isArray(r.name)) return humanName(r.name);
  if (r.deviceName?.[0]?.name) return r.deviceName[0].name;
  return conceptText(r.code ?? r.medicationCodeableConcept ?? r.type);
}

// Only what a label can come from; everything else is said by its type.
const LABELLED = new Set(['Practitioner', 'Organization', 'RelatedPerson', 'PractitionerRole', 'Observation', 'Condition', 'Procedure',
  'DiagnosticReport', 'MedicationRequest', 'MedicationStatement', 'Immunization', 'AllergyIntolerance', 'Device', 'Encounter', 'CarePlan']);

/** Reads the labels of `refs` not yet known, a search per type; undefined for those that cannot be read. */
export async function resolveLabels(session: Session, refs: string[], known: Map<string, string | null>): Promise<Map<string, string | null>> {
  const byType = new Map<string, string[]>();
  for (const ref of refs) {
    const [type, id] = ref.split('/');
    if (!type || !id || known.has(ref) || !LABELLED.has(type)) continue;
    byType.set(type, [...(byType.get(type) ?? []), id]);
  }
  const out = new Map(known);
  await Promise.all([...byType].map(async ([type, ids]) => {
    for (let i = 0; i < ids.length; i += 50) {
      const chunk = ids.slice(i, i + 50);
      for (const id of chunk) out.set(`${type}/${id}`, null);
      try {
        const b = await session.get<{ entry?: Array<{ resource?: Named }> }>(`${type}?_id=${chunk.map(encodeURIComponent).join(',')}&_count=${chunk.length}`);
        for (const e of b.entry ?? []) {
          const label = e.resource ? labelOf(e.resource) : '';
          if (e.resource?.id && label) out.set(`${type}/${e.resource.id}`, label);
        }
      } catch {
        // Not readable by this patient (or the server is busy): said generically.
      }
    }
  }));
  return out;
}
