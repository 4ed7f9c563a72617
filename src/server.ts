import { createHmac } from 'node:crypto';
import express from 'express';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type { Config } from './config.js';
import { FhirError, FhirRouter, fhirHttpRouter, fromWorkerFailure, InlinePreparer, loadDefinitions, sendOutcome, WorkerPreparer, type SearchArgs, type SearchReply } from './fhir/index.js';
import { WorkerPool } from './workers.js';
import { createLogger, type Logger } from './logger.js';
import { redactUrl } from './log-redact.js';
import { loadMasterKeys, SqliteStore, WriterTurns, type Store } from './store/index.js';
import { SmartAuth } from './smart-auth/index.js';
import { LedgerService, ledgerOperations } from './ledger/index.js';
import { consentChainOperations, openConsentChain, type ConsentChainView } from './consent/index.js';
import { consentAccess, type ConsentAccess } from './consent/consent-access.js';
import { accessReportOperation, AuditRecorder, AuditWriterThread, securityFacts } from './audit/index.js';
import { Blinder } from './store/index.js';
import { opsEndpoints } from './ops/index.js';
import { defaultPortalDir, ensurePortalClient, PORTAL_SCOPE, portalRoutes } from './portal/index.js';

export interface App {
  app: express.Express;
  store: Store;
  router: FhirRouter;
  auth: SmartAuth;
  ledger: LedgerService;
  /** The chain's view of signed Consents (CHAIN_OFF when CONSENT_CHAIN=off). */
  consentChain: ConsentChainView;
  /** The consent decision (SMART scopes ∩ Consent ∩ device binding) and its operations. */
  consent: ConsentAccess;
  /** The audit trail (undefined with AUDIT=off); `flush()` resolves once every AuditEvent so far is durable. */
  audit?: AuditRecorder;
  logger: Logger;
  /** The patient portal's own public client (registered on the first start). */
  portalClientId: string;
  close(): Promise<void>;
}

/** Wires config -> keys -> store -> FHIR router -> express app. */
export async function createApp(config: Config, deps: { logger?: Logger } = {}): Promise<App> {
  const logger = deps.logger ?? createLogger(config.logLevel);
  loadDefinitions();
  fs.mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  const keys = loadMasterKeys(config.dataDir, config.masterKey);
  const file = path.join(config.dataDir, 'custos.db');
  // The audit writer thread writes on a second connection; turns keep it from stalling the event loop.
  const turns = config.audit.enabled ? new WriterTurns() : undefined;
  const store = SqliteStore.open({ file, keys, ...(turns ? { turns: { shared: turns, as: 'server' as const } } : {}) });
  if (store.upgraded) logger.info(store.upgraded, 'database upgraded to the current schema version (clear :text index rows blinded)');

  const preparer = config.writeWorkers > 0 ? new WorkerPreparer(keys.indexKey, config.writeWorkers, logger) : new InlinePreparer(keys.indexKey);
  const readers = config.readWorkers > 0
    ? new WorkerPool<SearchArgs, SearchReply>({
      name: 'search', entry: new URL('./fhir/read-worker.js', import.meta.url), workerData: { file, ...keys }, size: config.readWorkers, logger, toError: fromWorkerFailure,
    })
    : undefined;
  const auth = await SmartAuth.create({
    dataDir: config.dataDir, fhirBase: config.baseUrl, masterKeys: keys, logger,
    accessTokenTtl: config.auth.accessTokenTtl, signingKeyRotationDays: config.auth.signingKeyRotationDays, jwksPrivateHosts: config.auth.jwksPrivateHosts,
    clockSkewSeconds: config.auth.clockSkewSeconds, login: config.auth.login,
    patientExists: async (id) => { const v = await store.read('Patient', id); return !!v && !v.deleted; },
  });
  const ledger = await LedgerService.start({ config: config.ledger, dataDir: config.dataDir, store, logger, allowOrigin: new URL(config.baseUrl).origin });
  const consent = await openConsentChain({ config: config.consent, chain: ledger.chainAccess(), dataDir: config.dataDir, indexKey: keys.indexKey, logger })
    .catch(async (err: unknown) => { await ledger.stop(); throw err; });
  const ledgerOps = ledgerOperations(ledger, store);
  const consentOps = consentChainOperations(consent.view, consent.client, store, { fund: consent.fund, baseUrl: config.baseUrl, logger });
  const access = consentAccess({
    store, baseUrl: config.baseUrl, chain: consent.view, base: config.consent.base, breakGlassMinutes: config.consent.breakGlassMinutes,
    authDb: auth.db, kek: keys.kek, users: auth.registry, logger,
  });
  const blinder = new Blinder(keys.indexKey);
  const auditThread = config.audit.enabled
    ? await AuditWriterThread.start({ file, kek: keys.kek, indexKey: keys.indexKey, observer: config.baseUrl, flushMs: config.audit.flushMs, ...(turns ? { turns: turns.buffer } : {}) }, logger)
    : undefined;
  if (config.audit.enabled && !auditThread) logger.warn('audit writer thread did not start: AuditEvents of reads are written on the main thread');
  const audit = config.audit.enabled
    ? new AuditRecorder({ store, blinder, flushMs: config.audit.flushMs, observer: config.baseUrl, logger, thread: auditThread })
    : undefined;
  if (audit) auth.onSecurityEvent = (e) => audit.later(securityFacts(e));
  const router = new FhirRouter({
    store, baseUrl: config.baseUrl, search: config.search, policy: access.policy, security: auth.capabilitySecurity(), preparer, advise: access.advise, audit,
    operations: { instance: { ...ledgerOps.instance, ...consentOps.instance, ...access.operations.instance, '$access-report': accessReportOperation(store, audit !== undefined, (id) => auth.registry.getClient(id)?.name) }, system: ledgerOps.system },
    searcher: readers ? (args) => readers.run(args) : undefined,
    jsonLimits: config.jsonLimits,
    // Cursors stay valid across restarts and between the threads that serve searches.
    cursorSecret: createHmac('sha256', keys.indexKey).update('custos/search-cursor').digest('base64url'),
  });

  const ops = opsEndpoints({ store, ledger, ...(audit ? { audit } : {}), consentView: consent.view, metricsToken: config.metrics.token, logger });

  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.use(ops.measure);
  const debug = logger.isLevelEnabled('debug');
  app.use((req, res, next) => {
    const start = process.hrtime.bigint();
    res.on('finish', () => {
      // An unready /readyz is an answer, not a failure (ops logs each change of readiness once).
      if (!debug && (res.statusCode < 500 || req.path === '/readyz')) return;
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      const entry = { method: req.method, url: redactUrl(req.originalUrl), status: res.statusCode, ms: Math.round(ms * 10) / 10 };
      if (res.statusCode >= 500) logger.warn(entry, 'request failed');
      else logger.debug(entry, 'request');
    });
    next();
  });
  app.use(ops.routes);
  app.use('/fhir', corsForApps);
  app.get('/fhir/.well-known/smart-configuration', (_req, res) => { res.json(auth.smartConfiguration()); });
  app.get('/auth/assets/pages.css', auth.pageStyle());
  app.use('/auth/interaction', auth.interactions());
  app.post('/auth/token', auth.publicRefresh());
  app.use('/auth', auth.oauth());
  // The browser asks the chain itself (it trusts nobody else for proofs): the embedded node, or the
  // public RPC an operator names for an external chain (LEDGER_RPC_URL may carry a provider's key).
  const portalRpc = config.portal.chainRpcUrl ?? ledger.status().rpcUrl;
  const portalClient = ensurePortalClient(auth.registry, config.baseUrl);
  app.use('/portal', portalRoutes({
    dir: config.portal.dir ?? defaultPortalDir(), clientId: portalClient.clientId, fhirBase: config.baseUrl, scope: PORTAL_SCOPE,
    ...(portalRpc ? { chainRpcUrl: portalRpc } : {}),
  }));
  app.use('/fhir', auth.authenticate(), fhirHttpRouter(router, { maxBodyBytes: config.maxBodyBytes, jsonLimits: config.jsonLimits, logger }));
  app.use((req, res) => {
    sendOutcome(res, new FhirError(404, 'not-found', `No route for ${req.method} ${req.path.slice(0, 200)}; the FHIR base is /fhir`));
  });
  return {
    app, store, router, auth, ledger, consentChain: consent.view, consent: access, logger, ...(audit ? { audit } : {}), portalClientId: portalClient.clientId,
    close: async () => { await readers?.close(); await preparer.close(); await audit?.close(); await consent.view.close(); await ledger.stop(); await store.close(); auth.close(); },
  };
}

