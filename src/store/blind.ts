import { createHmac } from 'node:crypto';
import type { TextEntry } from './types.js';

/** Longest normalized prefix that gets its own blinded row; longer query prefixes are truncated to it. */
export const MAX_BLIND_PREFIX = 64;

const CACHE_LIMIT = 50_000;
/** The parameter name in the MACs of `:text` values: no real parameter is named so. */
const TEXT_DOMAIN = ':text';
const ROW_CACHE_LIMIT = 5_000;

/**
 * Keyed one-way blinding of index values (HMAC-SHA-256, base64url). The parameter code is part of
 * the MAC input so the same value under two parameters gives unrelated index entries, and the kind
 * (token / prefix / exact) is too so a prefix row can never be mistaken for an exact one.
 */
export class Blinder {
  readonly #key: Buffer;
  // Clinical vocabularies repeat across resources (code displays, units); memoizing keeps writes fast.
  readonly #cache = new Map<string, string>();
  readonly #rowCache = new Map<string, readonly string[]>();
  readonly #textCache = new Map<string, TextEntry>();

  constructor(indexKey: Buffer) {
    if (indexKey.length < 16) throw new Error('index key must be at least 16 bytes');
    this.#key = Buffer.from(indexKey);
  }

  token(param: string, value: string): string {
    return this.#mac('t', param, value);
  }

  /** Blinded prefix row value; `normalizedPrefix` must already be normalized and truncated. */
  prefix(param: string, normalizedPrefix: string): string {
    return 'p:' + this.#mac('p', param, normalizedPrefix);
  }

  /** Blinded exact-form row value (the value as written, not normalized). */
  exact(param: string, value: string): string {
    return 'x:' + this.#mac('x', param, value);
  }

  /**
   * All blinded row values for one string: a 'p:' value per normalized prefix (1..64 code points)
   * and one 'x:' value of the string as written.
   */
  stringValues(param: string, value: string): readonly string[] {
    const key = `s\u0000${param}\u0000${value}`;
    const hit = this.#rowCache.get(key);
    if (hit !== undefined) return hit;
    const out = blindPrefixes(normalizeString(value)).map((p) => this.prefix(param, p));
    if (out.length > 0) out.push(this.exact(param, value));
    if (this.#rowCache.size >= ROW_CACHE_LIMIT) this.#rowCache.clear();
    this.#rowCache.set(key, out);
    return out;
  }

  /**
   * A free text of a `:text` row, blinded (undefined if it normalizes to nothing). The same under
   * every parameter, so that the prefixes of a text are stored once and a union parameter
   * (combo-code:text) finds its members' rows.
   */
  text(value: string): TextEntry | undefined {
    const hit = this.#textCache.get(value);
    if (hit !== undefined) return hit;
    const normalized = normalizeString(value);
    if (!normalized) return undefined;
    const entry = { value: 't:' + this.#mac('t', TEXT_DOMAIN, normalized), prefixes: blindPrefixes(normalized).map((p) => this.prefix(TEXT_DOMAIN, p)) };
    if (this.#textCache.size >= ROW_CACHE_LIMIT) this.#textCache.clear();
    this.#textCache.set(value, entry);
    return entry;
  }

  /** The text_prefix key a `:text` search (starts-with of the whole text) looks up. */
  textPrefix(query: string): string {
    return this.prefix(TEXT_DOMAIN, codePointPrefix(normalizeString(query), MAX_BLIND_PREFIX));
  }

  #mac(kind: string, param: string, value: string): string {
    const input = `${kind}\u0000${param}\u0000${value}`;
    const hit = this.#cache.get(input);
    if (hit !== undefined) return hit;
    const mac = createHmac('sha256', this.#key).update(input, 'utf8').digest('base64url');
    if (this.#cache.size >= CACHE_LIMIT) this.#cache.clear();
    this.#cache.set(input, mac);
    return mac;
  }
}

const COMBINING = /\p{M}/gu;
const SPACES = /\s+/g;
const PLAIN_ASCII = /^[\x20-\x7e]*$/;

/** Search normalization: accents removed, lowercase, whitespace collapsed and trimmed. */
export function normalizeString(s: string): string {
  if (PLAIN_ASCII.test(s)) return s.toLowerCase().replace(SPACES, ' ').trim();
  return s.normalize('NFD').replace(COMBINING, '').toLowerCase().replace(SPACES, ' ').trim();
}

/** The first `n` code points of `s` (never splits a surrogate pair). */
export function codePointPrefix(s: string, n: number): string {
  if (s.length <= n) return s;
  return Array.from(s).slice(0, n).join('');
}

/** Prefixes of a normalized value, lengths 1..min(len, MAX_BLIND_PREFIX), in code points. */
export function blindPrefixes(normalized: string): string[] {
  const chars = Array.from(normalized);
  const out: string[] = [];
  let acc = '';
  for (let i = 0; i < chars.length && i < MAX_BLIND_PREFIX; i++) {
    acc += chars[i];
    out.push(acc);
  }
  return out;
}
