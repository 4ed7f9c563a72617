import { partNamed, partsNamed, type Parameters } from './fhir-params.js';

/** One emergency (break-the-glass) access to the patient's record, as GET Patient/[id]/$break-glass gives it. */
export interface EmergencyGrant {
  id: string;
  practitioner: string;
  reason: string;
  granted: string;
  expires: string;
  active: boolean;
  accesses: Array<{ time: string; interaction: string; resources: string[] }>;
}

export function parseBreakGlass(p: Parameters): EmergencyGrant[] {
  return partsNamed(p.parameter, 'grant').map((g) => ({
    id: partNamed(g.part, 'id')?.valueId ?? '',
    practitioner: partNamed(g.part, 'practitioner')?.valueReference?.reference ?? '',
    reason: partNamed(g.part, 'reason')?.valueString ?? '',
    granted: partNamed(g.part, 'granted')?.valueInstant ?? '',
    expires: partNamed(g.part, 'expires')?.valueInstant ?? '',
    active: partNamed(g.part, 'active')?.valueBoolean === true,
    accesses: partsNamed(g.part, 'access').map((a) => ({
      time: partNamed(a.part, 'time')?.valueInstant ?? '',
      interaction: partNamed(a.part, 'interaction')?.valueCode ?? '',
      // A query names search parameters, not what the patient knows: the resources read are enough.
      resources: partsNamed(a.part, 'what').flatMap((w) => (w.valueReference?.reference ? [w.valueReference.reference] : [])),
    })),
  }));
}
