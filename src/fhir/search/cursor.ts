/**
 * Paging cursors: the position a page ends at (its last match's sort keys and row key, and the
 * page's offset for `previous` links), carried in `next` links as `_cursor`. A cursor is bound to
 * its search by an HMAC over the search's parameters, so a changed cursor, or one taken to
 * another search, is refused rather than silently giving other rows.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { SearchPosition } from '../../store/index.js';
import { badRequest } from '../outcome.js';

export interface PagePosition extends SearchPosition {
  /** How many matches come before the page (for `previous` links and totals). */
  offset: number;
}

export interface CursorCodec {
  seal(search: string, at: PagePosition): string;
  open(search: string, token: string): PagePosition;
}

const MAC_BYTES = 16;
const MAX_TOKEN = 4096;
const MAX_KEYS = 16;
const MAX_KEY_CHARS = 1024;

/** Parameters that do not change which rows a search gives, in which order (left out of the binding). */
const UNBOUND = new Set(['_cursor', '_offset', '_count', '_total', '_format', '_pretty', '_summary', '_elements', '_include', '_revinclude']);

/** The search a cursor belongs to: its path and the parameters that select and order its rows. */
export function searchIdentity(path: string, query: Array<[string, string]>): string {
  const kept = query.filter(([k]) => !UNBOUND.has(k.split(':', 1)[0]!)).map(([k, v]) => `${k}=${v}`).sort();
  return `${path}?${kept.join('&')}`;
}

export function cursorCodec(secret: Uint8Array): CursorCodec {
  const mac = (search: string, payload: string) => createHmac('sha256', secret).update(search).update('\0').update(payload).digest().subarray(0, MAC_BYTES);
  const refuse = () => badRequest('This _cursor does not belong to this search (it was changed, or the search\'s parameters differ); follow the links of the search\'s own pages, or start again without _cursor');
  return {
    seal(search, at) {
      const payload = Buffer.from(JSON.stringify([at.keys, at.pk, at.offset]), 'utf8').toString('base64url');
      return `${payload}.${mac(search, payload).toString('base64url')}`;
    },
    open(search, token) {
      if (token.length > MAX_TOKEN) throw refuse();
      const [payload, tag, extra] = token.split('.');
      if (!payload || !tag || extra !== undefined) throw refuse();
      const given = Buffer.from(tag, 'base64url');
      const expected = mac(search, payload);
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw refuse();
      let value: unknown;
      try { value = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')); } catch { throw refuse(); }
      if (!Array.isArray(value) || value.length !== 3) throw refuse();
      const [keys, pk, offset] = value as [unknown, unknown, unknown];
      const keyOk = (k: unknown) => k === null || (typeof k === 'number' && Number.isFinite(k)) || (typeof k === 'string' && k.length <= MAX_KEY_CHARS);
      if (!Array.isArray(keys) || keys.length > MAX_KEYS || !keys.every(keyOk)) throw refuse();
      if (!Number.isSafeInteger(pk) || (pk as number) < 0 || !Number.isSafeInteger(offset) || (offset as number) < 0) throw refuse();
      return { keys: keys as PagePosition['keys'], pk: pk as number, offset: offset as number };
    },
  };
}
