/**
 * Deterministic generators for the benchmark's FHIR payloads: patients, vital-sign
 * Observations, transaction Bundles and search URLs.
 */

/** Small seeded PRNG (mulberry32) so runs are comparable. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface VitalCode {
  code: string;
  display: string;
  category: 'vital-signs' | 'laboratory';
  unit: string;
  ucum: string;
  min: number;
  max: number;
  decimals: number;
}

/** About ten LOINC codes a monitoring device or EHR would send. */
export const CODES: readonly VitalCode[] = [
  { code: '8867-4', display: 'Heart rate', category: 'vital-signs', unit: 'beats/minute', ucum: '/min', min: 48, max: 140, decimals: 0 },
  { code: '9279-1', display: 'Respiratory rate', category: 'vital-signs', unit: 'breaths/minute', ucum: '/min', min: 10, max: 30, decimals: 0 },
  { code: '8310-5', display: 'Body temperature', category: 'vital-signs', unit: 'Cel', ucum: 'Cel', min: 35.5, max: 39.5, decimals: 1 },
  { code: '59408-5', display: 'Oxygen saturation in Arterial blood by Pulse oximetry', category: 'vital-signs', unit: '%', ucum: '%', min: 88, max: 100, decimals: 0 },
  { code: '8480-6', display: 'Systolic blood pressure', category: 'vital-signs', unit: 'mmHg', ucum: 'mm[Hg]', min: 95, max: 175, decimals: 0 },
  { code: '8462-4', display: 'Diastolic blood pressure', category: 'vital-signs', unit: 'mmHg', ucum: 'mm[Hg]', min: 55, max: 110, decimals: 0 },
  { code: '29463-7', display: 'Body weight', category: 'vital-signs', unit: 'kg', ucum: 'kg', min: 45, max: 130, decimals: 1 },
  { code: '8302-2', display: 'Body height', category: 'vital-signs', unit: 'cm', ucum: 'cm', min: 150, max: 200, decimals: 1 },
  { code: '39156-5', display: 'Body mass index (BMI) [Ratio]', category: 'vital-signs', unit: 'kg/m2', ucum: 'kg/m2', min: 17, max: 40, decimals: 1 },
  { code: '2339-0', display: 'Glucose [Mass/volume] in Blood', category: 'laboratory', unit: 'mg/dL', ucum: 'mg/dL', min: 60, max: 250, decimals: 0 },
];

export const HEART_RATE = CODES[0]!;

/** Observations are spread over two years: [DATE_START, DATE_START + DATE_SPAN_DAYS). */
export const DATE_START = Date.UTC(2024, 0, 1);
export const DATE_SPAN_DAYS = 731;
const DAY_MS = 86_400_000;

const CATEGORY_SYSTEM = 'http://terminology.hl7.org/CodeSystem/observation-category';

function isoSeconds(ms: number): string {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');
}

export function dayString(day: number): string {
  return new Date(DATE_START + day * DAY_MS).toISOString().slice(0, 10);
}

export function patient(i: number): Record<string, unknown> {
  const r = rng(1000 + i);
  const family = ['Smith', 'Müller', 'García', 'Rossi', 'Nguyen', 'Kowalski', 'Okafor', 'Tanaka', 'Dubois', 'Jensen'][i % 10]!;
  const given = ['Anna', 'Ben', 'Chloé', 'David', 'Eva', 'Farid', 'Grace', 'Hugo', 'Ines', 'Jonas'][Math.floor(i / 10) % 10]!;
  const year = 1940 + Math.floor(r() * 60);
  const month = String(1 + Math.floor(r() * 12)).padStart(2, '0');
  const day = String(1 + Math.floor(r() * 28)).padStart(2, '0');
  return {
    resourceType: 'Patient',
    identifier: [{ system: 'urn:oid:1.2.36.146.595.217.0.1', value: `MRN-${100000 + i}` }],
    active: true,
    name: [{ use: 'official', family, given: [given] }],
    gender: i % 2 === 0 ? 'female' : 'male',
    birthDate: `${year}-${month}-${day}`,
    telecom: [{ system: 'phone', value: `+41 44 555 ${String(1000 + i).slice(-4)}`, use: 'home' }],
  };
}

export function observation(r: () => number, subjectId: string, vital: VitalCode): Record<string, unknown> {
  const effective = DATE_START + Math.floor(r() * DATE_SPAN_DAYS * DAY_MS);
  const raw = vital.min + r() * (vital.max - vital.min);
  const value = Number(raw.toFixed(vital.decimals));
  return {
    resourceType: 'Observation',
    status: 'final',
    category: [{ coding: [{ system: CATEGORY_SYSTEM, code: vital.category, display: vital.category === 'vital-signs' ? 'Vital Signs' : 'Laboratory' }] }],
    code: { coding: [{ system: 'http://loinc.org', code: vital.code, display: vital.display }], text: vital.display },
    subject: { reference: `Patient/${subjectId}` },
    effectiveDateTime: isoSeconds(effective),
    issued: isoSeconds(effective + 30_000),
    valueQuantity: { value, unit: vital.unit, system: 'http://unitsofmeasure.org', code: vital.ucum },
  };
}

/** A heart-rate Observation for a random one of the given patients. */
export function heartRateObservation(r: () => number, patientIds: readonly string[]): Record<string, unknown> {
  return observation(r, patientIds[Math.floor(r() * patientIds.length)]!, HEART_RATE);
}

let uuidCounter = 0;
function urnUuid(): string {
  uuidCounter = (uuidCounter + 1) >>> 0;
  const hex = uuidCounter.toString(16).padStart(12, '0');
  return `urn:uuid:b3c1e2a0-0000-4000-8000-${hex}`;
}

export function transactionBundle(resources: readonly Record<string, unknown>[]): Record<string, unknown> {
  return {
    resourceType: 'Bundle',
    type: 'transaction',
    entry: resources.map((resource) => ({
      fullUrl: urnUuid(),
      resource,
      request: { method: 'POST', url: String(resource.resourceType) },
    })),
  };
}

/** A transaction Bundle of `n` Observations over all codes and the given patients. */
export function observationBundle(r: () => number, patientIds: readonly string[], n: number): string {
  const resources: Record<string, unknown>[] = [];
  for (let i = 0; i < n; i++) {
    const vital = CODES[Math.floor(r() * CODES.length)]!;
    resources.push(observation(r, patientIds[Math.floor(r() * patientIds.length)]!, vital));
  }
  return JSON.stringify(transactionBundle(resources));
}

/**
 * Search paths (relative to the server root) by code and date window; half of them also by
 * subject. Windows are sized so most searches hit a handful to a page of results:
 * with subject 2-16 weeks, without subject 1-4 days.
 */
export function searchPaths(r: () => number, patientIds: readonly string[], n: number): string[] {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const vital = CODES[Math.floor(r() * CODES.length)]!;
    const withSubject = i % 2 === 0;
    const windowDays = withSubject ? 14 + Math.floor(r() * 98) : 1 + Math.floor(r() * 4);
    const from = Math.floor(r() * (DATE_SPAN_DAYS - windowDays));
    let p = `/fhir/Observation?code=${encodeURIComponent(`http://loinc.org|${vital.code}`)}`
      + `&date=ge${dayString(from)}&date=lt${dayString(from + windowDays)}`;
    if (withSubject) p += `&subject=${encodeURIComponent(`Patient/${patientIds[Math.floor(r() * patientIds.length)]!}`)}`;
    out.push(p);
  }
  return out;
}
