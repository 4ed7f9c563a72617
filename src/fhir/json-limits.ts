import { FhirError, type IssueCode } from './outcome.js';

/**
 * Structural limits on a parsed JSON body, checked in one iterative walk before anything walks it
 * recursively (validation, reference rewriting, hashing) or holds copies of it: a resource of
 * 200,000 identifiers took the process to 1.1 GB, and one nested 3,000 deep overflowed the stack.
 */
export interface JsonLimits {
  /** MAX_ARRAY_LENGTH: items in any one array. */
  maxArrayLength: number;
  /** MAX_ELEMENTS: JSON values (objects, arrays and primitives) in one resource. */
  maxElements: number;
  /** MAX_BUNDLE_ENTRIES: entries of a batch or transaction Bundle, whose limits above apply per entry. */
  maxBundleEntries: number;
}

/** Levels of JSON nesting in one resource (the resource itself is level 1); not configurable. */
export const MAX_JSON_DEPTH = 64;

export const DEFAULT_JSON_LIMITS: Readonly<JsonLimits> = { maxArrayLength: 1000, maxElements: 50_000, maxBundleEntries: 10_000 };

/** Only nesting and Unicode: what keeps the recursive walks and the content hash from failing. */
export const NESTING_ONLY: Readonly<JsonLimits> = { maxArrayLength: Infinity, maxElements: Infinity, maxBundleEntries: Infinity };

export interface JsonLimitViolation {
  status: 400 | 413;
  code: IssueCode;
  message: string;
  /** Where, FHIRPath-like (`Observation.identifier[3]`). */
  expression: string;
}

/** A `\uD800`-`\uDFFF` escape in JSON text: the only way a lone surrogate gets into a parsed string. */
const SURROGATE_ESCAPE = /\\u[dD][89a-fA-F]/;

/** Whether the strings of a body parsed from this JSON text need the lone-surrogate check. */
export function mayHoldLoneSurrogate(jsonText: string): boolean {
  return SURROGATE_ESCAPE.test(jsonText);
}

/** String.prototype.isWellFormed (ES2024, in Node 20): false exactly when a surrogate is unpaired. */
function isLoneSurrogate(s: string): boolean {
  return !(s as unknown as { isWellFormed(): boolean }).isWellFormed();
}

interface Frame { v: unknown; depth: number; parent?: Frame; key: string | number }

function pathOf(f: Frame): string {
  const parts: string[] = [];
  for (let cur: Frame | undefined = f; cur; cur = cur.parent) parts.push(typeof cur.key === 'number' ? `[${cur.key}]` : cur.parent ? `.${cur.key}` : cur.key);
  return parts.reverse().join('');
}

/**
 * Whether one resource (or a Bundle entry, whose resource then sits at level 1) breaks a limit:
 * the common case, so no paths are kept (`walk` finds where, when it does). `startDepth` is the
 * level of `root`; `skip` leaves out one key of the root (a Bundle's entries, checked one by one).
 */
function breaks(root: unknown, startDepth: number, limits: JsonLimits, strings: boolean, skip?: string): boolean {
  const values: unknown[] = [root];
  const depths: number[] = [startDepth];
  let count = 1;
  while (values.length > 0) {
    const v = values.pop();
    const depth = depths.pop()!;
    if (typeof v === 'string') {
      if (strings && isLoneSurrogate(v)) return true;
      continue;
    }
    if (v === null || typeof v !== 'object') continue;
    if (depth > MAX_JSON_DEPTH) return true;
    if (Array.isArray(v)) {
      if (v.length > limits.maxArrayLength || (count += v.length) > limits.maxElements) return true;
      for (let i = 0; i < v.length; i++) {
        values.push(v[i]);
        depths.push(depth + 1);
      }
    } else {
      for (const key in v) {
        if (!Object.hasOwn(v, key) || (key === skip && v === root)) continue;
        if (++count > limits.maxElements || (strings && isLoneSurrogate(key))) return true;
        values.push((v as Record<string, unknown>)[key]);
        depths.push(depth + 1);
      }
    }
  }
  return false;
}

