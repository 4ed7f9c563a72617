import type { Bundle } from '@medplum/fhirtypes';
import type { IndexRows, StoreReader } from '../store/index.js';
import { getPatientCompartmentParams, isResourceType } from './definitions.js';
import type { AuditInteraction } from './audit-port.js';
import type { FhirRequest } from './request.js';

/** What the router learns about one interaction while it runs, for its AuditEvent. */
export interface AuditNote {
  interaction: AuditInteraction;
  operation?: string;
  resourceType?: string;
  resources: string[];
  patients: string[];
  /** The patients each of `resources` belongs to (for its entity in the AuditEvent). */
  owners: Record<string, string[]>;
  /** Resources whose owners are known already (from the index rows just written), none or some. */
  ownersKnown?: Set<string>;
  /** resources and owners are known already (a search worker named them). */
  resolved?: boolean;
  /** The principal sees one patient's data only (AccessDecision.patient). */
  confinedTo?: string;
  breakGlass?: boolean;
  /** The AuditEvent was written (in the change's transaction). */
  recorded?: boolean;
}

/** Interactions whose response lists what was read. */
export const READ_SHAPED: ReadonlySet<AuditInteraction> = new Set(['read', 'vread', 'search-type', 'search-system', 'history-instance', 'history-type', 'history-system']);

/**
 * The interaction a request is, from its method and path (before it runs, so refusals are
 * recorded too); undefined for what is not audited (the CapabilityStatement).
 */
export function classify(req: FhirRequest): Omit<AuditNote, 'resources' | 'patients' | 'owners'> | undefined {
  const segs = req.path.split('/').filter((s) => s.length > 0);
  const m = req.method;
  const [type, second, third, , fifth] = segs;
  if (segs.length === 0) {
    if (m === 'POST') return { interaction: (req.body as { type?: string } | undefined)?.type === 'transaction' ? 'transaction' : 'batch' };
    return { interaction: 'search-system' };
  }
  if (type === 'metadata') return undefined;
  if (type!.startsWith('$')) return { interaction: 'operation', operation: type };
  if (type === '_history') return { interaction: 'history-system' };
  if (!isResourceType(type!)) return { interaction: m === 'GET' ? 'read' : 'operation', resourceType: type };
  const base = { resourceType: type };
  if (segs.length === 1) {
    const byMethod = { GET: 'search-type', POST: 'create', PUT: 'update', PATCH: 'patch', DELETE: 'delete' } as const;
    return { ...base, interaction: byMethod[m] };
  }
  if (second === '_search') return { ...base, interaction: 'search-type' };
  if (second === '_history') return { ...base, interaction: 'history-type' };
  if (second!.startsWith('$')) return { ...base, interaction: 'operation', operation: second };
  if (segs.length === 2) {
    const byMethod = { GET: 'read', POST: 'operation', PUT: 'update', PATCH: 'patch', DELETE: 'delete' } as const;
    return { ...base, interaction: byMethod[m] };
  }
  if (third === '_history') {
    if (segs.length === 3) return { ...base, interaction: 'history-instance' };
    if (segs.length === 5 && fifth?.startsWith('$')) return { ...base, interaction: 'operation', operation: fifth };
    return { ...base, interaction: 'vread' };
  }
  if (third?.startsWith('$')) return { ...base, interaction: 'operation', operation: third, ...(third === '$break-glass' ? { breakGlass: true } : {}) };
  if (type === 'Patient' && third && isResourceType(third)) return { interaction: 'search-type', resourceType: third };
  return { ...base, interaction: m === 'GET' ? 'read' : 'operation' };
}

/** The query of a search as the audit trail keeps it: the request's own parameters in order. */
export function auditQuery(req: FhirRequest): string {
  return new URLSearchParams(req.query).toString();
}

/** "Type/id" of each resource in a Bundle's entries, once. */
export function entryRefs(b: Bundle): string[] {
  return [...new Set((b.entry ?? []).flatMap((e) => (e.resource?.id ? [`${e.resource.resourceType}/${e.resource.id}`] : [])))];
}

/** The patients whose compartment a resource is in, from its index rows (as ownersOfRefs reads them from the store). */
export function ownersFromIndex(resourceType: string, id: string, index: IndexRows): string[] {
  if (resourceType === 'Patient') return [`Patient/${id}`];
  const params = getPatientCompartmentParams(resourceType);
  const out: string[] = [];
  for (const r of index.reference) {
    if (r.targetType !== 'Patient' || !r.targetId || !params.includes(r.param)) continue;
    const p = `Patient/${r.targetId}`;
    if (!out.includes(p)) out.push(p);
  }
  return out;
}

/** The patients whose compartment each referenced resource ("Type/id[/_history/n]") is in, as "Patient/<id>". */
export async function ownersOfRefs(reader: StoreReader, refs: string[]): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  const byType = new Map<string, Set<string>>();
  for (const ref of refs) {
    const [type, id] = ref.split('/') as [string, string];
    if (type === 'Patient') out[ref] = [`Patient/${id}`];
    else if (getPatientCompartmentParams(type).length > 0) byType.set(type, (byType.get(type) ?? new Set()).add(id));
  }
  for (const [type, ids] of byType) {
    const found = await reader.patientsOf(type, [...ids], getPatientCompartmentParams(type));
    for (const ref of refs) {
      const [t, id] = ref.split('/') as [string, string];
      const patients = t === type ? found.get(id) : undefined;
      if (patients?.length) out[ref] = patients.map((p) => `Patient/${p}`);
    }
  }
  return out;
}