/** Browser SMART apps call the FHIR API from their own origin with a bearer token (no cookies). */
function corsForApps(req: express.Request, res: express.Response, next: express.NextFunction): void {
  res.set('Access-Control-Allow-Origin', '*');
  res.set('Access-Control-Expose-Headers', 'Location, ETag, Last-Modified, Content-Location, WWW-Authenticate');
  if (req.method === 'OPTIONS') {
    res.set('Access-Control-Allow-Methods', 'GET, HEAD, POST, PUT, PATCH, DELETE');
    res.set('Access-Control-Allow-Headers', 'Authorization, Content-Type, Accept, If-Match, If-None-Match, If-None-Exist, If-Modified-Since, Prefer');
    res.set('Access-Control-Max-Age', '600');
    res.status(204).end();
    return;
  }
  next();
}

const SHUTDOWN_GRACE_MS = 5000;

export interface RunningServer {
  server: http.Server;
  url: string;
  app: App;
  close(): Promise<void>;
}

/** Starts listening on config.host:config.port (0 = a free port). */
export async function startServer(config: Config, deps: { logger?: Logger } = {}): Promise<RunningServer> {
  const built = await createApp(config, deps);
  // A client gets requestTimeout to send a whole request (headersTimeout for its headers), so slow
  // senders cannot hold connections for Node's default 300 s; Node checks them every interval.
  const { requestTimeoutMs, headersTimeoutMs, keepAliveTimeoutMs } = config.http;
  const server = http.createServer({
    requestTimeout: requestTimeoutMs, headersTimeout: headersTimeoutMs, keepAliveTimeout: keepAliveTimeoutMs,
    connectionsCheckingInterval: Math.min(30_000, Math.max(250, Math.floor(headersTimeoutMs / 4))),
  }, built.app);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.host, () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : config.port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  return {
    server,
    url: `http://${host}:${port}`,
    app: built,
    close: async () => {
      // Stop accepting, let requests in flight finish (bounded), then stop workers and the store.
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => server.closeAllConnections(), SHUTDOWN_GRACE_MS);
        server.close(() => { clearTimeout(force); resolve(); });
        server.closeIdleConnections();
      });
      await built.close();
    },
  };
}
