import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadConfig, type Config } from '../src/config.js';
import { createApp, startServer, type App, type RunningServer } from '../src/server.js';
import { createLogger } from '../src/logger.js';

export const FIXTURES = fileURLToPath(new URL('../../shared/fixtures/', import.meta.url));

export function readFixture<T = any>(rel: string): T {
  return JSON.parse(fs.readFileSync(path.join(FIXTURES, rel), 'utf8')) as T;
}

export function tempDir(prefix = 'custos-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function testConfig(env: Record<string, string> = {}): Config {
  return loadConfig({ DATA_DIR: tempDir(), PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'silent', ...env });
}

/** An in-process app for supertest (no listening socket). */
export async function testApp(env: Record<string, string> = {}): Promise<App & { config: Config }> {
  const config = testConfig(env);
  const app = await createApp(config, { logger: createLogger('silent') });
  return { ...app, config };
}

/** A listening server on a free loopback port, for third-party clients. */
export async function testServer(env: Record<string, string> = {}): Promise<RunningServer & { config: Config; base: string }> {
  // BASE_URL (Location headers, links) must name the real port, so pick it before start.
  const config = testConfig({ PORT: String(await freePort()), ...env });
  const running = await startServer(config, { logger: createLogger('silent') });
  return { ...running, config, base: `${running.url}/fhir` };
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
