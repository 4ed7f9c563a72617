import { SEALED_DATA_DAMAGED } from '../store/index.js';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Logger } from 'pino';
import type { Resource } from '@medplum/fhirtypes';
import { redactUrl } from '../log-redact.js';
import { assertJsonLimits, DEFAULT_JSON_LIMITS, mayHoldLoneSurrogate, type JsonLimits } from './json-limits.js';
import { allOk, badRequest, FhirError } from './outcome.js';
import { ANONYMOUS, type Principal } from './principal.js';
import type { FhirRequest, FhirResponse } from './request.js';
import type { FhirRouter } from './router.js';

export const FHIR_JSON = 'application/fhir+json';

const JSON_TYPES = new Set(['application/fhir+json', 'application/json', 'application/json-patch+json', 'text/json']);
const XML_TYPES = /xml/i;
const FORMAT_JSON = new Set(['json', 'application/json', 'application/fhir+json', 'text/json']);

type Prefer = { return?: 'minimal' | 'representation' | 'OperationOutcome'; handling?: 'strict' | 'lenient' };

function parsePrefer(header: string | undefined): Prefer {
  const out: Prefer = {};
  for (const part of (header ?? '').split(/[,;]/)) {
    const [k, v] = part.trim().split('=').map((s) => s?.trim().replace(/^"|"$/g, ''));
    if (k === 'return' && (v === 'minimal' || v === 'representation' || v === 'OperationOutcome')) out.return = v;
    if (k === 'handling' && (v === 'strict' || v === 'lenient')) out.handling = v;
  }
  return out;
}

/** 406 when the client can only take XML (or something else that is not JSON). */
function checkAcceptable(req: Request, query: Array<[string, string]>): void {
  const format = query.find(([k]) => k === '_format')?.[1];
  if (format !== undefined && !FORMAT_JSON.has(format.trim().toLowerCase())) {
    throw new FhirError(406, 'not-supported', `_format=${format.slice(0, 60)} is not supported: this server speaks FHIR JSON only (application/fhir+json)`);
  }
  const accept = req.headers.accept;
  if (!accept) return;
  const types = accept.split(',').map((a) => a.split(';')[0]!.trim().toLowerCase()).filter(Boolean);
  const ok = types.some((t) => t === '*/*' || t === 'application/*' || JSON_TYPES.has(t) || t.endsWith('+json') || t === 'text/html' || t === 'text/*');
  if (!ok) {
    throw new FhirError(406, 'not-supported', `Accept: ${accept.slice(0, 100)} cannot be served: this server returns FHIR JSON only (application/fhir+json)`);
  }
}

function parseQuery(url: string): Array<[string, string]> {
  const i = url.indexOf('?');
  if (i < 0) return [];
  try {
    return [...new URLSearchParams(url.slice(i + 1))];
  } catch {
    throw badRequest('The query string is not valid URL encoding');
  }
}

function mediaType(req: Request): string | undefined {
  const ct = req.headers['content-type'];
  return ct ? ct.split(';')[0]!.trim().toLowerCase() : undefined;
}

