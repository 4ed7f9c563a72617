import type { CapabilityStatement, CapabilityStatementRestResource, CapabilityStatementRestSecurity, CapabilityStatementRestResourceSearchParam } from '@medplum/fhirtypes';
import { isParamBlinded, isParamTextBlinded } from '../store/index.js';
import { getResourceTypes, getTypeSearchParameters } from './definitions.js';
import { MAX_JSON_DEPTH } from './json-limits.js';
import { MAX_PARAMETER_VALUES, MAX_SEARCH_FILTERS } from './search/parse.js';

const SUPPORTED_TYPES = new Set(['token', 'string', 'date', 'number', 'quantity', 'reference', 'uri']);
/** Resource-level parameters that are columns or not indexed by this server. */
const SKIPPED = new Set(['_compartment']);

let cached: { key: string; security?: CapabilityStatementRestSecurity; cs: CapabilityStatement } | undefined;

/** Operations beyond $validate, by name (e.g. $verify on every type, $ledger-status at the base). */
export interface ExtraOperations { instance: Array<{ name: string; types?: readonly string[] }>; system: string[] }

function searchParams(type: string): CapabilityStatementRestResourceSearchParam[] {
  return Object.entries(getTypeSearchParameters(type))
    .filter(([code, sp]) => !SKIPPED.has(code) && SUPPORTED_TYPES.has(sp.type ?? ''))
    .map(([code, sp]) => ({
      name: code,
      definition: sp.url,
      type: sp.type!,
      ...(isParamBlinded(type, code)
        ? { documentation: 'Blinded (HMAC) index: equality and starts-with only; :contains, _sort and range prefixes are refused with 400.' }
        : sp.type === 'token' && isParamTextBlinded(type, code)
          ? { documentation: 'Codes are indexed in the clear; the text and displays that :text searches are blinded (HMAC): :text matches the start of the whole text.' }
          : {}),
    }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

function resourceEntry(type: CapabilityStatementRestResource['type']): CapabilityStatementRestResource {
  const params = searchParams(type);
  const refs = params.filter((p) => p.type === 'reference').map((p) => `${type}:${p.name}`);
  return {
    type,
    profile: `http://hl7.org/fhir/StructureDefinition/${type}`,
    interaction: ['read', 'vread', 'update', 'patch', 'delete', 'history-instance', 'history-type', 'create', 'search-type'].map((code) => ({ code: code as 'read' })),
    versioning: 'versioned-update',
    readHistory: true,
    updateCreate: true,
    conditionalCreate: true,
    conditionalRead: 'full-support',
    conditionalUpdate: true,
    conditionalDelete: 'single',
    searchInclude: ['*', ...refs],
    searchRevInclude: ['*'],
    searchParam: params,
    operation: [{ name: 'validate', definition: 'http://hl7.org/fhir/OperationDefinition/Resource-validate' }],
  };
}

/** What this server implements, and nothing more. */
export function buildCapabilityStatement(baseUrl: string, security?: CapabilityStatementRestSecurity, ops: ExtraOperations = { instance: [], system: [] }): CapabilityStatement {
  const key = `${baseUrl} ${JSON.stringify(ops.instance)} ${ops.system.join(',')}`;
  if (cached?.key === key && cached.security === security) return cached.cs;
  const opEntry = (name: string) => ({ name: name.replace(/^\$/, ''), definition: `urn:custos:operation:${name.replace(/^\$/, '')}` });
  const cs: CapabilityStatement = {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: '2026-11-28',
    publisher: 'Custos',
    kind: 'instance',
    software: { name: 'Custos', version: '0.1.0' },
    implementation: { description: 'Custos FHIR R4 server (encrypted store)', url: baseUrl },
    fhirVersion: '4.0.1',
    format: ['json', 'application/fhir+json'],
    patchFormat: ['application/json-patch+json'],
    rest: [{
      mode: 'server',
      ...(security ? { security } : {}),
      documentation: 'JSON only. Search: token, string, reference, date, number, quantity and uri parameters; '
        + 'composite and special parameters, _has, _list, _text, _content and _filter are not supported. '
        + 'Index values that identify a person (names, addresses, telecom, identifiers, birth dates, free-text strings in '
        + 'patient data) are blinded with HMAC: they support equality and starts-with (and :exact) but not :contains, '
        + '_sort, or range prefixes on birthdate, which are refused with a 400 OperationOutcome. On patient data the '
        + 'texts that token :text searches (CodeableConcept.text, Coding.display) are blinded too (starts-with of the '
        + 'whole text); narrative (text.div), notes (Annotation) and other free text are not indexed at all. '
        + `Limits (400 beyond): ${MAX_SEARCH_FILTERS} search parameters per search (each repetition and chain counts), `
        + `${MAX_PARAMETER_VALUES} comma-separated values per parameter; request bodies nest at most ${MAX_JSON_DEPTH} levels per resource `
        + 'and hold valid Unicode only; arrays, values per resource and Bundle entries are limited by the server\'s configuration (413 beyond).',
      resource: getResourceTypes().map((t) => {
        const r = resourceEntry(t as CapabilityStatementRestResource['type']);
        return { ...r, operation: [...(r.operation ?? []), ...ops.instance.filter((o) => !o.types || o.types.includes(t)).map((o) => opEntry(o.name))] };
      }),
      interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'history-system' }],
      operation: ops.system.map(opEntry),
    }],
  };
  cached = { key, security, cs };
  return cs;
}
