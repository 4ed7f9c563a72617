import express from 'express';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export interface PortalRoutesOptions {
  /** The built portal (index.html and assets/); see `defaultPortalDir`. */
  dir: string;
  clientId: string;
  fhirBase: string;
  scope: string;
  /** The chain's JSON-RPC URL the browser may ask (connect-src), when the ledger runs. */
  chainRpcUrl?: string;
}

/** `dist/web` of this package, where `npm run build` puts the portal (from src/ and from dist/ alike). */
export function defaultPortalDir(): string {
  return fileURLToPath(new URL('../../dist/web/', import.meta.url));
}

/**
 * The portal's Content-Security-Policy: its own scripts and styles only (nothing inline), and
 * network access to this server and the chain's RPC alone.
 */
export function portalPolicy(fhirBase: string, chainRpcUrl?: string): string {
  // The FHIR base is named too: a person may open the portal as localhost while BASE_URL says 127.0.0.1.
  const rpc = [new URL(fhirBase).origin, ...(chainRpcUrl ? [new URL(chainRpcUrl).origin] : [])].map((o) => ` ${o}`).join('');
  return [
    "default-src 'none'", "script-src 'self'", "style-src 'self'", "img-src 'self' data:", "font-src 'self'",
    `connect-src 'self'${rpc}`, "base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'", "manifest-src 'self'",
  ].join('; ');
}

const NOT_BUILT = '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Portal not built</title></head><body><main><h1>The patient portal is not built</h1><p>Run <code>npm run build</code> and start the server again.</p></main></body></html>';

/** Serves the portal at /portal/: its settings, its hashed assets (cached for good) and index.html. */
export function portalRoutes(o: PortalRoutesOptions): express.Router {
  const router = express.Router();
  const policy = portalPolicy(o.fhirBase, o.chainRpcUrl);
  const settings = JSON.stringify({ clientId: o.clientId, fhirBase: o.fhirBase, scope: o.scope, ...(o.chainRpcUrl ? { chainRpcUrl: o.chainRpcUrl } : {}) });
  router.use((_req, res, next) => {
    res.set({
      'Content-Security-Policy': policy, 'X-Content-Type-Options': 'nosniff', 'Referrer-Policy': 'no-referrer',
      'Cross-Origin-Opener-Policy': 'same-origin', 'Permissions-Policy': 'camera=(), microphone=(), geolocation=()',
    });
    next();
  });
  router.get('/config.json', (_req, res) => { res.set('Cache-Control', 'no-store').type('application/json').send(settings); });
  router.use('/assets', express.static(path.join(o.dir, 'assets'), { immutable: true, maxAge: '365d', index: false, fallthrough: false }));
  const index = path.join(o.dir, 'index.html');
  router.get('/', (req, res) => {
    // /portal (no slash) would resolve the portal's relative URLs against / instead.
    if (!req.originalUrl.split('?')[0]!.endsWith('/')) { res.redirect(301, `${req.baseUrl}/${req.originalUrl.slice(req.baseUrl.length)}`); return; }
    fs.readFile(index, (err, html) => {
      if (err) { res.status(503).type('html').send(NOT_BUILT); return; }
      res.set('Cache-Control', 'no-cache').type('html').send(html);
    });
  });
  return router;
}
