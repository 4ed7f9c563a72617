/**
 * The server's own sign-in and approval pages, as a browser gets them over real HTTP: they name the
 * app, say each scope in plain words, label every input, keep the username after a wrong password,
 * and carry a CSP that needs no inline style (the stylesheet is its own route).
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { testServer } from './helpers.js';
import { authorizeUrl, CookieJar, jarFetch, newCredentials, pageText, pkcePair, UNUSED_REDIRECT_URI } from './smart-helpers.js';

type Server = Awaited<ReturnType<typeof testServer>>;

interface Page { url: string; status: number; headers: Headers; html: string }

/** Follows redirects within /auth/ to the next page. */
async function follow(jar: CookieJar, url: string, init: RequestInit = {}): Promise<Page> {
  for (let i = 0; i < 10; i++) {
    const res = await jarFetch(jar, url, init);
    if (res.status >= 300 && res.status < 400) {
      await res.arrayBuffer();
      url = new URL(res.headers.get('location')!, url).href;
      init = {};
      continue;
    }
    return { url, status: res.status, headers: res.headers, html: await res.text() };
  }
  throw new Error(`too many redirects from ${url}`);
}

function action(html: string, suffix: string): string {
  const m = new RegExp(`<form\\b[^>]*\\baction="([^"]*/${suffix})"`).exec(html);
  assert.ok(m, `a form posting to .../${suffix}: ${pageText(html)}`);
  return m[1]!;
}

function post(jar: CookieJar, page: Page, suffix: string, form: URLSearchParams): Promise<Page> {
  return follow(jar, new URL(action(page.html, suffix), page.url).href, {
    method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString(),
  });
}

function inputs(html: string): string[] {
  return [...html.matchAll(/<input\b[^>]*>/g)].map((m) => m[0]);
}

/** Every input has an id named by a <label for>, or sits inside a <label>. */
function assertLabelled(html: string): void {
  const labelled = new Set([...html.matchAll(/<label\b[^>]*\bfor="([^"]+)"/g)].map((m) => m[1]!));
  const insideLabels = [...html.matchAll(/<label\b[^>]*>[\s\S]*?<\/label>/g)].map((m) => m[0]).join('\n');
  for (const tag of inputs(html)) {
    if (/\btype="hidden"/.test(tag)) continue;
    const id = /\bid="([^"]+)"/.exec(tag)?.[1];
    assert.ok((id !== undefined && labelled.has(id)) || insideLabels.includes(tag), `input without a label: ${tag}`);
  }
}

