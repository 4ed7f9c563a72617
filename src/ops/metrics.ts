import type { NextFunction, Request, Response } from 'express';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { FhirRequest } from '../fhir/index.js';
import type { LedgerStatus } from '../ledger/index.js';
import type { ChainProbe } from './chain-probe.js';
import { interactionLabel } from './interaction-label.js';

/** Where the gauges are read from, once per scrape. */
export interface MetricsSources {
  /** Writes waiting for their group commit to begin. */
  writesWaiting(): number;
  /** The audit trail; undefined with AUDIT=off. */
  audit?: { readonly backlog: number; readonly writerUp: boolean };
  /** The ledger and its chain; undefined with LEDGER=off. */
  ledger?: { status(): LedgerStatus };
  chain?: ChainProbe;
  /** Seconds since the consent chain view last read the contract's events; undefined with CONSENT_CHAIN=off. */
  consentViewAge?: () => number | undefined;
}

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * The server's Prometheus metrics, in a registry of its own (so several servers in one process,
 * as in the tests, do not share counters). Labels are a fixed, small set: the interaction and the
 * HTTP status; nothing from a path or a query.
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'interaction' | 'status'>;
  private readonly latency: Histogram<'interaction'>;
  private readonly sample: Array<() => Promise<void> | void> = [];

  constructor(sources: MetricsSources) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.requests = new Counter({
      name: 'custos_http_requests_total', help: 'HTTP requests answered, by FHIR interaction (or auth, ops, ...) and status (aborted: the client went away first)',
      labelNames: ['interaction', 'status'], registers,
    });
    this.latency = new Histogram({
      name: 'custos_http_request_duration_seconds', help: 'Time from a request\'s arrival to its response, by FHIR interaction',
      labelNames: ['interaction'], buckets: LATENCY_BUCKETS, registers,
    });
    const gauge = (name: string, help: string, read: () => Promise<number | undefined> | number | undefined) => {
      const g = new Gauge({ name, help, registers });
      this.sample.push(async () => {
        // A part that cannot be read (a closed store) leaves its gauge at 0 rather than failing the scrape.
        const v = await Promise.resolve().then(read).catch(() => undefined);
        if (v === undefined) g.reset();
        else g.set(v);
      });
    };
    gauge('custos_write_queue_depth', 'Writes waiting for their group commit (database transaction) to begin', () => sources.writesWaiting());
    const audit = sources.audit;
    if (audit) {
      gauge('custos_audit_backlog', 'AuditEvents of reads, searches and refusals not yet written', () => audit.backlog);
      gauge('custos_audit_writer_up', '1 while AuditEvents are being written (the audit writer thread runs), else 0', () => (audit.writerUp ? 1 : 0));
    }
    const ledger = sources.ledger;
    if (ledger) {
      let status: LedgerStatus | undefined;
      // One status read per scrape (it counts the backlog): the first of these gauges reads it.
      this.sample.push(() => {
        try {
          status = ledger.status();
        } catch {
          status = undefined;
        }
      });
      gauge('custos_ledger_backlog', 'Versions and AuditEvents not yet in a ledger batch', () => status?.backlog);
      gauge('custos_ledger_last_anchored_batch_id', 'Id of the last batch confirmed on chain (0: none yet)', () => status?.lastBatch?.id ?? 0);
      gauge('custos_ledger_last_anchored_batch_timestamp_seconds', 'Block time of the last batch confirmed on chain, Unix seconds (0: none yet)', () => status?.lastBatch?.blockTime ?? 0);
    }
    const chain = sources.chain;
    if (chain) gauge('custos_chain_reachable', '1 when the ledger chain\'s JSON-RPC endpoint answers, else 0', async () => ((await chain.check()).ok ? 1 : 0));
    const age = sources.consentViewAge;
    if (age) gauge('custos_consent_view_age_seconds', 'Seconds since the consent chain view last read the ConsentRegistry events', () => age());
  }

  /** Express middleware (first in the chain): counts and times every request once it is answered. */
  measure(): (req: Request, res: Response, next: NextFunction) => void {
    return (req, res, next) => {
      const start = process.hrtime.bigint();
      // Routers strip their mount path from req.url as they go: keep the path as it arrived.
      const path = req.path;
      res.once('close', () => {
        const interaction = interactionLabel(req.method, path, res.locals.fhirRequest as FhirRequest | undefined);
        this.requests.inc({ interaction, status: res.writableFinished ? String(res.statusCode) : 'aborted' });
        this.latency.observe({ interaction }, Number(process.hrtime.bigint() - start) / 1e9);
      });
      next();
    };
  }

  /** The Prometheus text exposition, with the gauges read now. */
  async render(): Promise<{ contentType: string; body: string }> {
    for (const s of this.sample) await s();
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
