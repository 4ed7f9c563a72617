/** FHIR datatypes said in plain words. */
export interface Coding { system?: string; code?: string; display?: string }
export interface CodeableConcept { coding?: Coding[]; text?: string }
export interface HumanName { use?: string; text?: string; family?: string; given?: string[]; prefix?: string[] }
export interface Patient { resourceType: 'Patient'; id?: string; name?: HumanName[]; birthDate?: string; gender?: string }

export function conceptText(c: CodeableConcept | undefined): string {
  if (!c) return '';
  return c.text ?? c.coding?.find((x) => x.display)?.display ?? c.coding?.[0]?.code ?? '';
}

export function humanName(names: HumanName[] | undefined): string {
  const n = names?.find((x) => x.use === 'official') ?? names?.[0];
  if (!n) return '';
  if (n.text) return n.text;
  return [...(n.prefix ?? []), ...(n.given ?? []), n.family ?? ''].filter(Boolean).join(' ');
}

export function patientName(p: Patient): string {
  return humanName(p.name) || `Patient ${p.id ?? ''}`.trim();
}

/** A date or dateTime as the patient's locale writes it. */
export function when(value: string | undefined, withTime = true): string {
  if (!value) return '';
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return value;
  if (/^\d{4}(-\d{2}(-\d{2})?)?$/.test(value)) return value.length === 10 ? d.toLocaleDateString(undefined, { timeZone: 'UTC', dateStyle: 'medium' }) : value;
  return withTime ? d.toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'short' }) : d.toLocaleDateString(undefined, { dateStyle: 'medium' });
}
