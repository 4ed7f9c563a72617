import os from 'node:os';
import path from 'node:path';
import type { LedgerConfig } from './ledger/service.js';
import { DEFAULT_JSON_LIMITS, type JsonLimits } from './fhir/json-limits.js';

/** All configuration, read once from the environment (12-factor) and passed down. */
export interface Config {
  port: number;
  host: string;
  dataDir: string;
  baseUrl: string;
  logLevel: string;
  /** Base64 32-byte master key; when unset, DATA_DIR/keys/master.key is used (created on first start). */
  masterKey?: string;
  search: { defaultCount: number; maxCount: number };
  /** Largest accepted request body. */
  maxBodyBytes: number;
  /** Items per array, JSON values per resource, entries per batch/transaction Bundle (413 beyond). */
  jsonLimits: JsonLimits;
  /** Worker threads that validate and index writes beside the event loop (0 = inline). */
  writeWorkers: number;
  /** Worker threads that run searches on their own read connections (0 = on the event loop). */
  readWorkers: number;
  /** Ledger anchoring (see src/ledger): embedded anvil by default, an external RPC, or off. */
  ledger: LedgerConfig;
  /** The audit trail (see src/audit): on unless AUDIT=off; reads are written within AUDIT_FLUSH_MS. */
  audit: { enabled: boolean; flushMs: number };
  /** Patient consent (see src/consent): the chain registry of signed Consents, the base policy, break-the-glass. */
  consent: ConsentConfig;
  /** METRICS_TOKEN: when set, /metrics needs it as a bearer token from every client; unset, /metrics answers loopback clients only. */
  metrics: { token?: string };
  auth: {
    /** Lifetime of access tokens in seconds. */
    accessTokenTtl: number;
    /** A new token signing key is generated at start when the newest is this many days old. */
    signingKeyRotationDays: number;
    /** Hosts whose client jwks_uri may be on loopback/private addresses (JWKS_PRIVATE_HOSTS, comma-separated). */
    jwksPrivateHosts: string[];
    /** TOKEN_CLOCK_SKEW_SECONDS: how far in the future an access token's iat may be. */
    clockSkewSeconds: number;
    login: LoginThrottleConfig;
  };
  /** The patient portal at /portal/: where its build is (PORTAL_DIR, default dist/web) and the chain RPC URL browsers use (PORTAL_CHAIN_RPC_URL; default the embedded node's). */
  portal: { dir?: string; chainRpcUrl?: string };
  /** Limits on how long a client may take to send a request, and how long an idle connection stays open (ms). */
  http: { requestTimeoutMs: number; headersTimeoutMs: number; keepAliveTimeoutMs: number };
}

/** Throttling of the login form (see src/smart-auth/login-throttle.ts). */
export interface LoginThrottleConfig {
  /** LOGIN_MAX_FAILURES: failed logins of one username within the window that lock it. */
  maxFailures: number;
  /** LOGIN_ADDRESS_MAX_FAILURES: failed logins from one network address within the window that lock the address. */
  addressMaxFailures: number;
  /** LOGIN_WINDOW_SECONDS: the window in which failures count. */
  windowSeconds: number;
  /** LOGIN_LOCK_SECONDS: the first lock; each further lock of the same username or address doubles. */
  lockSeconds: number;
  /** LOGIN_LOCK_MAX_SECONDS: the longest lock. */
  lockMaxSeconds: number;
  /** LOGIN_QUEUE: password checks waiting for the hashing thread beyond which a login is refused with 429. */
  queue: number;
}

export interface ConsentConfig {
  /**
   * CONSENT_CHAIN: 'required' = a Consent grants only while its version's hash is active in the
   * ConsentRegistry contract (signed by the patient's key); 'off' = Consents grant on their FHIR
   * status alone. Default: 'required' when the ledger is on, 'off' with LEDGER=off.
   */
  chain: 'required' | 'off';
  /** CONSENT_SYNC_MS: the chain view is at most this old when a decision is made (it reads new events first). */
  syncMs: number;
  /** CONSENT_RECOVERY_DAYS: delay before an operator key recovery takes effect (contract deployment parameter). */
  recoveryDays: number;
  /** CONSENT_CONTRACT: ConsentRegistry address (required on an external chain; the embedded node deploys its own). */
  contract?: string;
  /** CONSENT_KEY / CONSENT_KEY_FILE: the relayer's key on an external chain (default: the ledger's key). */
  privateKey?: string;
  keyFile?: string;
  /** CONSENT_BASE: what applies to a patient's data with no Consent deciding ('deny' = only the patient and consented actors). */
  base: 'deny' | 'permit';
  /** BREAK_GLASS_MINUTES: how long an emergency (break-the-glass) access lasts. */
  breakGlassMinutes: number;
}

