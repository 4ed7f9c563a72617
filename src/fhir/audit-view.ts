import type { AuditEvent, AuditEventEntity, Bundle, Coding, Resource } from '@medplum/fhirtypes';

/**
 * One AuditEvent may record an interaction that touched several patients' data (a search, a
 * Bundle). Each resource entity names the patient(s) it belongs to (this extension), so a patient
 * reading their trail can be shown only their own part of such an event.
 */
export const AUDIT_ENTITY_PATIENT_URL = 'urn:custos:audit-entity-patient';

/** meta.security of a view with parts withheld (HL7 v3 ObservationValue REDACTED). */
export const REDACTED: Coding = { system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue', code: 'REDACTED' };

/**
 * What a principal confined to one patient sees of a stored resource: AuditEvents without the
 * entities of other patients' data and, when there were any, without the query (which may name
 * them), marked REDACTED. Other resources and events about this patient alone are unchanged.
 */
export function viewForPatient<T extends Resource | undefined>(resource: T, patientId: string): T {
  if (resource?.resourceType !== 'AuditEvent') return resource;
  const event = resource as AuditEvent;
  const self = `Patient/${patientId}`;
  const foreign = (e: AuditEventEntity): boolean => {
    const ref = e.what?.reference;
    if (ref === undefined) return false;
    if (ref.startsWith('Patient/')) return ref.split('/').slice(0, 2).join('/') !== self;
    const owners = (e.extension ?? []).filter((x) => x.url === AUDIT_ENTITY_PATIENT_URL).map((x) => x.valueReference?.reference);
    return owners.length > 0 && !owners.includes(self);
  };
  const entities = event.entity ?? [];
  if (!entities.some(foreign)) return resource;
  const kept = entities.filter((e) => e.what !== undefined && !foreign(e));
  const { entity: _dropped, ...rest } = event;
  return {
    ...rest,
    meta: { ...event.meta, security: [...(event.meta?.security ?? []), REDACTED] },
    ...(kept.length ? { entity: kept } : {}),
  } as T;
}

/** The same for every entry of a Bundle (matches and included resources). */
export function bundleViewForPatient(bundle: Bundle, patientId: string): Bundle {
  if (!bundle.entry?.some((e) => e.resource?.resourceType === 'AuditEvent')) return bundle;
  return { ...bundle, entry: bundle.entry.map((e) => (e.resource ? { ...e, resource: viewForPatient(e.resource, patientId) } : e)) };
}
