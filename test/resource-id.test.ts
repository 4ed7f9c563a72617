import assert from 'node:assert/strict';
import { it } from 'node:test';
import { newResourceId } from '../src/fhir/resource-id.js';

it('server-assigned ids are UUID version 7: valid FHIR ids, time-ordered, unique', () => {
  const UUID7 = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
  const t = Date.UTC(2026, 10, 28, 12, 0, 0);
  const a = newResourceId(t);
  assert.match(a, UUID7);
  assert.match(a, /^[A-Za-z0-9\-.]{1,64}$/, 'a FHIR id');
  assert.equal(parseInt(a.replace(/-/g, '').slice(0, 12), 16), t, 'the first 48 bits are the time');
  assert.ok(newResourceId(t + 1) > newResourceId(t), 'later ids sort after earlier ones');
  const many = new Set(Array.from({ length: 10_000 }, () => newResourceId(t)));
  assert.equal(many.size, 10_000);
});
