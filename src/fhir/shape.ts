import type { Coding, Resource } from '@medplum/fhirtypes';
import { getSummaryElements } from './definitions.js';

const SUBSETTED: Coding = { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'SUBSETTED', display: 'subsetted' };

function subset(resource: Resource, keep: (key: string) => boolean): Resource {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(resource)) {
    if (k === 'resourceType' || k === 'id' || k === 'meta' || keep(k.startsWith('_') ? k.slice(1) : k)) out[k] = v;
  }
  const meta = { ...(resource.meta ?? {}) };
  meta.tag = [...(meta.tag ?? []), SUBSETTED];
  out.meta = meta;
  return out as unknown as Resource;
}

/** _elements: only the named top-level elements (plus the mandatory id/meta), tagged SUBSETTED. */
export function applyElements(resource: Resource, elements: string[]): Resource {
  const names = new Set(elements.map((e) => e.includes('.') ? e.split('.')[1]! : e));
  return subset(resource, (k) => names.has(k) || [...names].some((n) => k.startsWith(n) && /^[A-Z]/.test(k.slice(n.length))));
}

/** _summary=true|text|data. */
export function applySummary(resource: Resource, mode: 'true' | 'text' | 'data'): Resource {
  if (mode === 'data') return subset(resource, (k) => k !== 'text');
  if (mode === 'text') return subset(resource, (k) => k === 'text');
  const summary = getSummaryElements(resource.resourceType);
  return subset(resource, (k) => summary.has(k) || [...summary].some((n) => k.startsWith(n) && /^[A-Z]/.test(k.slice(n.length))));
}
