import os from 'node:os';
import path from 'node:path';
import type { LedgerConfig } from './ledger/service.js';

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
  /** Worker threads that validate and index writes beside the event loop (0 = inline). */
  writeWorkers: number;
  /** Worker threads that run searches on their own read connections (0 = on the event loop). */
  readWorkers: number;
  /** Ledger anchoring (see src/ledger): embedded anvil by default, an external RPC, or off. */
  ledger: LedgerConfig;
  auth: {
    /** Lifetime of access tokens in seconds. */
    accessTokenTtl: number;
    /** A new token signing key is generated at start when the newest is this many days old. */
    signingKeyRotationDays: number;
    /** Hosts whose client jwks_uri may be on loopback/private addresses (JWKS_PRIVATE_HOSTS, comma-separated). */
    jwksPrivateHosts: string[];
  };
}

function intFrom(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got "${raw}"`);
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

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const port = intFrom(env, 'PORT', 8080);
  const host = env.HOST || '127.0.0.1';
  const urlHost = host.includes(':') ? `[${host}]` : host;
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
    writeWorkers: intFrom(env, 'WRITE_WORKERS', Math.max(1, Math.min(4, os.availableParallelism() - 1))),
    readWorkers: intFrom(env, 'READ_WORKERS', Math.min(4, os.availableParallelism())),
    ledger: ledgerFrom(env),
    auth: {
      accessTokenTtl: Math.max(30, intFrom(env, 'ACCESS_TOKEN_TTL', 300)),
      signingKeyRotationDays: Math.max(1, intFrom(env, 'SIGNING_KEY_ROTATION_DAYS', 30)),
      jwksPrivateHosts: (env.JWKS_PRIVATE_HOSTS ?? '').split(',').map((h) => h.trim().replace(/^\[|\]$/g, '')).filter(Boolean),
    },
  };
}
