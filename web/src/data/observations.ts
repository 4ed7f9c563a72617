/**
 * Device readings grouped by what they measure (the Observation code): which groups exist (from
 * the latest readings only), the values of a reading, and the readings of one code in a date
 * range (the chart asks for a range, never for everything).
 */
import { conceptText, type CodeableConcept } from '../fhir-text.js';
import type { Session } from '../session.js';
import { matches, nextLink, type Bundle, type Observation, type Quantity } from './fhir-types.js';

/** How many of the latest readings are looked at to find which kinds of readings exist. */
export const LATEST_READINGS = 200;
/** Readings per page when a chart asks for a range (the server's maximum page is 1000). */
const PAGE = 500;
/** The most readings one chart fetches (about a year of readings every hour). */
export const CHART_CAP = 10000;

/** Friendlier names for the common vital-sign LOINC codes than their formal displays. */
const PLAIN_NAMES: Record<string, string> = {
  '8867-4': 'Heart rate', '85354-9': 'Blood pressure', '55284-4': 'Blood pressure', '8480-6': 'Systolic (upper)', '8462-4': 'Diastolic (lower)',
  '59408-5': 'Oxygen saturation (SpO2)', '2708-6': 'Oxygen saturation (SpO2)', '8310-5': 'Body temperature', '29463-7': 'Body weight',
  '2339-0': 'Blood glucose', '15074-8': 'Blood glucose', '41653-7': 'Blood glucose', '9279-1': 'Breathing rate', '8302-2': 'Body height', '39156-5': 'Body mass index',
};

export interface ReadingGroup {
  /** "system|code", or the text of a code without codings. */
  key: string;
  /** The search token for the chart, when the code has a coding. */
  token?: string;
  name: string;
  latest: Observation;
}

export function plainCodeName(c: CodeableConcept | undefined): string {
  const loinc = c?.coding?.find((x) => x.system === 'http://loinc.org' && x.code && PLAIN_NAMES[x.code]);
  return (loinc ? PLAIN_NAMES[loinc.code!] : undefined) ?? (conceptText(c) || 'Reading');
}

export function codeKey(c: CodeableConcept): { key: string; token?: string } {
  const coding = c.coding?.find((x) => x.code);
  if (coding) {
    const token = coding.system ? `${coding.system}|${coding.code}` : coding.code!;
    return { key: token, token };
  }
  return { key: `text:${c.text ?? ''}` };
}

export function effectiveTime(o: Observation): string | undefined {
  return o.effectiveDateTime ?? o.effectiveInstant ?? o.effectivePeriod?.start ?? o.issued;
}

/** The groups of the latest readings, newest first; `latest` is the newest reading of each. */
export async function latestGroups(session: Session): Promise<ReadingGroup[]> {
  const b = await session.get<Bundle<Observation>>(`Observation?patient=${encodeURIComponent(session.patientId)}&_sort=-date&_count=${LATEST_READINGS}`);
  const groups = new Map<string, ReadingGroup>();
  for (const o of matches(b, 'Observation')) {
    const { key, token } = codeKey(o.code);
    if (!groups.has(key)) groups.set(key, { key, ...(token ? { token } : {}), name: plainCodeName(o.code), latest: o });
  }
  return [...groups.values()];
}

/** One line of a chart: the reading's own value, or one component (systolic, diastolic). */
export interface SeriesDef { key: string; label: string; unit: string }

export interface NumberValue { key: string; label: string; value: number; unit: string }

function unitOf(q: Quantity): string {
  return q.unit ?? q.code ?? '';
}

/** The numeric values of a reading, one per series. */
export function numericValues(o: Observation): NumberValue[] {
  if (o.valueQuantity?.value !== undefined) return [{ key: 'value', label: plainCodeName(o.code), value: o.valueQuantity.value, unit: unitOf(o.valueQuantity) }];
  return (o.component ?? []).filter((c) => c.valueQuantity?.value !== undefined)
    .map((c) => ({ key: codeKey(c.code).key, label: plainCodeName(c.code), value: c.valueQuantity!.value!, unit: unitOf(c.valueQuantity!) }));
}

/** A reading's value said in words: "72 beats/minute", "128/82 mmHg". */
export function valueText(o: Observation): string {
  const nums = numericValues(o);
  if (nums.length === 1) return `${fmt(nums[0]!.value)} ${nums[0]!.unit}`.trim();
  if (nums.length > 1) {
    const unit = nums[0]!.unit;
    if (nums.every((n) => n.unit === unit)) return `${nums.map((n) => fmt(n.value)).join('/')} ${unit}`.trim();
    return nums.map((n) => `${n.label} ${fmt(n.value)} ${n.unit}`.trim()).join(', ');
  }
  return o.valueString ?? conceptText(o.valueCodeableConcept) ?? '';
}

export function fmt(n: number): string {
  return n.toLocaleString(undefined, { maximumFractionDigits: 2 });
}

export interface RangeReadings { readings: Observation[]; capped: boolean }

/**
 * The readings of one code in [from, to), oldest first, following `next` links up to CHART_CAP.
 * Without `from`, everything before `to`.
 */
export async function readingsInRange(session: Session, token: string, from: Date | undefined, to: Date): Promise<RangeReadings> {
  const q = new URLSearchParams();
  q.set('patient', session.patientId);
  q.set('code', token);
  if (from) q.append('date', `ge${from.toISOString()}`);
  q.append('date', `lt${to.toISOString()}`);
  q.set('_sort', 'date');
  q.set('_count', String(PAGE));
  let url: string | undefined = `Observation?${q.toString()}`;
  const readings: Observation[] = [];
  while (url && readings.length < CHART_CAP) {
    const b: Bundle<Observation> = await session.get<Bundle<Observation>>(url);
    readings.push(...matches(b, 'Observation'));
    url = nextLink(b);
  }
  const capped = readings.length >= CHART_CAP && url !== undefined;
  return { readings: readings.slice(0, CHART_CAP), capped };
}

/** The chart's data: x in seconds, one array of values per series (null where a reading lacks it). */
export function toSeries(readings: Observation[]): { xs: number[]; series: SeriesDef[]; values: Array<Array<number | null>> } {
  const defs = new Map<string, SeriesDef>();
  const rows: Array<{ t: number; vals: Map<string, number> }> = [];
  for (const o of readings) {
    const when = effectiveTime(o);
    const t = when ? Date.parse(when) : NaN;
    if (Number.isNaN(t)) continue;
    const vals = new Map<string, number>();
    for (const v of numericValues(o)) {
      if (!defs.has(v.key)) defs.set(v.key, { key: v.key, label: v.label, unit: v.unit });
      vals.set(v.key, v.value);
    }
    if (vals.size) rows.push({ t, vals });
  }
  rows.sort((a, b) => a.t - b.t);
  const series = [...defs.values()];
  return { xs: rows.map((r) => r.t / 1000), series, values: series.map((s) => rows.map((r) => r.vals.get(s.key) ?? null)) };
}
