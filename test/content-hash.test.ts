import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import canonicalize from 'canonicalize';
import { canonicalJson } from '../src/store/content-hash.js';
import { FIXTURES, WITH_FIXTURES } from './helpers.js';

const reference = canonicalize as unknown as (v: unknown) => string | undefined;
const FIX = `${FIXTURES}/hl7-examples/r4-core`;

describe('canonical JSON (RFC 8785), the input of every content hash', () => {
  it('is byte-identical to the canonicalize package on the R4 examples', WITH_FIXTURES, () => {
    const files = readdirSync(FIX).filter((f) => f.endsWith('.json')).slice(0, 400);
    assert.ok(files.length > 50);
    for (const f of files) {
      const value: unknown = JSON.parse(readFileSync(`${FIX}/${f}`, 'utf8'));
      assert.equal(canonicalJson(value), reference(value), f);
    }
  });

  it('matches it on numbers, Unicode, key order, undefined and toJSON', () => {
    const values: unknown[] = [
      { b: [1, undefined, null, true, 'x'], a: { z: 1e21, y: -0, x: 0.1 + 0.2, w: 5e-7, v: 123456789012345680000 } },
      { '\u00e9': 1, e: 2, E: 3, '\u{1F600}': 4, '\uFB33': 5, 'a\u0000': 6, '': 7, skip: undefined },
      ['\u2028\u2029', 'del \u007f', '"\\\n\t\u001f', '\u{1F600}', 'é'],
      { d: new Date(0), nested: [[[]], {}] },
      'plain', 0, -1.5, false, null,
    ];
    for (const v of values) assert.equal(canonicalJson(v), reference(v));
  });

  it('refuses what RFC 8785 cannot express, as the package does', () => {
    for (const bad of [NaN, Infinity, { a: -Infinity }, 'lone \uD800', { ['\uDC00']: 1 }, undefined]) {
      assert.throws(() => canonicalJson(bad));
      assert.throws(() => { if (reference(bad) === undefined) throw new Error('undefined'); });
    }
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    assert.throws(() => canonicalJson(cyclic), /Circular/);
  });

  it('serializes a deeply frozen object once and reuses it, but never an object whose parts can still change', () => {
    const coding = Object.freeze({ system: 'http://terminology.hl7.org/CodeSystem/object-role', code: '1' });
    const deep = Object.freeze({ coding: Object.freeze([coding]), text: 'x' });
    const events = [1, 2, 3].map((i) => ({ what: { reference: `Patient/${i}` }, role: coding, type: deep }));
    for (const e of events) assert.equal(canonicalJson(e), reference(e));
    assert.equal(canonicalJson(deep), reference(deep), 'the same text when it comes from the memo');

    const inner = { code: 'a' };
    const shallow = Object.freeze({ inner });
    assert.equal(canonicalJson(shallow), '{"inner":{"code":"a"}}');
    inner.code = 'b';
    assert.equal(canonicalJson(shallow), '{"inner":{"code":"b"}}', 'a frozen object with a mutable part is serialized again');
  });
});
