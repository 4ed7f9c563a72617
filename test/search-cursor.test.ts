// Keyset paging: `next` links carry a cursor (the last match's sort keys and row key, bound to the
// search by an HMAC), so a deep page costs what the first does, and pages neither skip nor
// repeat a match when others are written or deleted in between. `_offset` still works.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Client } from 'fhir-kit-client';
import { FHIR_JSON, testServer } from './helpers.js';

type Bundle = { total?: number; link: Array<{ relation: string; url: string }>; entry?: Array<{ resource: any; search?: { mode: string } }> };

describe('search paging by cursor', () => {
  let s: Awaited<ReturnType<typeof testServer>>;
  const call = async (method: string, rel: string, body?: unknown) => {
    const r = await fetch(rel.startsWith('http') ? rel : `${s.base}/${rel}`, {
      method, headers: { Authorization: `Bearer ${s.token}`, Accept: FHIR_JSON, ...(body ? { 'Content-Type': FHIR_JSON } : {}) }, ...(body ? { body: JSON.stringify(body) } : {}),
    });
    return { status: r.status, body: (r.status === 204 ? undefined : await r.json()) as any };
  };
  const obs = async (code: string, date: string | undefined, value: number) => (await call('POST', 'Observation', {
    resourceType: 'Observation', status: 'final', code: { coding: [{ system: 'http://loinc.org', code }] },
    ...(date ? { effectiveDateTime: date } : {}), valueQuantity: { value, unit: '/min', system: 'http://unitsofmeasure.org', code: '/min' },
  })).body.id as string;
  const ids = (b: Bundle) => (b.entry ?? []).filter((e) => e.search?.mode === 'match').map((e) => e.resource.id as string);
  const link = (b: Bundle, rel: string) => b.link.find((l) => l.relation === rel)?.url;
  /** Every page of a search by its next links, calling `between` after each page. */
  const walk = async (first: string, between?: (page: number) => Promise<void>) => {
    const pages: string[][] = [];
    let res = await call('GET', first);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    for (;;) {
      pages.push(ids(res.body));
      const next = link(res.body, 'next');
      if (!next) break;
      assert.match(next, /[?&]_cursor=/);
      assert.doesNotMatch(next, /[?&]_offset=/);
      await between?.(pages.length);
      res = await call('GET', next);
      assert.equal(res.status, 200, JSON.stringify(res.body));
    }
    return pages;
  };

  before(async () => { s = await testServer(); });
  after(async () => { await s?.close(); });

  it('pages in the default order neither skip nor repeat when matches are created and deleted between pages', async () => {
    const initial: string[] = [];
    for (let i = 0; i < 25; i++) initial.push(await obs('1111-1', `2024-01-${String(1 + (i % 28)).padStart(2, '0')}`, i));
    const added: string[] = [];
    const deletedSeen: string[] = [];
    const deletedUnseen: string[] = [];
    const pages = await walk('Observation?code=1111-1&_count=10', async (page) => {
      if (page !== 1) return;
      added.push(await obs('1111-1', '2024-02-01', 100), await obs('1111-1', '2024-02-02', 101));
      // One already shown and one not yet shown go away.
      deletedSeen.push(initial[3]!);
      deletedUnseen.push(initial[17]!);
      for (const id of [...deletedSeen, ...deletedUnseen]) assert.equal((await call('DELETE', `Observation/${id}`)).status, 204);
    });
    const seen = pages.flat();
    assert.equal(new Set(seen).size, seen.length, 'no match twice');
    const expected = [...initial.filter((id) => !deletedUnseen.includes(id)), ...added];
    assert.deepEqual([...seen].sort(), [...expected].sort(), 'every match that still exists, none skipped');
  });

  it('pages a sort with ties and missing values (nulls last) exactly as one big page orders them', async () => {
    for (const [date, v] of [['2024-03-01', 1], ['2024-03-01', 2], ['2024-03-02', 3], [undefined, 4], ['2024-03-02', 5], [undefined, 6], ['2024-02-28', 7], ['2024-03-01', 8], ['2024-03-03', 9]] as const) {
      await obs('2222-2', date, v);
    }
    for (const sort of ['-date', 'date', 'date,-value-quantity', '-_lastUpdated', '_id']) {
      const whole = ids((await call('GET', `Observation?code=2222-2&_sort=${sort}&_count=100`)).body);
      assert.equal(whole.length, 9);
      const pages = await walk(`Observation?code=2222-2&_sort=${sort}&_count=2`);
      assert.deepEqual(pages.flat(), whole, `_sort=${sort}`);
    }
  });

  it('a page by cursor keeps previous and first links, and its self link is the cursor', async () => {
    const p1 = (await call('GET', 'Observation?code=2222-2&_sort=-date&_count=3')).body as Bundle;
    const p2url = link(p1, 'next')!;
    const p2 = (await call('GET', p2url)).body as Bundle;
    assert.equal(link(p2, 'self'), p2url);
    assert.deepEqual(ids((await call('GET', link(p2, 'previous')!)).body), ids(p1));
    assert.deepEqual(ids((await call('GET', link(p2, 'first')!)).body), ids(p1));
  });

  it('refuses a changed cursor, a cursor of another search, and _cursor with _offset, with a 400 OperationOutcome', async () => {
    const p1 = (await call('GET', 'Observation?code=2222-2&_sort=-date&_count=3')).body as Bundle;
    const next = new URL(link(p1, 'next')!);
    const cursor = next.searchParams.get('_cursor')!;
    const [payload, tag] = cursor.split('.') as [string, string];
    const forged = Buffer.from(JSON.stringify([[0], 1, 3]), 'utf8').toString('base64url');
    const cases = [
      `Observation?code=2222-2&_sort=-date&_count=3&_cursor=${forged}.${tag}`,
      `Observation?code=2222-2&_sort=-date&_count=3&_cursor=${payload}.${tag.slice(0, -2)}AA`,
      `Observation?code=1111-1&_sort=-date&_count=3&_cursor=${cursor}`,
      `Observation?code=2222-2&_sort=date&_count=3&_cursor=${cursor}`,
      `Observation?code=2222-2&_sort=-date&_count=3&_cursor=${cursor}&_offset=3`,
      'Observation?code=2222-2&_sort=-date&_count=3&_cursor=not-a-cursor',
    ];
    for (const rel of cases) {
      const r = await call('GET', rel);
      assert.equal(r.status, 400, rel);
      assert.equal(r.body.resourceType, 'OperationOutcome');
      assert.match(r.body.issue[0].diagnostics, /_cursor/);
    }
    // A different page size is the same search: the cursor still fits.
    assert.equal((await call('GET', `Observation?code=2222-2&_sort=-date&_count=5&_cursor=${cursor}`)).status, 200);
  });

  it('pages the audit trail newest first while each page\'s own read adds to it: none repeated, none skipped', async () => {
    await s.app.audit?.flush();
    const before = ids((await call('GET', 'AuditEvent?_sort=-date&_count=1000')).body);
    assert.ok(before.length > 20, `a trail to page through (${before.length})`);
    await s.app.audit?.flush();
    const pages = await walk('AuditEvent?_sort=-date&_count=7', async () => { await s.app.audit?.flush(); });
    const seen = pages.flat();
    assert.equal(new Set(seen).size, seen.length, 'no AuditEvent twice');
    for (const id of before) assert.ok(seen.includes(id), `AuditEvent/${id} shown`);
  });

  it('fhir-kit-client follows the cursor links to the last page', async () => {
    const client = new Client({ baseUrl: s.base, bearerToken: s.token });
    let page = (await client.search({ resourceType: 'Observation', searchParams: { code: '2222-2', _sort: '-date', _count: '2' } })) as any;
    const values: number[] = [];
    for (;;) {
      values.push(...page.entry.map((e: any) => e.resource.valueQuantity.value));
      const next = client.nextPage({ bundle: page });
      if (!next) break;
      page = await next;
    }
    assert.equal(values.length, 9);
    assert.deepEqual(values.slice(-2).sort(), [4, 6], 'the Observations without a date come last');
  });
});