/** Where `root` breaks a limit (see `breaks`), with the path for the OperationOutcome. */
function walk(root: unknown, label: string, startDepth: number, limits: JsonLimits, strings: boolean, skip?: string): JsonLimitViolation | undefined {
  const first: Frame = { v: root, depth: startDepth, key: label };
  const stack: Frame[] = [first];
  let count = 1;
  const add = (f: Frame): JsonLimitViolation | undefined => {
    if (++count > limits.maxElements) {
      return { status: 413, code: 'too-costly', expression: pathOf(f),
        message: `A resource may hold at most ${limits.maxElements} JSON values (objects, arrays, strings, numbers, booleans); ${label} has more (the limit is reached at ${pathOf(f)})` };
    }
    stack.push(f);
    return undefined;
  };
  while (stack.length > 0) {
    const f = stack.pop()!;
    const v = f.v;
    if (typeof v === 'string') {
      if (strings && isLoneSurrogate(v)) return unicode(pathOf(f));
      continue;
    }
    if (v === null || typeof v !== 'object') continue;
    if (f.depth > MAX_JSON_DEPTH) {
      return { status: 400, code: 'structure', expression: pathOf(f),
        message: `JSON is nested more than ${MAX_JSON_DEPTH} levels deep at ${pathOf(f).slice(0, 200)}; a resource may nest at most ${MAX_JSON_DEPTH} levels` };
    }
    if (Array.isArray(v)) {
      if (v.length > limits.maxArrayLength) {
        return { status: 413, code: 'too-costly', expression: pathOf(f), message: `An array may hold at most ${limits.maxArrayLength} items; ${pathOf(f)} has ${v.length}` };
      }
      for (let i = v.length - 1; i >= 0; i--) {
        const bad = add({ v: v[i], depth: f.depth + 1, parent: f, key: i });
        if (bad) return bad;
      }
    } else {
      for (const key of Object.keys(v)) {
        if (f === first && key === skip) continue;
        const child: Frame = { v: (v as Record<string, unknown>)[key], depth: f.depth + 1, parent: f, key };
        if (strings && isLoneSurrogate(key)) return unicode(pathOf(child));
        const bad = add(child);
        if (bad) return bad;
      }
    }
  }
  return undefined;
}

function unicode(at: string): JsonLimitViolation {
  return { status: 400, code: 'invalid', expression: at,
    message: `Invalid Unicode at ${at.slice(0, 200)}: a string holds a lone UTF-16 surrogate (a \\uD800-\\uDFFF escape without its pair); FHIR strings must be valid Unicode` };
}

function isProcessedBundle(v: unknown): v is { entry: unknown[] } {
  const b = v as { resourceType?: unknown; type?: unknown; entry?: unknown } | null;
  return typeof b === 'object' && b !== null && b.resourceType === 'Bundle' && (b.type === 'batch' || b.type === 'transaction') && Array.isArray(b.entry);
}

/**
 * The first limit a parsed body breaks, if any. A batch or transaction Bundle may have up to
 * `maxBundleEntries` entries, and each entry (with its resource) is held to the limits on its own.
 * `strings`: also look for lone surrogates (see mayHoldLoneSurrogate).
 */
export function jsonLimitViolation(body: unknown, limits: JsonLimits, strings = true): JsonLimitViolation | undefined {
  const rt = (body as { resourceType?: unknown } | null)?.resourceType;
  const label = typeof rt === 'string' && /^[A-Za-z]{1,64}$/.test(rt) ? rt : '(body)';
  if (!isProcessedBundle(body)) return breaks(body, 1, limits, strings) ? walk(body, label, 1, limits, strings) : undefined;
  if (body.entry.length > limits.maxBundleEntries) {
    return { status: 413, code: 'too-costly', expression: 'Bundle.entry', message: `A Bundle may have at most ${limits.maxBundleEntries} entries; this one has ${body.entry.length}` };
  }
  if (breaks(body, 1, limits, strings, 'entry')) return walk(body, 'Bundle', 1, limits, strings, 'entry');
  for (let i = 0; i < body.entry.length; i++) {
    // The entry wraps its resource: the resource is level 1, as when it is sent on its own.
    if (breaks(body.entry[i], 0, limits, strings)) return walk(body.entry[i], `Bundle.entry[${i}]`, 0, limits, strings);
  }
  return undefined;
}

/** Throws the 400/413 OperationOutcome for a body that breaks a limit. */
export function assertJsonLimits(body: unknown, limits: JsonLimits, strings = true): void {
  const v = jsonLimitViolation(body, limits, strings);
  if (v) throw new FhirError(v.status, v.code, v.message, [v.expression]);
}
