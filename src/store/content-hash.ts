import { createHash } from 'node:crypto';

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;
/** Characters JSON escapes, and surrogates (which need the lone-surrogate check). */
const NOT_PLAIN = /["\\\u0000-\u001f\uD800-\uDFFF]/;

function quote(s: string): string {
  // Most strings (codes, ids, references, dates) need neither escaping nor the surrogate check.
  if (!NOT_PLAIN.test(s)) return `"${s}"`;
  if (LONE_SURROGATE.test(s)) throw new Error('Lone surrogate is not allowed');
  return JSON.stringify(s);
}

/**
 * Serializations of deeply frozen objects: the constant codings the server puts in every
 * AuditEvent (entity types and roles, agent types, the source) are serialized once.
 */
const frozenJson = new WeakMap<object, string>();

/** Every property value is a primitive or a deeply frozen object serialized before. */
function deeplyFrozen(obj: object): boolean {
  for (const v of Object.values(obj)) if (typeof v === 'object' && v !== null && !frozenJson.has(v)) return false;
  return true;
}

/**
 * RFC 8785 serialization, with the output and errors of the `canonicalize` package (which the
 * tests hold it to) at about half its cost: no per-value Set bookkeeping, one string built up.
 */
function serialize(value: unknown, ancestors: object[]): string {
  switch (typeof value) {
    case 'string': return quote(value);
    case 'number':
      if (!Number.isFinite(value)) throw new Error(Number.isNaN(value) ? 'NaN is not allowed' : 'Infinity is not allowed');
      return JSON.stringify(value);
    case 'boolean': return value ? 'true' : 'false';
    case 'object': break;
    default: return JSON.stringify(value);
  }
  if (value === null) return 'null';
  const frozen = Object.isFrozen(value);
  if (frozen) {
    const known = frozenJson.get(value);
    if (known !== undefined) return known;
  }
  if (ancestors.includes(value)) throw new Error('Circular reference detected');
  ancestors.push(value);
  let out: string;
  if (typeof (value as { toJSON?: unknown }).toJSON === 'function') {
    out = serialize((value as { toJSON(): unknown }).toJSON(), ancestors);
  } else if (Array.isArray(value)) {
    out = '[';
    for (let i = 0; i < value.length; i++) {
      const v: unknown = value[i];
      if (i > 0) out += ',';
      out += v === undefined || typeof v === 'symbol' ? 'null' : serialize(v, ancestors);
    }
    out += ']';
  } else {
    const obj = value as Record<string, unknown>;
    out = '{';
    let first = true;
    // Default sort compares UTF-16 code units, as RFC 8785 requires.
    const keys = Object.keys(obj);
    if (keys.length > 1) keys.sort();
    for (const key of keys) {
      const v = obj[key];
      if (v === undefined || typeof v === 'symbol') continue;
      if (!first) out += ',';
      first = false;
      out += `${quote(key)}:${serialize(v, ancestors)}`;
    }
    out += '}';
  }
  ancestors.pop();
  if (frozen && typeof (value as { toJSON?: unknown }).toJSON !== 'function' && deeplyFrozen(value)) frozenJson.set(value, out);
  return out;
}

/** RFC 8785 canonical JSON of a value. */
export function canonicalJson(value: unknown): string {
  const s = serialize(value, []) as string | undefined;
  if (s === undefined) throw new Error('value cannot be canonicalized');
  return s;
}

/** SHA-256 (hex) over the RFC 8785 canonical JSON: the hash the ledger anchors. */
export function contentHash(value: unknown): string {
  return createHash('sha256').update(canonicalJson(value), 'utf8').digest('hex');
}
