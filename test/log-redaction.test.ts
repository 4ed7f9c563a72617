import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { describe, it } from 'node:test';
import { pino } from 'pino';
import request from 'supertest';
import { createApp } from '../src/server.js';
import { redactUrl } from '../src/log-redact.js';
import { systemToken, testConfig } from './helpers.js';

/** A pino logger whose JSON lines are kept in memory. */
function capturingLogger(level: string) {
  const lines: string[] = [];
  const stream = new Writable({ write(chunk, _enc, cb) { lines.push(String(chunk)); cb(); } });
  return { logger: pino({ level, base: { service: 'custos' } }, stream), text: () => lines.join('') };
}

describe('logs hold no search values', () => {
  it('redactUrl keeps the path and parameter names and replaces every value', () => {
    assert.equal(redactUrl('/fhir/Patient?family=Zyzzogeton&identifier=urn:mrn%7CMRN-778899&_count=5'), '/fhir/Patient?family=[redacted]&identifier=[redacted]&_count=[redacted]');
    assert.equal(redactUrl('/fhir/Observation?subject:Patient.name=Smith&code:missing=true'), '/fhir/Observation?subject:Patient.name=[redacted]&code:missing=[redacted]');
    assert.equal(redactUrl('/fhir/Patient/abc-123/_history/2'), '/fhir/Patient/abc-123/_history/2');
    // A bare word in the query is a value too; an unreadable name is not kept.
    assert.equal(redactUrl('/fhir/Patient?Zyzzogeton&%E0%A4%A=x&a%20b=c'), '/fhir/Patient?[redacted]&[redacted]&[redacted]');
  });

  it('the request log (debug) and a 500 name the parameters of the URL, not their values', async () => {
    const config = testConfig({ READ_WORKERS: '0', WRITE_WORKERS: '0' });
    const { logger, text } = capturingLogger('debug');
    const app = await createApp(config, { logger });
    let closed = false;
    try {
      const token = await systemToken(app);
      const auth = (r: request.Test) => r.set('Authorization', `Bearer ${token}`);
      const ok = await auth(request(app.app).get('/fhir/Patient?family=Zyzzogeton&identifier=urn:mrn|MRN-778899'));
      assert.equal(ok.status, 200, ok.text);
      // A real failure: the store is gone under the server, so the search fails with a 500 that is logged.
      await app.store.close();
      closed = true;
      const failed = await auth(request(app.app).get('/fhir/Patient?family=Quetzalcoatlus&birthdate=1975-03-02'));
      assert.equal(failed.status, 500, failed.text);
      assert.equal(failed.body.issue[0].diagnostics, 'Internal server error');
      const logged = text();
      assert.match(logged, /"url":"\/fhir\/Patient\?family=\[redacted\]&identifier=\[redacted\]"/, 'the request log names the parameters');
      assert.match(logged, /"msg":"unhandled error"/);
      assert.match(logged, /"url":"\/fhir\/Patient\?family=\[redacted\]&birthdate=\[redacted\]","status":500/, 'the failed request is logged, redacted');
      for (const secret of ['Zyzzogeton', 'MRN-778899', 'Quetzalcoatlus', '1975-03-02']) assert.ok(!logged.includes(secret), `the log holds ${secret}`);
    } finally {
      // The store is closed already; close the rest.
      if (closed) (app.store as { close(): Promise<void> }).close = async () => {};
      await app.close();
    }
  });
});
