import express from 'express';
import type { Logger } from 'pino';
import { ChainConsentView, type ConsentChainView } from '../consent/index.js';
import { FhirError, sendOutcome } from '../fhir/index.js';
import type { LedgerService } from '../ledger/index.js';
import { ChainProbe } from './chain-probe.js';
import { ReadinessCheck } from './health.js';
import { metricsAccess } from './metrics-access.js';
import { Metrics } from './metrics.js';

export { ChainProbe } from './chain-probe.js';
export { isLoopback, metricsAccess } from './metrics-access.js';
export { interactionLabel } from './interaction-label.js';
export type { Readiness } from './health.js';

export interface OpsOptions {
  store: { ping(): void; readonly writesWaiting: number };
  ledger: LedgerService;
  /** The audit trail; undefined with AUDIT=off. */
  audit?: { readonly backlog: number; readonly writerUp: boolean };
  consentView: ConsentChainView;
  /** METRICS_TOKEN (see metricsAccess). */
  metricsToken?: string;
  logger: Logger;
}

/**
 * Operations endpoints outside the FHIR base: /healthz (liveness), /readyz (readiness),
 * /metrics (Prometheus); `measure` counts and times every request for /metrics.
 */
export function opsEndpoints(o: OpsOptions): { measure: express.RequestHandler; routes: express.Router } {
  const rpcUrl = o.ledger.chainAccess()?.rpcUrl;
  const chain = rpcUrl ? new ChainProbe(rpcUrl) : undefined;
  const view = o.consentView;
  const metrics = new Metrics({
    writesWaiting: () => o.store.writesWaiting,
    ...(o.audit ? { audit: o.audit } : {}),
    ...(o.ledger.mode !== 'off' ? { ledger: o.ledger } : {}),
    ...(chain ? { chain } : {}),
    ...(view instanceof ChainConsentView ? { consentViewAge: () => view.ageSeconds } : {}),
  });
  const readiness = new ReadinessCheck({
    pingStore: () => o.store.ping(),
    ...(chain ? { chain } : {}),
    ...(o.audit ? { auditUp: () => o.audit!.writerUp } : {}),
  }, o.logger);

  const routes = express.Router();
  routes.use(['/healthz', '/readyz', '/metrics'], (_req, res, next) => { res.set('Cache-Control', 'no-store'); next(); });
  routes.get('/healthz', (_req, res) => { res.json({ status: 'ok' }); });
  routes.get('/readyz', async (_req, res) => {
    const r = await readiness.check();
    res.status(r.status === 'ok' ? 200 : 503).json(r);
  });
  routes.get('/metrics', metricsAccess(o.metricsToken), async (_req, res) => {
    const { contentType, body } = await metrics.render();
    res.type(contentType).send(body);
  });
  // Express's own error page would show a stack trace outside production.
  routes.use((err: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
    o.logger.error({ err }, 'operations endpoint failed');
    sendOutcome(res, new FhirError(500, 'exception', 'Internal server error'));
  });
  return { measure: metrics.measure(), routes };
}
