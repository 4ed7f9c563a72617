import { partNamed, partsNamed, type Parameters } from './fhir-params.js';

/** Someone or something that touched the patient's data, as $access-report sums it up. */
export interface Actor {
  /** The key the trail filter uses: "Practitioner/1", "client:<id>", or a display for the server itself. */
  key: string;
  /** A user's FHIR reference (resolved to a name through a read the patient may make). */
  reference?: string;
  /** An app or system acting on its own: its client id and the name it was registered under. */
  clientId?: string;
  clientName?: string;
  /** What the report calls an actor that has neither (the server itself). */
  display?: string;
  first: string;
  last: string;
  count: number;
  refused: number;
  resourceTypes: string[];
  breakGlass: boolean;
}

export interface AccessReport {
  actors: Actor[];
  /** Set when the server does not record accesses (AUDIT=off). */
  note?: string;
}

export function parseAccessReport(p: Parameters): AccessReport {
  const actors = partsNamed(p.parameter, 'actor').map((a): Actor => {
    const who = partNamed(a.part, 'who')?.valueReference;
    const clientId = partNamed(a.part, 'client')?.valueString;
    const clientName = partNamed(a.part, 'name')?.valueString;
    const key = who?.reference ?? (clientId !== undefined ? `client:${clientId}` : who?.display ?? 'unknown');
    return {
      key,
      ...(who?.reference ? { reference: who.reference } : {}),
      ...(clientId !== undefined ? { clientId } : {}),
      ...(clientName ? { clientName } : {}),
      ...(!who?.reference && clientId === undefined ? { display: who?.display ?? 'unknown' } : {}),
      first: partNamed(a.part, 'first')?.valueInstant ?? '',
      last: partNamed(a.part, 'last')?.valueInstant ?? '',
      count: partNamed(a.part, 'count')?.valueInteger ?? 0,
      refused: partNamed(a.part, 'refused')?.valueInteger ?? 0,
      resourceTypes: partsNamed(a.part, 'resourceType').map((x) => x.valueCode ?? '').filter(Boolean),
      breakGlass: partNamed(a.part, 'breakGlass')?.valueBoolean === true,
    };
  });
  const note = partNamed(p.parameter, 'note')?.valueString;
  return { actors, ...(note ? { note } : {}) };
}
