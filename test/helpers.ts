import { spawn } from 'node:child_process';
import { randomUUID, type webcrypto } from 'node:crypto';
type CryptoKey = webcrypto.CryptoKey;
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig, type Config } from '../src/config.js';
import { createApp, startServer, type App, type RunningServer } from '../src/server.js';
import { createLogger } from '../src/logger.js';
import express from 'express';
import { calculateJwkThumbprint, exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';
import supertest from 'supertest';

export const FIXTURES = fileURLToPath(new URL('../../shared/fixtures/', import.meta.url));

/** Whether ../shared/fixtures (real third-party FHIR data) is beside the project, as CI has it; a user's clone has not. */
export const HAS_FIXTURES = fs.existsSync(FIXTURES);
/** Test options for tests that read the fixtures: they run where the fixtures are and say why they do not elsewhere. */
export const WITH_FIXTURES: { skip?: string } = HAS_FIXTURES ? {} : { skip: 'needs ../shared/fixtures beside the project (real third-party FHIR data; CI has it)' };

export function readFixture<T = any>(rel: string): T {
  return JSON.parse(fs.readFileSync(path.join(FIXTURES, rel), 'utf8')) as T;
}

export function tempDir(prefix = 'custos-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function testConfig(env: Record<string, string> = {}): Config {
  return loadConfig({ DATA_DIR: tempDir(), PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'silent', ACCESS_TOKEN_TTL: '3600', LEDGER: 'off', ...env });
}

/**
 * An in-process app for supertest (no listening socket). Unless `auth: 'none'`, requests without
 * an Authorization header carry a system/*.* token that a registered backend client got from the
 * token endpoint, so protocol tests need not repeat it; `raw` is the app without that default.
 */
export async function testApp(env: Record<string, string> = {}, opts: { auth?: 'system' | 'none' } = {}): Promise<App & { config: Config; raw: express.Express; token?: string }> {
  const config = testConfig(env);
  const built = await createApp(config, { logger: createLogger('silent') });
  if (opts.auth === 'none') return { ...built, config, raw: built.app };
  const token = await systemToken(built);
  const app = express();
  app.use((req, _res, next) => {
    if (req.url.startsWith('/fhir')) req.headers.authorization ??= `Bearer ${token}`;
    next();
  });
  app.use(built.app);
  return { ...built, app, raw: built.app, config, token };
}

/** A listening server on a free loopback port, for third-party clients; `token` is a system/*.* token. */
export async function testServer(env: Record<string, string> = {}): Promise<RunningServer & { config: Config; base: string; token: string }> {
  // BASE_URL (Location headers, links) must name the real port, so pick it before start.
  const config = testConfig({ PORT: String(await freePort()), ...env });
  const running = await startServer(config, { logger: createLogger('silent') });
  const token = await fetchSystemToken(running.app.auth.endpoints.token, (jwks) => running.app.auth.registry.addClient({ type: 'backend', jwks, scope: 'system/*.*', trusted: true }).client.clientId);
  return { ...running, config, base: `${running.url}/fhir`, token };
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export const FHIR_JSON = 'application/fhir+json';

/** A Backend Services key pair (ES384) and its public JWKS, as a device or EHR backend would hold. */
export async function backendKeyPair(alg: 'ES384' | 'RS384' = 'ES384'): Promise<{ privateKey: CryptoKey; jwks: { keys: JWK[] }; kid: string; alg: string }> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  const jwk = await exportJWK(publicKey);
  const kid = await calculateJwkThumbprint(jwk);
  return { privateKey: privateKey as CryptoKey, jwks: { keys: [{ ...jwk, kid, alg, use: 'sig' }] }, kid, alg };
}

/** A SMART Backend Services client assertion (private_key_jwt). */
export async function clientAssertion(k: { privateKey: CryptoKey; kid: string; alg: string }, clientId: string, tokenEndpoint: string, over: { jti?: string; expInS?: number; aud?: string } = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({})
    .setProtectedHeader({ alg: k.alg, kid: k.kid, typ: 'JWT' })
    .setIssuer(clientId).setSubject(clientId).setAudience(over.aud ?? tokenEndpoint)
    .setJti(over.jti ?? randomUUID()).setIssuedAt(now).setExpirationTime(now + (over.expInS ?? 60))
    .sign(k.privateKey);
}

export function tokenForm(assertion: string, scope: string): Record<string, string> {
  return {
    grant_type: 'client_credentials', scope,
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer', client_assertion: assertion,
  };
}

/** Registers a backend client in a built app and gets a token through the real token endpoint (in-process). */
export async function systemToken(app: App, scope = 'system/*.*'): Promise<string> {
  const key = await backendKeyPair();
  const { client } = app.auth.registry.addClient({ type: 'backend', jwks: key.jwks, scope, name: 'test backend', trusted: true });
  const tokenUrl = new URL(app.auth.endpoints.token);
  const res = await supertest((app as { raw?: express.Express }).raw ?? app.app).post(tokenUrl.pathname).set('Host', tokenUrl.host).type('form')
    .send(tokenForm(await clientAssertion(key, client.clientId, tokenUrl.href), scope));
  if (res.status !== 200) throw new Error(`token request failed: ${res.status} ${res.text}`);
  return (res.body as { access_token: string }).access_token;
}

/** Gets a token from a listening server (real HTTP) for a backend client registered in its registry. */
export async function fetchSystemToken(tokenEndpoint: string, register: (jwks: { keys: JWK[] }) => string | Promise<string>, scope = 'system/*.*'): Promise<string> {
  const key = await backendKeyPair();
  const clientId = await register(key.jwks);
  const res = await fetch(tokenEndpoint, {
    method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(tokenForm(await clientAssertion(key, clientId, tokenEndpoint), scope)),
  });
  if (res.status !== 200) throw new Error(`token request failed: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { access_token: string }).access_token;
}

export interface CliRun { code: number | null; stdout: string; stderr: string }

/** Runs the real `custos` CLI from source as a separate process (as an operator would), in the repo root. */
export function runCli(argv: string[], env: Record<string, string> = {}): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...argv], {
      cwd: fileURLToPath(new URL('..', import.meta.url)), env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}
