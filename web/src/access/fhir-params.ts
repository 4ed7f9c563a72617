/** Just enough of FHIR Parameters to read the answers of $access-report and $break-glass. */
export interface Param {
  name: string;
  valueString?: string; valueCode?: string; valueId?: string; valueInstant?: string; valueInteger?: number; valueBoolean?: boolean;
  valueReference?: { reference?: string; display?: string };
  part?: Param[];
}
export interface Parameters { resourceType: 'Parameters'; parameter?: Param[] }

export const partsNamed = (list: Param[] | undefined, name: string): Param[] => (list ?? []).filter((p) => p.name === name);
export const partNamed = (list: Param[] | undefined, name: string): Param | undefined => (list ?? []).find((p) => p.name === name);