function intFrom(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got "${raw}"`);
  return n;
}

function positiveIntFrom(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const n = intFrom(env, name, fallback);
  if (n < 1) throw new Error(`${name} must be at least 1, got "${env[name]}"`);
  return n;
}

function ledgerFrom(env: NodeJS.ProcessEnv): LedgerConfig {
  const off = /^(off|false|0|no)$/i.test(env.LEDGER ?? '');
  const chainId = env.LEDGER_CHAIN_ID ? Number(env.LEDGER_CHAIN_ID) : undefined;
  if (chainId !== undefined && (!Number.isSafeInteger(chainId) || chainId <= 0)) throw new Error(`LEDGER_CHAIN_ID must be a positive integer, got "${env.LEDGER_CHAIN_ID}"`);
  return {
    mode: off ? 'off' : env.LEDGER_RPC_URL ? 'external' : 'embedded',
    rpcUrl: env.LEDGER_RPC_URL || undefined,
    privateKey: env.LEDGER_KEY || undefined,
    keyFile: env.LEDGER_KEY_FILE || undefined,
    contract: env.LEDGER_CONTRACT || undefined,
    chainId,
    nodePort: intFrom(env, 'LEDGER_NODE_PORT', 0),
    batchSize: Math.max(1, intFrom(env, 'LEDGER_BATCH_SIZE', 10_000)),
    batchMs: Math.max(10, intFrom(env, 'LEDGER_BATCH_MS', 2000)),
    confirmations: Math.max(1, intFrom(env, 'LEDGER_CONFIRMATIONS', 1)),
  };
}

function consentFrom(env: NodeJS.ProcessEnv, ledger: LedgerConfig): ConsentConfig {
  const rawChain = (env.CONSENT_CHAIN ?? '').trim().toLowerCase();
  if (rawChain !== '' && rawChain !== 'required' && rawChain !== 'off') throw new Error(`CONSENT_CHAIN must be "required" or "off", got "${env.CONSENT_CHAIN}"`);
  const chain: ConsentConfig['chain'] = rawChain === '' ? (ledger.mode === 'off' ? 'off' : 'required') : rawChain;
  if (chain === 'required' && ledger.mode === 'off') {
    throw new Error('CONSENT_CHAIN=required needs the ledger\'s chain, but LEDGER=off: turn the ledger on (embedded by default, or LEDGER_RPC_URL), '
      + 'or set CONSENT_CHAIN=off (Consents then grant on their FHIR status alone, without the patient\'s signature)');
  }
  const contract = env.CONSENT_CONTRACT?.trim() || undefined;
  if (contract !== undefined && !/^0x[0-9a-fA-F]{40}$/.test(contract)) throw new Error(`CONSENT_CONTRACT must be a 0x-prefixed 20-byte hex address, got "${contract}"`);
  if (chain === 'required' && ledger.mode === 'external' && !contract) {
    throw new Error('CONSENT_CHAIN=required on an external chain (LEDGER_RPC_URL) needs CONSENT_CONTRACT, the address of a deployed ConsentRegistry '
      + '(deploy one with "custos consent deploy"), or CONSENT_CHAIN=off');
  }
  const rawDays = env.CONSENT_RECOVERY_DAYS;
  const recoveryDays = rawDays === undefined || rawDays === '' ? 7 : Number(rawDays);
  if (!Number.isFinite(recoveryDays) || recoveryDays < 0 || recoveryDays > 3650) throw new Error(`CONSENT_RECOVERY_DAYS must be a number of days between 0 and 3650, got "${rawDays}"`);
  const rawBase = (env.CONSENT_BASE ?? '').trim().toLowerCase();
  if (rawBase !== '' && rawBase !== 'deny' && rawBase !== 'permit') throw new Error(`CONSENT_BASE must be "deny" or "permit", got "${env.CONSENT_BASE}"`);
  const breakGlassMinutes = intFrom(env, 'BREAK_GLASS_MINUTES', 60);
  if (breakGlassMinutes < 1) throw new Error(`BREAK_GLASS_MINUTES must be at least 1, got "${env.BREAK_GLASS_MINUTES}"`);
  return {
    chain,
    syncMs: intFrom(env, 'CONSENT_SYNC_MS', 1000),
    recoveryDays,
    contract,
    privateKey: env.CONSENT_KEY || undefined,
    keyFile: env.CONSENT_KEY_FILE || undefined,
    base: rawBase === 'permit' ? 'permit' : 'deny',
    breakGlassMinutes,
  };
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const port = intFrom(env, 'PORT', 8080);
  const host = env.HOST || '127.0.0.1';
  const urlHost = host.includes(':') ? `[${host}]` : host;
  const ledger = ledgerFrom(env);
  return {
    port,
    host,
    dataDir: path.resolve(env.DATA_DIR || './data'),
    baseUrl: (env.BASE_URL || `http://${urlHost}:${port}/fhir`).replace(/\/+$/, ''),
    logLevel: env.LOG_LEVEL || 'info',
    masterKey: env.CUSTOS_MASTER_KEY || undefined,
    search: {
      defaultCount: intFrom(env, 'SEARCH_DEFAULT_COUNT', 20),
      maxCount: intFrom(env, 'SEARCH_MAX_COUNT', 1000),
    },
    maxBodyBytes: intFrom(env, 'MAX_BODY_BYTES', 16 * 1024 * 1024),
    jsonLimits: {
      maxArrayLength: positiveIntFrom(env, 'MAX_ARRAY_LENGTH', DEFAULT_JSON_LIMITS.maxArrayLength),
      maxElements: positiveIntFrom(env, 'MAX_ELEMENTS', DEFAULT_JSON_LIMITS.maxElements),
      maxBundleEntries: positiveIntFrom(env, 'MAX_BUNDLE_ENTRIES', DEFAULT_JSON_LIMITS.maxBundleEntries),
    },
    audit: { enabled: auditEnabled(env.AUDIT), flushMs: Math.max(1, intFrom(env, 'AUDIT_FLUSH_MS', 500)) },
    writeWorkers: intFrom(env, 'WRITE_WORKERS', Math.max(1, Math.min(4, os.availableParallelism() - 1))),
    readWorkers: intFrom(env, 'READ_WORKERS', Math.min(4, os.availableParallelism())),
    ledger,
    consent: consentFrom(env, ledger),
    metrics: metricsFrom(env),
    auth: {
      accessTokenTtl: Math.max(30, intFrom(env, 'ACCESS_TOKEN_TTL', 300)),
      signingKeyRotationDays: Math.max(1, intFrom(env, 'SIGNING_KEY_ROTATION_DAYS', 30)),
      jwksPrivateHosts: (env.JWKS_PRIVATE_HOSTS ?? '').split(',').map((h) => h.trim().replace(/^\[|\]$/g, '')).filter(Boolean),
      clockSkewSeconds: intFrom(env, 'TOKEN_CLOCK_SKEW_SECONDS', 60),
      login: loginFrom(env),
    },
    http: httpFrom(env),
    portal: portalFrom(env),
  };
}

