import { createHash, timingSafeEqual } from 'node:crypto';
import type { NextFunction, Request, Response } from 'express';
import { FhirError, sendOutcome } from '../fhir/index.js';

/** 127.0.0.0/8 and ::1, also as IPv4-mapped IPv6 addresses. */
export function isLoopback(address: string | undefined): boolean {
  if (!address) return false;
  const a = address.toLowerCase().startsWith('::ffff:') ? address.slice(7) : address;
  return a === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(a);
}

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

/**
 * Who may read /metrics: with METRICS_TOKEN, whoever sends it as a bearer token (from anywhere,
 * loopback included, since a reverse proxy on the same host makes every client look local);
 * without it, loopback clients only. The socket's address decides, never X-Forwarded-For.
 */
export function metricsAccess(token: string | undefined): (req: Request, res: Response, next: NextFunction) => void {
  const expected = token === undefined ? undefined : digest(token);
  return (req, res, next) => {
    if (expected === undefined) {
      if (isLoopback(req.socket.remoteAddress)) { next(); return; }
      sendOutcome(res, new FhirError(403, 'forbidden', '/metrics is served to loopback clients only; set METRICS_TOKEN to serve it to a scraper on another host'));
      return;
    }
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    if (m && timingSafeEqual(digest(m[1]!), expected)) { next(); return; }
    res.set('WWW-Authenticate', 'Bearer realm="custos-metrics"');
    sendOutcome(res, new FhirError(401, 'login', m ? 'The metrics token is not valid' : '/metrics needs Authorization: Bearer <METRICS_TOKEN>'));
  };
}
