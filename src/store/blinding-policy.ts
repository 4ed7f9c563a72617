import { getSearchParameterDetails } from '@medplum/core';
import { getPatientCompartmentParams, getTypeSearchParameters } from '../fhir/definitions.js';
import type { SearchParamType } from './types.js';

/** What the policy needs to know about a parameter beyond its code and kind. */
export interface ParamDetails {
  /** FHIR types of the elements the parameter's expression selects on this resource type. */
  elementTypes: readonly string[];
  /** Element paths the expression selects, e.g. 'Patient.birthDate'. */
  elementPaths: readonly string[];
}

const PERSON_TYPES = new Set(['Patient', 'Practitioner', 'RelatedPerson', 'Person', 'PractitionerRole']);
const BIRTH_DATE_TYPES = new Set(['Patient', 'Person', 'RelatedPerson', 'Practitioner']);
const IDENTIFYING_TOKEN_TYPES = new Set(['Identifier', 'ContactPoint']);

/** Whether free text on this resource type may describe a person (names, addresses, notes). */
export function isStringBlindedType(resourceType: string): boolean {
  return PERSON_TYPES.has(resourceType) || getPatientCompartmentParams(resourceType).length > 0;
}

/**
 * Whether a parameter's index values identify a person and are therefore stored as HMACs.
 * Strings: on person types and Patient-compartment types. Tokens: identifiers and telecom.
 * Dates: birth dates. Everything clinical (codes, dates, quantities) stays clear.
 */
export function isBlinded(resourceType: string, code: string, type: SearchParamType, details: ParamDetails): boolean {
  switch (type) {
    case 'string':
      return isStringBlindedType(resourceType);
    case 'token':
      return details.elementTypes.some((t) => IDENTIFYING_TOKEN_TYPES.has(t));
    case 'date':
      return code === 'birthdate' || (BIRTH_DATE_TYPES.has(resourceType) && details.elementPaths.some((p) => p.endsWith('.birthDate')));
    default:
      return false;
  }
}

/**
 * Whether the `<code>:text` rows of a token parameter (CodeableConcept.text, Coding.display) are
 * blinded: always on patient data, where the text is free and can say anything about the patient
 * ("bob depression"); elsewhere (Medication, ValueSet, ...) only if the token itself is.
 */
export function isTextBlinded(resourceType: string, tokenBlinded: boolean): boolean {
  return tokenBlinded || isStringBlindedType(resourceType);
}

const cache = new Map<string, boolean>();

/** isBlinded for an R4 parameter looked up by code (false for unknown codes and _id/_lastUpdated). */
export function isParamBlinded(resourceType: string, code: string): boolean {
  const key = `${resourceType}.${code}`;
  let hit = cache.get(key);
  if (hit === undefined) {
    hit = computeBlinded(resourceType, code);
    cache.set(key, hit);
  }
  return hit;
}

/** Whether a search with `:text` on an R4 token parameter reads blinded rows. */
export function isParamTextBlinded(resourceType: string, code: string): boolean {
  return isTextBlinded(resourceType, isParamBlinded(resourceType, code));
}

function computeBlinded(resourceType: string, code: string): boolean {
  if (code === '_id' || code === '_lastUpdated') return false;
  const sp = getTypeSearchParameters(resourceType)[code];
  if (!sp) return false;
  return isBlinded(resourceType, code, sp.type as SearchParamType, paramDetails(resourceType, code));
}

/** Element types and paths of an R4 parameter on a resource type, from @medplum/core's details. */
export function paramDetails(resourceType: string, code: string): ParamDetails {
  const sp = getTypeSearchParameters(resourceType)[code];
  if (!sp) return { elementTypes: [], elementPaths: [] };
  const defs = getSearchParameterDetails(resourceType, sp).elementDefinitions ?? [];
  return {
    elementTypes: defs.flatMap((d) => d.type.map((t) => t.code)),
    elementPaths: defs.map((d) => d.path),
  };
}
