import type { IndexRows, SearchQuery, StoredVersion, StoreReader } from '../store/index.js';
import { getPatientCompartmentParams } from './definitions.js';

/**
 * Patient-compartment confinement (SMART patient/ scopes, patient users): membership is
 * decided by the store's index of the current version, so it is exactly what a
 * `Patient/[id]/[type]` search would return.
 */

/** Types outside the Patient compartment (Practitioner, Organization, Medication, ...) are shared. */
export function isCompartmentType(type: string): boolean {
  return type === 'Patient' || getPatientCompartmentParams(type).length > 0;
}

/** Restricts a search query to the patient's compartment. */
export function confineQuery(query: SearchQuery, patient: string): void {
  if (query.resourceType === 'Patient') {
    query.ids = query.ids ? query.ids.filter((id) => id === patient) : [patient];
    return;
  }
  const params = getPatientCompartmentParams(query.resourceType);
  if (params.length > 0) query.compartment = { resourceType: 'Patient', id: patient, params };
}

/** The "Type/id" of those current versions that the patient may see (shared types always). */
export async function membersOf(reader: StoreReader, refs: Array<{ resourceType: string; id: string }>, patient: string): Promise<Set<string>> {
  const out = new Set<string>();
  const byType = new Map<string, string[]>();
  for (const r of refs) {
    if (!isCompartmentType(r.resourceType)) out.add(`${r.resourceType}/${r.id}`);
    else if (r.resourceType === 'Patient') {
      if (r.id === patient) out.add(`Patient/${r.id}`);
    } else {
      const ids = byType.get(r.resourceType) ?? [];
      ids.push(r.id);
      byType.set(r.resourceType, ids);
    }
  }
  for (const [resourceType, ids] of byType) {
    const query: SearchQuery = { resourceType, filters: [], sort: [], count: ids.length, offset: 0, total: 'none', ids };
    confineQuery(query, patient);
    for (const v of (await reader.search(query)).matches) out.add(`${v.resourceType}/${v.id}`);
  }
  return out;
}

export async function isMember(reader: StoreReader, resourceType: string, id: string, patient: string): Promise<boolean> {
  return (await membersOf(reader, [{ resourceType, id }], patient)).has(`${resourceType}/${id}`);
}

export async function keepMembers(reader: StoreReader, versions: StoredVersion[], patient: string): Promise<StoredVersion[]> {
  if (versions.length === 0) return versions;
  const members = await membersOf(reader, versions, patient);
  return versions.filter((v) => members.has(`${v.resourceType}/${v.id}`));
}

/** Whether new content (with its index rows) lies in the patient's compartment (or is of a shared type). */
export function contentInCompartment(resourceType: string, id: string | undefined, index: IndexRows, patient: string): boolean {
  if (!isCompartmentType(resourceType)) return true;
  if (resourceType === 'Patient') return id === patient;
  const params = getPatientCompartmentParams(resourceType);
  return index.reference.some((r) => r.targetType === 'Patient' && r.targetId === patient && params.includes(r.param));
}