function assertAccessiblePage(p: Page): void {
  assert.match(p.html, /<html lang="en">/);
  assert.match(p.html, /<meta name="viewport" content="width=device-width, initial-scale=1">/);
  assert.match(p.html, /<main>/);
  assert.equal(p.html.match(/<h1\b/g)?.length, 1, 'one h1');
  assert.doesNotMatch(p.html, /\son[a-z]+=/i, 'no inline event handlers');
  assert.doesNotMatch(p.html, /<style\b|\bstyle="/, 'no inline style');
  assert.match(p.html, /<link rel="stylesheet" href="\/auth\/assets\/pages\.css">/);
  assertLabelled(p.html);
  const csp = p.headers.get('content-security-policy') ?? '';
  for (const d of ["default-src 'none'", "style-src 'self'", "frame-ancestors 'none'", "base-uri 'none'"]) assert.ok(csp.includes(d), `CSP has ${d}: ${csp}`);
  assert.doesNotMatch(csp, /unsafe-inline/);
  // The form's redirects end at the app, so its origin is a permitted form target.
  assert.match(csp, /form-action 'self' http:\/\/127\.0\.0\.1:9(;|$)/);
}

describe('sign-in and approval pages', () => {
  let server: Server;

  before(async () => {
    server = await testServer();
  });
  after(async () => server?.close());

  async function start(o: { name?: string; scope: string; practitioner?: boolean }) {
    const registry = server.app.auth.registry;
    const { client } = registry.addClient({ type: 'public', ...(o.name ? { name: o.name } : {}), redirectUris: [UNUSED_REDIRECT_URI], scope: o.scope });
    const creds = newCredentials(o.practitioner ? 'dr' : 'pat');
    await registry.addUser({ ...creds, fhirUser: o.practitioner ? 'Practitioner/pr1' : 'Patient/p1' });
    const jar = new CookieJar();
    const url = authorizeUrl(server.app.auth.endpoints.authorize, { clientId: client.clientId, redirectUri: UNUSED_REDIRECT_URI, scope: o.scope, aud: server.base, codeChallenge: pkcePair().challenge });
    const login = await follow(jar, url);
    return { clientId: client.clientId, creds, jar, login };
  }

  async function approvalPage(s: Awaited<ReturnType<typeof start>>): Promise<Page> {
    const page = await post(s.jar, s.login, 'login', new URLSearchParams({ username: s.creds.username, password: s.creds.password }));
    assert.equal(page.status, 200, pageText(page.html));
    assert.ok(action(page.html, 'confirm'));
    return page;
  }

  it('the approval page names the app by its registered name, never by its client id', async () => {
    const s = await start({ name: 'Heart Diary', scope: 'launch/patient patient/*.rs' });
    assert.equal(s.login.status, 200);
    assert.match(pageText(s.login.html), /Sign in to let Heart Diary use health records/);
    assert.ok(!s.login.html.includes(s.clientId), 'the login page does not show the client id');
    const page = await approvalPage(s);
    assert.match(pageText(page.html), /Heart Diary asks to use health records/);
    assert.ok(!page.html.includes(s.clientId), 'the approval page does not show the client id');
  });

  it('an app without a name is said to be so, with its client id as secondary text', async () => {
    const s = await start({ scope: 'launch/patient patient/Observation.rs' });
    const page = await approvalPage(s);
    assert.match(page.html, /<strong>An app without a registered name<\/strong> <small>\(client id [^)]+\)<\/small>/);
    assert.ok(page.html.includes(`<small>(client id ${s.clientId})</small>`));
  });

  it('each requested scope is said in plain words, the raw scope only as secondary text', async () => {
    const expected: Record<string, string> = {
      'launch/patient': 'Know which patient record you are working with',
      openid: 'Know who you are (confirm that you signed in)',
      fhirUser: 'Know who you are (your user and FHIR record)',
      offline_access: 'Stay signed in when you are away (a refresh token)',
      'patient/*.rs': 'Read and search all of your health records',
      'patient/Consent.cruds': 'Create, read, change and delete your sharing permissions (Consents)',
      'patient/Observation.rs?category=vital-signs': 'Read and search your observations of category vital-signs',
      'patient/AuditEvent.rs': 'Read and search the record of who accessed your data',
      'patient/MedicationRequest.rs': 'Read and search your prescriptions (medication requests)',
      'patient/CarePlan.r': 'Read your care plans',
    };
    // Two requests: the server drops scopes covered by another one asked (patient/*.rs covers the granular ones).
    for (const scope of [
      'launch/patient openid fhirUser offline_access patient/*.rs patient/Consent.cruds',
      'launch/patient patient/Observation.rs?category=vital-signs patient/AuditEvent.rs patient/MedicationRequest.rs patient/CarePlan.r',
    ]) {
      const s = await start({ name: 'Portal', scope });
      const page = await approvalPage(s);
      const items = [...page.html.matchAll(/<input type="checkbox" id="([^"]+)" name="scope" value="([^"]*)" checked><label for="([^"]+)">([^<]*)<small[^>]*>([^<]*)<\/small><\/label>/g)];
      assert.deepEqual(items.map((m) => m[2]), scope.split(' '), pageText(page.html));
      for (const [, id, value, forId, words, raw] of items) {
        assert.equal(forId, id);
        assert.equal(words!.trim(), expected[value!], `words for ${value}`);
        assert.equal(raw, value);
      }
      assert.match(page.html, /<fieldset><legend>This app asks to:<\/legend>/);
      assert.match(page.html, /<button type="submit" name="decision" value="approve">Allow what is ticked<\/button>/);
      assert.match(page.html, /<button type="submit"[^>]*>Deny and go back to the app<\/button>/);
      assertAccessiblePage(page);
    }
  });

  it('a practitioner reads user scopes as the records they may see, and the patient picker is labelled', async () => {
    const s = await start({ name: 'Clinic View', scope: 'launch/patient user/*.rs', practitioner: true });
    const page = await approvalPage(s);
    assert.match(pageText(page.html), /Read and search the records you are allowed to see/);
    assert.match(page.html, /<label for="patient">/);
    assertAccessiblePage(page);
  });

  it('the login page labels its inputs and keeps the username after a wrong password', async () => {
    const s = await start({ name: 'Heart Diary', scope: 'launch/patient patient/*.rs' });
    assertAccessiblePage(s.login);
    assert.ok(inputs(s.login.html).some((t) => /name="username"/.test(t) && /autocomplete="username"/.test(t)));
    assert.ok(inputs(s.login.html).some((t) => /name="password"/.test(t) && /autocomplete="current-password"/.test(t)));
    const wrong = await post(s.jar, s.login, 'login', new URLSearchParams({ username: s.creds.username, password: 'not-the-password' }));
    assert.equal(wrong.status, 401);
    assert.match(pageText(wrong.html), /Unknown username or wrong password/);
    const username = inputs(wrong.html).find((t) => /name="username"/.test(t))!;
    assert.match(username, new RegExp(`value="${s.creds.username}"`));
    const password = inputs(wrong.html).find((t) => /name="password"/.test(t))!;
    assert.doesNotMatch(password, /value=/, 'the password is never sent back');
    assert.match(password, /autofocus/);
    assertAccessiblePage(wrong);
    // What was typed is escaped, not markup.
    const odd = await post(s.jar, wrong, 'login', new URLSearchParams({ username: '"><b>x', password: 'x' }));
    assert.ok(odd.html.includes('value="&quot;&gt;&lt;b&gt;x"'), odd.html);
  });

  it('the stylesheet is served with a CSS type and a cache lifetime', async () => {
    const res = await fetch(`${server.url}/auth/assets/pages.css`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^text\/css/);
    assert.match(res.headers.get('cache-control') ?? '', /max-age=\d+/);
    const css = await res.text();
    assert.match(css, /:focus-visible\{outline:/);
  });
});