/** Parses the body per its Content-Type; XML and other non-JSON bodies are a 415. */
function parseBody(req: Request, limits: JsonLimits): { body?: unknown; form?: Array<[string, string]> } {
  const raw = req.body as Buffer | undefined;
  if (!raw || raw.length === 0) return {};
  const ct = mediaType(req);
  const text = raw.toString('utf8');
  if (ct === 'application/x-www-form-urlencoded') return { form: [...new URLSearchParams(text)] };
  if ((ct && XML_TYPES.test(ct)) || text.trimStart().startsWith('<')) {
    throw new FhirError(415, 'not-supported', 'XML is not supported: send FHIR JSON (Content-Type: application/fhir+json)');
  }
  if (ct && !JSON_TYPES.has(ct)) {
    throw new FhirError(415, 'not-supported', `Content-Type ${ct.slice(0, 80)} is not supported: send application/fhir+json (or application/json-patch+json for PATCH)`);
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (err) {
    throw badRequest(`Malformed JSON body: ${(err as Error).message.slice(0, 200)}`);
  }
  assertJsonLimits(body, limits, mayHoldLoneSurrogate(text));
  return { body };
}

function decodePath(p: string): string {
  try {
    return p.split('/').map((s) => decodeURIComponent(s)).filter((s) => s.length > 0).join('/');
  } catch {
    throw badRequest('The request path is not valid URL encoding');
  }
}

export function sendOutcome(res: Response, err: FhirError): void {
  res.status(err.status).type(FHIR_JSON).send(JSON.stringify(err.toOutcome()));
}

/** Express adapter: HTTP request -> FhirRequest -> FhirRouter -> HTTP response. */
export function fhirHttpRouter(router: FhirRouter, opts: { maxBodyBytes: number; jsonLimits?: JsonLimits; logger: Logger }): express.Router {
  const r = express.Router();
  r.use(express.raw({ type: () => true, limit: opts.maxBodyBytes }));
  r.use(async (req: Request, res: Response, next: NextFunction) => {
    try {
      const query = parseQuery(req.url);
      checkAcceptable(req, query);
      // HEAD is a GET whose body express leaves out.
      const method = req.method.toUpperCase() === 'HEAD' ? 'GET' : req.method.toUpperCase();
      if (!['GET', 'POST', 'PUT', 'PATCH', 'DELETE'].includes(method)) throw new FhirError(405, 'not-supported', `${method} is not supported`);
      const { body, form } = parseBody(req, opts.jsonLimits ?? DEFAULT_JSON_LIMITS);
      const path = decodePath(req.path);
      if (form && !/(^|\/)_search$/.test(path)) {
        throw new FhirError(415, 'not-supported', 'Form-encoded bodies are accepted only by POST [type]/_search; send FHIR JSON');
      }
      const prefer = parsePrefer(header(req, 'prefer'));
      const fhirReq: FhirRequest = {
        method: method as FhirRequest['method'],
        path,
        query: form ? [...query, ...form] : query,
        headers: {
          ifMatch: header(req, 'if-match'),
          ifNoneMatch: header(req, 'if-none-match'),
          ifNoneExist: header(req, 'if-none-exist'),
          ifModifiedSince: header(req, 'if-modified-since'),
          handling: prefer.handling,
          preferReturn: prefer.return,
          contentType: mediaType(req),
        },
        body,
        // The authentication middleware in front of this router puts the principal here.
        principal: (res.locals.principal as Principal | undefined) ?? ANONYMOUS,
        ...(req.socket.remoteAddress ? { address: req.socket.remoteAddress } : {}),
      };
      // For the request metrics (src/ops), which label it by its interaction once it is answered.
      res.locals.fhirRequest = fhirReq;
      const out = await router.handle(fhirReq);
      send(res, out, prefer);
    } catch (err) {
      next(err);
    }
  });
  r.use((err: unknown, req: Request, res: Response, _next: NextFunction) => {
    sendOutcome(res, toFhirError(err, opts.logger, req));
  });
  return r;
}

function header(req: Request, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

function send(res: Response, out: FhirResponse, prefer: Prefer): void {
  if (out.bodyJson !== undefined) {
    res.status(out.status).type(FHIR_JSON).send(out.bodyJson);
    return;
  }
  if (out.etag) res.setHeader('ETag', out.etag);
  if (out.lastModified) res.setHeader('Last-Modified', out.lastModified);
  if (out.location) {
    res.setHeader('Location', out.location);
    if (out.status === 201) res.setHeader('Content-Location', out.location);
  }
  const isWrite = out.location !== undefined;
  let body: Resource | undefined = out.body;
  if (isWrite && prefer.return === 'minimal') body = undefined;
  else if (isWrite && prefer.return === 'OperationOutcome') body = out.outcome ?? allOk(out.status === 201 ? 'Created' : 'Updated');
  if (out.status === 204 || out.status === 304 || body === undefined) {
    res.status(out.status).end();
    return;
  }
  res.status(out.status).type(FHIR_JSON).send(JSON.stringify(body));
}

/** Every failure becomes an OperationOutcome; internal errors never leak details to the client. */
export function toFhirError(err: unknown, logger: Logger, req?: Request): FhirError {
  if (err instanceof FhirError) return err;
  const e = err as { type?: string; status?: number; statusCode?: number; message?: string };
  if (e?.type === 'entity.too.large') return new FhirError(413, 'too-costly', 'Request body is too large');
  if (e?.type === 'entity.parse.failed' || e?.type === 'encoding.unsupported' || e?.type === 'charset.unsupported') {
    return badRequest(`Request body could not be read: ${e.message ?? ''}`.slice(0, 200));
  }
  if (typeof e?.status === 'number' && e.status >= 400 && e.status < 500) return new FhirError(e.status, 'invalid', (e.message ?? 'Bad request').slice(0, 200));
  if (typeof e?.message === 'string' && e.message.startsWith(SEALED_DATA_DAMAGED)) {
    // Worth its own answer: a person (the patient checking a value in the portal) can act on it.
    logger.error({ err, method: req?.method, url: req ? redactUrl(req.originalUrl) : undefined }, 'a stored record failed its integrity check');
    return new FhirError(500, 'exception', 'A stored record failed its integrity check: its encrypted bytes were changed outside the server. The operator can find it with custos integrity-check.');
  }
  logger.error({ err, method: req?.method, url: req ? redactUrl(req.originalUrl) : undefined }, 'unhandled error');
  return new FhirError(500, 'exception', 'Internal server error');
}
