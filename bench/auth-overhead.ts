/**
 * What token checking adds to one request, measured in-process: the bearer-token verification
 * (cached signature check + revocation, grant and client look-ups in auth.db) and the scope
 * decision, per call, for a backend token (system/*.*) and a patient-confined token decision.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import supertest from 'supertest';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT } from 'jose';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/logger.js';
import { createApp } from '../src/server.js';

export interface AuthOverhead {
  verify_token_us: number;
  scope_decision_us: number;
  first_verification_us: number;
  iterations: number;
}

export async function measureAuthOverhead(iterations = 20_000): Promise<AuthOverhead> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'custos-bench-auth-'));
  const config = loadConfig({ DATA_DIR: dataDir, PORT: '0', LOG_LEVEL: 'silent', WRITE_WORKERS: '0', READ_WORKERS: '0', ACCESS_TOKEN_TTL: '3600', LEDGER: 'off' });
  const app = await createApp(config, { logger: createLogger('silent') });
  try {
    const { privateKey, publicKey } = await generateKeyPair('ES384', { extractable: true });
    const jwk = await exportJWK(publicKey);
    const kid = await calculateJwkThumbprint(jwk);
    const scope = 'system/*.*';
    const { client } = app.auth.registry.addClient({ type: 'backend', jwks: { keys: [{ ...jwk, kid, alg: 'ES384', use: 'sig' }] }, scope });
    const tokenUrl = new URL(app.auth.endpoints.token);
    const now = Math.floor(Date.now() / 1000);
    const assertion = await new SignJWT({}).setProtectedHeader({ alg: 'ES384', kid })
      .setIssuer(client.clientId).setSubject(client.clientId).setAudience(tokenUrl.href).setJti(randomUUID()).setIssuedAt(now).setExpirationTime(now + 60)
      .sign(privateKey);
    const res = await supertest(app.app).post(tokenUrl.pathname).set('Host', tokenUrl.host).type('form').send({
      grant_type: 'client_credentials', scope, client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: assertion,
    });
    const token = (res.body as { access_token: string }).access_token;
    if (!token) throw new Error(`no token: ${res.status} ${res.text}`);

    let t0 = process.hrtime.bigint();
    let principal = await app.auth.principalFor(token);
    const first = Number(process.hrtime.bigint() - t0) / 1000;
    for (let i = 0; i < 1000; i++) principal = await app.auth.principalFor(token);
    t0 = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) principal = await app.auth.principalFor(token);
    const verify = Number(process.hrtime.bigint() - t0) / 1000 / iterations;
    t0 = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) app.auth.policy.authorize(principal, { interaction: 'create', resourceType: 'Observation' });
    const decide = Number(process.hrtime.bigint() - t0) / 1000 / iterations;
    return { verify_token_us: round(verify), scope_decision_us: round(decide), first_verification_us: round(first), iterations };
  } finally {
    await app.close();
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
}

const round = (x: number) => Math.round(x * 100) / 100;
