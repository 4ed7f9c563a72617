import type { ComponentChildren } from 'preact';
import { FhirProblem, SessionExpired } from '../session.js';

/** A message a patient understands for what went wrong; `role=alert` so screen readers announce it. */
export function ErrorNotice({ error, children }: { error: unknown; children?: ComponentChildren }) {
  if (!error) return null;
  return <div class="notice notice-error" role="alert"><p>{plainError(error)}</p>{children}</div>;
}

export function Notice({ kind, children }: { kind: 'ok' | 'warn' | 'info'; children: ComponentChildren }) {
  return <div class={`notice notice-${kind}`} role={kind === 'warn' ? 'alert' : 'status'}>{children}</div>;
}

export function Loading({ what }: { what: string }) {
  return <p class="loading" role="status">Loading {what}…</p>;
}

export function plainError(error: unknown): string {
  if (error instanceof SessionExpired) return error.message;
  if (error instanceof FhirProblem) {
    if (error.status === 0) return error.message;
    if (error.status === 403) return `This was not allowed: ${error.message}`;
    if (error.status === 404) return `Not found: ${error.message}`;
    if (error.status === 503) return `The service is busy or a part of it is unreachable right now; try again in a moment. (${error.message})`;
    return error.message;
  }
  if (error instanceof Error) return error.message;
  return String(error);
}
