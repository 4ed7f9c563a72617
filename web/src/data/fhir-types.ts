/** The few FHIR shapes the "My data" page reads. */
import type { CodeableConcept } from '../fhir-text.js';

export interface Meta { versionId?: string; lastUpdated?: string }
export interface Reference { reference?: string; display?: string }
export interface Quantity { value?: number; unit?: string; code?: string; system?: string }

export interface ObservationComponent { code: CodeableConcept; valueQuantity?: Quantity }
export interface Observation {
  resourceType: 'Observation'; id?: string; meta?: Meta; code: CodeableConcept; status?: string;
  effectiveDateTime?: string; effectiveInstant?: string; effectivePeriod?: { start?: string; end?: string }; issued?: string;
  valueQuantity?: Quantity; valueString?: string; valueCodeableConcept?: CodeableConcept;
  component?: ObservationComponent[]; device?: Reference;
}

export interface Device {
  resourceType: 'Device'; id?: string; meta?: Meta;
  deviceName?: Array<{ name?: string; type?: string }>; manufacturer?: string; modelNumber?: string; type?: CodeableConcept;
}

export interface Condition {
  resourceType: 'Condition'; id?: string; meta?: Meta; code?: CodeableConcept;
  clinicalStatus?: CodeableConcept; onsetDateTime?: string; recordedDate?: string;
}

export interface Medication {
  resourceType: 'MedicationRequest' | 'MedicationStatement'; id?: string; meta?: Meta; status?: string;
  medicationCodeableConcept?: CodeableConcept; medicationReference?: Reference;
  dosageInstruction?: Array<{ text?: string }>; dosage?: Array<{ text?: string }>;
  authoredOn?: string; effectiveDateTime?: string; effectivePeriod?: { start?: string; end?: string };
}

export interface Bundle<T> { resourceType: 'Bundle'; entry?: Array<{ resource?: T; search?: { mode?: string } }>; link?: Array<{ relation: string; url: string }> }

/** The resources of a search Bundle that matched (not the _include'd ones or OperationOutcomes). */
export function matches<T extends { resourceType: string }>(b: Bundle<T>, type: T['resourceType']): T[] {
  return (b.entry ?? []).filter((e) => e.resource?.resourceType === type && e.search?.mode !== 'include').map((e) => e.resource as T);
}

export function nextLink(b: Bundle<unknown>): string | undefined {
  return b.link?.find((l) => l.relation === 'next')?.url;
}
