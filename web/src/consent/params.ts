/** Reading FHIR Parameters answers of the consent operations. */
export interface ParametersParameter {
  name: string;
  valueString?: string; valueCode?: string; valueInstant?: string; valueInteger?: number;
  valueReference?: { reference?: string };
  part?: ParametersParameter[];
}
export interface Parameters { resourceType: 'Parameters'; parameter?: ParametersParameter[] }

export function param(p: { parameter?: ParametersParameter[] } | undefined, name: string): string | undefined {
  const x = p?.parameter?.find((y) => y.name === name);
  if (!x) return undefined;
  return x.valueString ?? x.valueCode ?? x.valueInstant ?? x.valueReference?.reference ?? (x.valueInteger !== undefined ? String(x.valueInteger) : undefined);
}

export function params(p: { parameter?: ParametersParameter[] } | undefined, name: string): ParametersParameter[] {
  return p?.parameter?.filter((y) => y.name === name) ?? [];
}

export function parametersOf(values: Record<string, string | undefined>): Parameters {
  return {
    resourceType: 'Parameters',
    parameter: Object.entries(values).filter((e): e is [string, string] => e[1] !== undefined).map(([name, v]) => (name === 'action' ? { name, valueCode: v } : { name, valueString: v })),
  };
}