function portalFrom(env: NodeJS.ProcessEnv): Config['portal'] {
  const rpc = env.PORTAL_CHAIN_RPC_URL?.trim();
  if (rpc) {
    let u: URL;
    try { u = new URL(rpc); } catch { throw new Error(`PORTAL_CHAIN_RPC_URL must be an http(s) URL, got "${rpc}"`); }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`PORTAL_CHAIN_RPC_URL must be an http(s) URL, got "${rpc}"`);
  }
  return { ...(env.PORTAL_DIR ? { dir: path.resolve(env.PORTAL_DIR) } : {}), ...(rpc ? { chainRpcUrl: rpc } : {}) };
}

function metricsFrom(env: NodeJS.ProcessEnv): Config['metrics'] {
  const token = env.METRICS_TOKEN;
  if (token === undefined || token === '') return {};
  if (token.length < 16 || !/^[\x21-\x7e]+$/.test(token)) throw new Error('METRICS_TOKEN must be at least 16 printable characters without spaces (e.g. openssl rand -hex 32)');
  return { token };
}

function loginFrom(env: NodeJS.ProcessEnv): LoginThrottleConfig {
  const atLeast1 = (name: string, fallback: number) => {
    const n = intFrom(env, name, fallback);
    if (n < 1) throw new Error(`${name} must be at least 1, got "${env[name]}"`);
    return n;
  };
  const lockSeconds = atLeast1('LOGIN_LOCK_SECONDS', 60);
  return {
    maxFailures: atLeast1('LOGIN_MAX_FAILURES', 5),
    addressMaxFailures: atLeast1('LOGIN_ADDRESS_MAX_FAILURES', 20),
    windowSeconds: atLeast1('LOGIN_WINDOW_SECONDS', 900),
    lockSeconds,
    lockMaxSeconds: Math.max(lockSeconds, intFrom(env, 'LOGIN_LOCK_MAX_SECONDS', 3600)),
    queue: intFrom(env, 'LOGIN_QUEUE', 16),
  };
}

function httpFrom(env: NodeJS.ProcessEnv): Config['http'] {
  const requestTimeout = intFrom(env, 'REQUEST_TIMEOUT', 30);
  if (requestTimeout < 1) throw new Error(`REQUEST_TIMEOUT must be at least 1 (seconds), got "${env.REQUEST_TIMEOUT}"`);
  // Node refuses a headers timeout longer than the request timeout.
  const headersTimeout = Math.min(requestTimeout, Math.max(1, intFrom(env, 'HEADERS_TIMEOUT', 20)));
  return { requestTimeoutMs: requestTimeout * 1000, headersTimeoutMs: headersTimeout * 1000, keepAliveTimeoutMs: intFrom(env, 'KEEP_ALIVE_TIMEOUT', 65) * 1000 };
}

/** AUDIT: on (the default) or off; anything else is a mistake worth stopping for. */
function auditEnabled(raw: string | undefined): boolean {
  const v = (raw ?? '').trim().toLowerCase();
  if (v === '' || v === 'on' || v === 'true' || v === '1' || v === 'yes') return true;
  if (v === 'off' || v === 'false' || v === '0' || v === 'no') return false;
  throw new Error(`AUDIT must be "on" or "off", got "${raw}"`);
}
