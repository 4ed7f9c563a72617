/** The patient's devices (Device.patient puts them in the patient compartment), said in plain words. */
import { conceptText } from '../fhir-text.js';
import type { Session } from '../session.js';
import { matches, type Bundle, type Device, type Reference } from './fhir-types.js';

export type DeviceMap = Map<string, Device>;

export async function patientDevices(session: Session): Promise<DeviceMap> {
  const b = await session.get<Bundle<Device>>(`Device?patient=${encodeURIComponent(session.patientId)}&_count=100`);
  return new Map(matches(b, 'Device').map((d) => [`Device/${d.id}`, d]));
}

export function deviceName(d: Device): string {
  const name = d.deviceName?.find((n) => n.type === 'user-friendly-name')?.name ?? d.deviceName?.[0]?.name ?? conceptText(d.type);
  return name || [d.manufacturer, d.modelNumber].filter(Boolean).join(' ') || 'A device';
}

/** "model M7, made by Omron": the secondary line, when known. */
export function deviceDetails(d: Device): string {
  return [d.modelNumber ? `model ${d.modelNumber}` : '', d.manufacturer ? `made by ${d.manufacturer}` : ''].filter(Boolean).join(', ');
}

export function deviceOf(ref: Reference | undefined, devices: DeviceMap): Device | undefined {
  const r = ref?.reference;
  if (!r) return undefined;
  return devices.get(r.replace(/^.*\/(Device\/[^/]+)(\/_history\/.*)?$/, '$1'));
}
