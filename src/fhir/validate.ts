import { OperationOutcomeError, validateResource } from '@medplum/core';
import type { OperationOutcomeIssue, Resource } from '@medplum/fhirtypes';
import { isResourceType } from './definitions.js';
import { jsonLimitViolation, NESTING_ONLY } from './json-limits.js';
import { badRequest, FhirError } from './outcome.js';
import { requiredCodeIssues } from './required-codes.js';

const ID = /^[A-Za-z0-9\-.]{1,64}$/;

export function isValidId(id: string): boolean {
  return ID.test(id);
}

export function assertValidId(id: string): void {
  if (!isValidId(id)) throw badRequest(`Invalid resource id "${id.slice(0, 80)}": ids are 1-64 characters of A-Z, a-z, 0-9, '-' and '.'`);
}

/** Checks a request body is a JSON object naming a known resource type (and the expected one). */
export function assertResourceShape(body: unknown, expectedType?: string): Resource {
  if (body === undefined || body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw badRequest('Request body must be a FHIR resource (a JSON object)');
  }
  const rt = (body as { resourceType?: unknown }).resourceType;
  if (typeof rt !== 'string') throw badRequest('Resource has no resourceType', ['resourceType']);
  if (!isResourceType(rt)) throw badRequest(`Unknown resourceType "${rt.slice(0, 80)}"`, ['resourceType']);
  if (expectedType && rt !== expectedType) {
    throw badRequest(`Resource type "${rt}" does not match the URL type "${expectedType}"`, ['resourceType']);
  }
  return body as Resource;
}

/**
 * Names of Object.prototype's members. The StructureDefinition validator looks element names up in
 * plain objects, where these always "exist", so an element called `constructor` or `__proto__`
 * passed as if it were defined. No FHIR element has such a name.
 */
const PROTOTYPE_KEYS = new Set(Object.getOwnPropertyNames(Object.prototype));

function prototypeKeyIssues(value: unknown, path: string, out: OperationOutcomeIssue[]): void {
  if (Array.isArray(value)) {
    value.forEach((v, i) => prototypeKeyIssues(v, `${path}[${i}]`, out));
    return;
  }
  if (value === null || typeof value !== 'object') return;
  for (const key of Object.keys(value)) {
    const at = `${path}.${key}`;
    if (PROTOTYPE_KEYS.has(key)) {
      out.push({ severity: 'error', code: 'structure', details: { text: `Invalid additional property "${key}"` }, expression: [at], diagnostics: `Invalid additional property "${key}" at ${at}` });
    } else {
      prototypeKeyIssues((value as Record<string, unknown>)[key], at, out);
    }
  }
}

/** Validates against the R4 StructureDefinitions; returns the issues (empty when valid). */
export function validationIssues(resource: Resource): OperationOutcomeIssue[] {
  // Bodies are checked when parsed; this also covers what a JSON Patch makes of a stored resource
  // (the walks below are recursive, and the content hash refuses lone surrogates).
  const limit = jsonLimitViolation(resource, NESTING_ONLY);
  if (limit) return [{ severity: 'error', code: limit.code, details: { text: limit.message }, expression: [limit.expression], diagnostics: limit.message }];
  const odd: OperationOutcomeIssue[] = [];
  prototypeKeyIssues(resource, resource.resourceType, odd);
  if (odd.length > 0) return odd;
  try {
    const errors = validateResource(resource).filter((i) => i.severity === 'error' || i.severity === 'fatal');
    return errors.length > 0 ? errors : requiredCodeIssues(resource);
  } catch (err) {
    if (err instanceof OperationOutcomeError) {
      return err.outcome.issue.map((i) => ({ ...i, diagnostics: i.diagnostics ?? `${i.details?.text ?? 'Invalid'}${i.expression ? ` at ${i.expression.join(', ')}` : ''}` }));
    }
    throw err;
  }
}

export function assertValid(resource: Resource): void {
  const issues = validationIssues(resource);
  if (issues.length > 0) throw FhirError.fromIssues(400, issues);
}
