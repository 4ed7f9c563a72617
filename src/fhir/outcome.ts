import type { OperationOutcome, OperationOutcomeIssue } from '@medplum/fhirtypes';
import type { WorkerFailure } from '../workers.js';

export type IssueCode = OperationOutcomeIssue['code'];

/** A failure that maps to one HTTP status and an OperationOutcome body. */
export class FhirError extends Error {
  readonly status: number;
  readonly issues: OperationOutcomeIssue[];
  constructor(status: number, code: IssueCode, diagnostics: string, expression?: string[]) {
    super(diagnostics);
    this.status = status;
    this.issues = [{ severity: 'error', code, diagnostics, ...(expression ? { expression } : {}) }];
  }
  static fromIssues(status: number, issues: OperationOutcomeIssue[]): FhirError {
    const err = new FhirError(status, issues[0]?.code ?? 'processing', issues.map((i) => i.diagnostics ?? i.details?.text).filter(Boolean).join('; '));
    (err as { issues: OperationOutcomeIssue[] }).issues = issues;
    return err;
  }
  toOutcome(): OperationOutcome {
    return { resourceType: 'OperationOutcome', issue: this.issues };
  }
}

export const badRequest = (msg: string, expression?: string[]) => new FhirError(400, 'invalid', msg, expression);
export const notFound = (msg: string) => new FhirError(404, 'not-found', msg);
export const gone = (msg: string) => new FhirError(410, 'deleted', msg);
export const conflict = (msg: string) => new FhirError(409, 'conflict', msg);
export const preconditionFailed = (msg: string) => new FhirError(412, 'conflict', msg);
export const notSupported = (msg: string) => new FhirError(400, 'not-supported', msg);
export const unprocessable = (msg: string, expression?: string[]) => new FhirError(422, 'processing', msg, expression);

export function outcome(severity: OperationOutcomeIssue['severity'], code: IssueCode, diagnostics: string): OperationOutcome {
  return { resourceType: 'OperationOutcome', issue: [{ severity, code, diagnostics }] };
}

export function allOk(diagnostics = 'All OK'): OperationOutcome {
  return outcome('information', 'informational', diagnostics);
}

/** A FhirError keeps its status and issues across a worker-thread boundary; anything else is a 500. */
export function toWorkerFailure(err: unknown): WorkerFailure {
  if (err instanceof FhirError) return { message: err.message, status: err.status, issues: err.issues };
  return { message: (err as Error)?.message ?? String(err) };
}

export function fromWorkerFailure(f: WorkerFailure): Error {
  if (f.status !== undefined && f.issues) return FhirError.fromIssues(f.status, f.issues as OperationOutcomeIssue[]);
  return new Error(f.message);
}
