/**
 * FHIR operations through which a patient binds a signing key and signs (or revokes) Consents on
 * the ConsentRegistry, the server relaying what the patient's key signed:
 *
 *   GET|POST Patient/[id]/$consent-key          the bound key and any pending operator recovery, typed data
 *                                               to bind a key / relay a BindKey signature
 *   GET      Consent/[id]/$consent-typed-data   the EIP-712 Grant/Revoke payload for its current version
 *   POST     Consent/[id]/$consent-sign         relay a Grant/Revoke signature
 *   GET      Consent/[id]/$consent-status       where the Consent version stands on chain
 *
 * Only the patient themself (a token whose user is that Patient) may use them; `$consent-status`
 * also a trusted administrator. Every signature is checked off chain first (signer, nonce,
 * deadline), so forged, replayed, foreign or expired signatures are answered with a 4xx
 * OperationOutcome before any gas is spent.
 */
import type { Consent, Parameters, ParametersParameter } from '@medplum/fhirtypes';
import { getAddress, isAddress, isError, verifyTypedData } from 'ethers';
import type { Logger } from 'pino';
import { FhirError, type FhirRequest, type FhirResponse, type InstanceOperation, type Principal, type TokenPrincipal } from '../fhir/index.js';
import { patientUserOf } from '../smart-auth/scope-policy.js';
import { contentHash, type Store, type StoredVersion } from '../store/index.js';
import { ChainConsentView, ConsentChainUnavailableError } from './chain-view.js';
import { ConsentRegistryError, type ConsentRegistryClient, type ConsentTypedData } from './consent-registry.js';
import type { ConsentChainView } from './types.js';

/** How long a signature the server prepares stays valid (seconds after the chain's "now"). */
export const SIGNATURE_TTL_S = 3600;
/** A deadline closer than this is refused: the relayed transaction could not be mined in time. */
const DEADLINE_MARGIN_S = 10;
/** How many older versions `$consent-status` looks at for one still active on chain. */
const MAX_OLDER_VERSIONS = 1000;
const SIGNATURE = /^0x[0-9a-fA-F]{128}(1[bB]|1[cC])$/;
const ID = /^[A-Za-z0-9\-.]{1,64}$/;

export interface ConsentChainOperationsOptions {
  /** Gives a newly bound key gas (embedded node), so the patient can also call the contract directly. */
  fund?: (address: string) => Promise<void>;
  /** The server's FHIR base URL: absolute `Consent.patient` references under it are accepted too. */
  baseUrl?: string;
  logger?: Logger;
}

type Target = { resourceType: string; id: string; version?: number };
type Action = 'grant' | 'revoke';

const forbidden = (msg: string) => new FhirError(403, 'forbidden', msg);
const conflict = (msg: string) => new FhirError(409, 'conflict', msg);
const invalid = (msg: string, expression?: string[]) => new FhirError(400, 'invalid', msg, expression);
const unprocessable = (msg: string) => new FhirError(422, 'processing', msg);

const str = (name: string, value: string | undefined): ParametersParameter[] => (value === undefined ? [] : [{ name, valueString: value }]);
const int = (name: string, value: number | undefined): ParametersParameter[] => (value === undefined ? [] : [{ name, valueInteger: value }]);
/** Unix seconds as a valueInstant (absent when out of the Date range). */
const instant = (name: string, unixSeconds: number): ParametersParameter[] => {
  const d = new Date(unixSeconds * 1000);
  return Number.isNaN(d.getTime()) ? [] : [{ name, valueInstant: d.toISOString() }];
};
const parameters = (parameter: ParametersParameter[]): FhirResponse => ({ status: 200, body: { resourceType: 'Parameters', parameter } satisfies Parameters });

// ---------------------------------------------------------------------------------------------
// Input

/** The named input values: a POST's Parameters body, else (GET) the query string. */
function inputs(req: FhirRequest, op: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const add = (k: string, v: string) => out.set(k, [...(out.get(k) ?? []), v]);
  if (req.method === 'POST' && req.body !== undefined) {
    const b = req.body as Parameters;
    if (!b || typeof b !== 'object' || Array.isArray(b) || b.resourceType !== 'Parameters') throw invalid(`${op} takes a Parameters resource`);
    for (const p of Array.isArray(b.parameter) ? b.parameter : []) {
      if (!p || typeof p !== 'object' || typeof p.name !== 'string') continue;
      const v = p.valueString ?? p.valueCode ?? p.valueId ?? p.valueUri ?? p.valueInteger ?? p.valueUnsignedInt ?? p.valuePositiveInt ?? p.valueDecimal
        ?? (p as { valueInteger64?: string | number }).valueInteger64;
      if (v === undefined || v === null) throw invalid(`${op}: parameter "${p.name.slice(0, 40)}" has no value (valueString)`, ['Parameters.parameter']);
      add(p.name, String(v));
    }
  } else {
    for (const [k, v] of req.query) add(k, v);
  }
  return out;
}

function one(input: Map<string, string[]>, name: string, op: string, required: true): string;
function one(input: Map<string, string[]>, name: string, op: string, required?: false): string | undefined;
function one(input: Map<string, string[]>, name: string, op: string, required = false): string | undefined {
  const v = input.get(name);
  if (!v || v.length === 0) {
    if (required) throw new FhirError(400, 'required', `${op} needs a "${name}" parameter`);
    return undefined;
  }
  if (v.length > 1) throw invalid(`${op} takes one "${name}" parameter, got ${v.length}`);
  return v[0]!.trim();
}

function addressParam(value: string, op: string): string {
  if (!isAddress(value) || !/^0x[0-9a-fA-F]{40}$/.test(value)) throw invalid(`${op}: "address" must be a 0x-prefixed 20-byte hex address, got "${value.slice(0, 60)}"`);
  const a = getAddress(value.toLowerCase());
  if (BigInt(a) === 0n) throw invalid(`${op}: the zero address cannot be bound`);
  return a;
}

function uintParam(value: string, name: string, op: string): bigint {
  if (!/^\d{1,78}$/.test(value)) throw invalid(`${op}: "${name}" must be a non-negative integer, got "${value.slice(0, 60)}"`);
  const n = BigInt(value);
  if (n >= 1n << 256n) throw invalid(`${op}: "${name}" is out of range`);
  return n;
}

function actionParam(value: string | undefined, op: string): Action {
  if (value === 'grant' || value === 'revoke') return value;
  throw new FhirError(400, value === undefined ? 'required' : 'invalid', `${op} needs "action" = grant or revoke${value === undefined ? '' : `, got "${value.slice(0, 40)}"`}`);
}

function signatureParam(value: string, op: string): string {
  if (!SIGNATURE.test(value)) {
    throw invalid(`${op}: "signature" must be a 65-byte EIP-712 signature as 0x-prefixed hex (r, s, v with v = 27 or 28), as eth_signTypedData_v4 returns it`);
  }
  return value;
}

/** The signer of `td` (EIP-712), or a 400 for a malformed or malleable signature. */
function signerOf(td: ConsentTypedData, signature: string, op: string): string {
  const { EIP712Domain: _domain, ...types } = td.types;
  try {
    return verifyTypedData(td.domain, types, td.message, signature);
  } catch (err) {
    throw invalid(`${op}: the signature is not valid (${(err as Error).message.replace(/\s*\(.*$/, '')})`);
  }
}

function checkDeadline(deadline: bigint, now: number, op: string): void {
  if (deadline <= BigInt(now + DEADLINE_MARGIN_S)) {
    throw new FhirError(400, 'invalid', `${op}: the signature's deadline ${deadline} has passed (or is less than ${DEADLINE_MARGIN_S} s away; the chain's time is ${now}): get new typed data and sign again`);
  }
}

// ---------------------------------------------------------------------------------------------
// Who may call

type Need = 'read' | 'update';

function consentScope(p: TokenPrincipal, need: Need, contexts?: ReadonlyArray<string>): boolean {
  const perm = need === 'read' ? 'r' : 'u';
  return p.scopes.some((s) => (s.resourceType === 'Consent' || s.resourceType === '*') && s.permissions.has(perm)
    && (s.context !== 'patient' || p.patient !== undefined) && (!contexts || contexts.includes(s.context)));
}

/** Whether the principal is a trusted administrator allowed to read consent status. */
function isAdmin(p: Principal): boolean {
  return p.kind === 'token' && p.trusted === true && consentScope(p, 'read', ['user', 'system']);
}

/** Throws 401/403 unless the principal may possibly act here (before anything is read). */
function precheck(p: Principal, op: string, allowAdmin: boolean): void {
  if (p.kind === 'system') return;
  if (p.kind !== 'token') throw new FhirError(401, 'login', 'A valid Bearer access token is required');
  if (patientUserOf(p) !== undefined) return;
  if (allowAdmin && isAdmin(p)) return;
  throw forbidden(`${op} is for the patient themself (the access token of the user linked to the Patient)${allowAdmin ? ' or a trusted administrator' : ''}`);
}

/** Throws 403 unless the principal is the patient `patientId` (with a scope allowing `need` on Consent), or an admin where allowed. */
function authorizePatient(p: Principal, patientId: string, need: Need, op: string, allowAdmin = false): void {
  if (p.kind === 'system') return;
  precheck(p, op, allowAdmin);
  const token = p as TokenPrincipal;
  if (patientUserOf(token) === patientId) {
    if (consentScope(token, need)) return;
    throw forbidden(`${op} needs a token with a scope that allows to ${need} Consent (e.g. patient/Consent.${need === 'read' ? 'rs' : 'u'}); this token has "${token.scope}"`);
  }
  if (allowAdmin && isAdmin(token)) return;
  throw forbidden(`${op}: only the patient themself may do this for Patient/${patientId}${allowAdmin ? ' (or a trusted administrator)' : ''}`);
}

// ---------------------------------------------------------------------------------------------
// Errors from the chain

/** Chain failures as OperationOutcomes: unreachable = 503, a contract revert = the 4xx it means. */
function chainError(err: unknown): unknown {
  if (err instanceof FhirError) return err;
  if (err instanceof ConsentChainUnavailableError) return new FhirError(503, 'transient', err.message);
  if (err instanceof ConsentRegistryError) {
    const msg = `The ConsentRegistry refused the transaction: ${err.reason}`;
    switch (err.reason) {
      case 'BadSignature': return invalid(`${msg}: the signature is not by the required key`);
      case 'Expired': return invalid(`${msg}: the signature's deadline has passed`);
      case 'BadNonce': return conflict(`${msg}: the signature's nonce is not the current one (already used?); get new typed data and sign again`);
      case 'NoKey': return conflict(`${msg}: no key is bound for this patient yet`);
      case 'KeyAlreadyBound': return conflict(`${msg}: that key is already bound`);
      case 'AlreadyActive': return conflict(`${msg}: this Consent version is already active`);
      case 'NotActive': return conflict(`${msg}: this Consent version is not active`);
      default: return conflict(`${msg} (${err.message})`);
    }
  }
  const e = err as { code?: string; message?: string };
  if (isError(err, 'NETWORK_ERROR') || isError(err, 'TIMEOUT') || isError(err, 'SERVER_ERROR') || e?.code === 'ECONNREFUSED'
    || /ECONNREFUSED|fetch failed|socket hang up|network/i.test(e?.message ?? '')) {
    return new FhirError(503, 'transient', `The consent chain cannot be reached: ${(e?.message ?? String(err)).slice(0, 300)}`);
  }
  return err;
}

function guarded(type: 'Patient' | 'Consent', fn: (req: FhirRequest, t: Target) => Promise<FhirResponse>): InstanceOperation {
  const op: InstanceOperation = async (req, t) => {
    try {
      return await fn(req, t);
    } catch (err) {
      throw chainError(err);
    }
  };
  // Access is decided here (the patient themself), not by the read check the router would make.
  op.checksOwnAccess = true;
  op.types = [type];
  return op;
}

// ---------------------------------------------------------------------------------------------

/**
 * `$consent-key`, `$consent-typed-data`, `$consent-sign` and `$consent-status` for the FHIR router
 * (`operations.instance`). With CONSENT_CHAIN=off (`view.mode === 'off'`) `$consent-status`
 * answers `off` and the others refuse with a 400.
 */
export function consentChainOperations(view: ConsentChainView, client: ConsentRegistryClient | undefined, store: Store, opts: ConsentChainOperationsOptions = {}): { instance: Record<string, InstanceOperation> } {
  const chain = view.mode === 'required' ? view : undefined;
  if (chain && (!(chain instanceof ChainConsentView) || !client)) throw new TypeError('consentChainOperations: a required consent chain needs a ChainConsentView and its ConsentRegistryClient');
  const cv = chain as ChainConsentView | undefined;
  const base = opts.baseUrl?.replace(/\/+$/, '');

  const on = (op: string): { cv: ChainConsentView; client: ConsentRegistryClient } => {
    if (!cv || !client) throw new FhirError(400, 'not-supported', `${op}: the consent chain is turned off on this server (CONSENT_CHAIN=off): Consents apply on their FHIR status alone, there is nothing to sign`);
    return { cv, client };
  };

  const patientOf = (c: Consent, id: string): string => {
    const ref = c.patient?.reference;
    if (typeof ref !== 'string') throw unprocessable(`Consent/${id} has no patient (Consent.patient.reference): it cannot be signed by a patient's key`);
    let rel = ref;
    if (base && ref.startsWith(`${base}/`)) rel = ref.slice(base.length + 1);
    const m = /^Patient\/([^/]+)$/.exec(rel);
    if (!m || !ID.test(m[1]!)) throw unprocessable(`Consent/${id}: Consent.patient must reference a Patient on this server (Patient/<id>), got "${ref.slice(0, 100)}"`);
    return m[1]!;
  };

  /** The Consent version the operation is about (current unless /_history/<vid>), with its patient; authorized. */
  const consentTarget = async (req: FhirRequest, t: Target, op: string, need: Need, allowAdmin = false) => {
    if (t.resourceType !== 'Consent') throw new FhirError(400, 'not-supported', `${op} is an operation on Consent/[id], not on ${t.resourceType}`);
    precheck(req.principal, op, allowAdmin);
    const current = await store.read('Consent', t.id);
    if (!current) throw new FhirError(404, 'not-found', `Consent/${t.id} is not known`);
    let v: StoredVersion | undefined = current;
    if (t.version !== undefined && t.version !== current.versionId) {
      v = await store.vread('Consent', t.id, t.version);
      if (!v) throw new FhirError(404, 'not-found', `Consent/${t.id} has no version ${t.version}`);
    }
    if (v.deleted || !v.resource) throw new FhirError(410, 'deleted', `Consent/${t.id}${t.version !== undefined ? `/_history/${t.version}` : ''} is deleted`);
    const consent = v.resource as Consent;
    const patientId = patientOf(consent, t.id);
    // Another patient learns nothing about this Consent, not even that it exists.
    const p = req.principal;
    if (p.kind === 'token' && patientUserOf(p) !== patientId && !(allowAdmin && isAdmin(p))) throw new FhirError(404, 'not-found', `Consent/${t.id} is not known`);
    authorizePatient(req.principal, patientId, need, op, allowAdmin);
    return { v, current, consent, patientId, recomputed: contentHash(v.resource) };
  };

  /** What a grant/revoke of the target version needs, checked against the chain; 4xx when it cannot be signed. */
  const signable = async (req: FhirRequest, t: Target, op: string, action: Action, need: Need) => {
    const c = on(op);
    const target = await consentTarget(req, t, op, need);
    const { v, current, consent, patientId, recomputed } = target;
    if (action === 'grant') {
      if (v.versionId !== current.versionId) throw unprocessable(`${op}: only the current version of Consent/${t.id} (${current.versionId}) can be granted, not version ${v.versionId}`);
      if (consent.status !== 'active') throw unprocessable(`${op}: Consent/${t.id} has status "${consent.status}": only an active Consent can be granted`);
    }
    // A grant needs the stored content to be what was written; a revocation of the recorded hash is always allowed.
    if (action === 'grant' && recomputed !== v.contentHash) throw unprocessable(`${op}: Consent/${t.id} version ${v.versionId} no longer matches the hash recorded when it was written: it cannot be signed`);
    const pid = c.cv.pid(patientId);
    const hash = `0x${v.contentHash}`;
    const [key, active] = await Promise.all([c.client.keyOf(pid), c.client.isActive(pid, hash)]);
    if (!key) throw conflict(`${op}: Patient/${patientId} has no signing key bound yet: bind one first (GET then POST Patient/${patientId}/$consent-key)`);
    if (action === 'grant' && active) throw conflict(`${op}: Consent/${t.id} version ${v.versionId} is already active on chain`);
    if (action === 'revoke' && !active) {
      throw conflict(`${op}: Consent/${t.id} version ${v.versionId} is not active on chain: there is nothing to revoke (if an older version is, $consent-status names it: revoke Consent/${t.id}/_history/<version>)`);
    }
    return { ...c, ...target, pid, hash, key };
  };

  // -------------------------------------------------------------------------------- $consent-key
  const consentKey = guarded('Patient', async (req, t) => {
    const op = '$consent-key';
    if (t.resourceType !== 'Patient') throw new FhirError(400, 'not-supported', `${op} is an operation on Patient/[id], not on ${t.resourceType}`);
    if (t.version !== undefined) throw new FhirError(400, 'not-supported', `${op} applies to a patient, not to one version: drop /_history/${t.version}`);
    const patientId = t.id;
    authorizePatient(req.principal, patientId, req.method === 'GET' ? 'read' : 'update', op);
    const { cv, client: c } = on(op);
    const pid = cv.pid(patientId);
    const input = inputs(req, op);
    const contract = [...str('chainId', String(c.chainId)), ...str('contractAddress', c.address)];

    if (req.method === 'GET') {
      const raw = one(input, 'address', op);
      const address = raw === undefined ? undefined : addressParam(raw, op);
      // An explicit question: the view as the chain is now (a pending recovery must not be missed).
      await cv.sync();
      const [key, nonce, now] = await Promise.all([c.keyOf(pid), c.nonceOf(pid), cv.chainTime()]);
      const recovery = cv.pendingRecovery(pid);
      const out: ParametersParameter[] = [...str('pid', pid), ...str('key', key), ...contract];
      if (recovery) {
        // An operator recovery the patient can still cancel with the current key (cancelRecovery on the contract).
        out.push(...str('recoveryKey', recovery.newKey), ...instant('recoveryExecutableAt', recovery.executableAt));
      }
      if (address && address !== key) {
        const deadline = now + SIGNATURE_TTL_S;
        const td = c.typedData('BindKey', { pid, key: address, nonce, deadline });
        out.push(
          ...str('typedData', JSON.stringify(td)), ...str('signer', key ?? address),
          ...str('nonce', nonce.toString()), ...str('deadline', String(deadline)),
        );
      }
      return parameters(out);
    }

    const address = addressParam(one(input, 'address', op, true), op);
    const deadline = uintParam(one(input, 'deadline', op, true), 'deadline', op);
    const signature = signatureParam(one(input, 'signature', op, true), op);
    const signedNonce = one(input, 'nonce', op);
    const [current, nonce, now] = await Promise.all([c.keyOf(pid), c.nonceOf(pid), cv.chainTime()]);
    if (current === address) throw conflict(`${op}: Patient/${patientId} is already bound to ${address}`);
    if (signedNonce !== undefined && uintParam(signedNonce, 'nonce', op) !== nonce) {
      throw conflict(`${op}: the signature's nonce ${signedNonce} is not the patient's current nonce ${nonce} (already used?); get new typed data and sign again`);
    }
    checkDeadline(deadline, now, op);
    const td = c.typedData('BindKey', { pid, key: address, nonce, deadline });
    const signer = signerOf(td, signature, op);
    const expected = current ?? address;
    if (signer !== expected) {
      throw invalid(current
        ? `${op}: a new key must be approved by the key bound now (${current}); the signature is by ${signer}`
        : `${op}: the first key must sign its own binding; the signature is by ${signer}, not by ${address}`);
    }
    const r = await c.bindKey(pid, address, deadline, signature);
    if (opts.fund) {
      await opts.fund(address).catch((err: unknown) => opts.logger?.warn({ err: (err as Error).message, address }, 'could not fund the bound key'));
    }
    await cv.waitForBlock(r.blockNumber);
    opts.logger?.info({ pid, key: address, txHash: r.txHash }, 'consent key bound');
    return parameters([...str('pid', pid), ...str('key', address), ...str('txHash', r.txHash), ...int('blockNumber', r.blockNumber), ...contract]);
  });

  // ------------------------------------------------------------------------ $consent-typed-data
  const typedData = guarded('Consent', async (req, t) => {
    const op = '$consent-typed-data';
    const input = inputs(req, op);
    const action = actionParam(one(input, 'action', op), op);
    const s = await signable(req, t, op, action, 'read');
    const [nonce, now] = await Promise.all([s.client.nonceOf(s.pid), s.cv.chainTime()]);
    const deadline = now + SIGNATURE_TTL_S;
    const td = s.client.typedData(action === 'grant' ? 'Grant' : 'Revoke', { pid: s.pid, consentHash: s.hash, nonce, deadline });
    return parameters([
      ...str('typedData', JSON.stringify(td)), { name: 'action', valueCode: action },
      ...str('consentHash', s.hash), ...str('pid', s.pid), ...str('nonce', nonce.toString()), ...str('deadline', String(deadline)),
      ...str('key', s.key), { name: 'consent', valueReference: { reference: `Consent/${s.v.id}/_history/${s.v.versionId}` } },
      ...str('chainId', String(s.client.chainId)), ...str('contractAddress', s.client.address),
    ]);
  });

  // ------------------------------------------------------------------------------ $consent-sign
  const sign = guarded('Consent', async (req, t) => {
    const op = '$consent-sign';
    if (req.method !== 'POST') throw new FhirError(405, 'not-supported', `${op} is a POST with a Parameters body (action, signature, deadline, nonce)`);
    const input = inputs(req, op);
    const action = actionParam(one(input, 'action', op), op);
    const signature = signatureParam(one(input, 'signature', op, true), op);
    const deadline = uintParam(one(input, 'deadline', op, true), 'deadline', op);
    const nonce = uintParam(one(input, 'nonce', op, true), 'nonce', op);
    const claimed = one(input, 'consentHash', op);
    const s = await signable(req, t, op, action, 'update');
    if (claimed !== undefined && claimed.toLowerCase().replace(/^(?:0x)?/, '0x') !== s.hash) {
      throw conflict(`${op}: the signed consentHash ${claimed.slice(0, 80)} is not the hash of Consent/${t.id} version ${s.v.versionId} (${s.hash}): the Consent changed; get new typed data and sign again`);
    }
    const [current, now] = await Promise.all([s.client.nonceOf(s.pid), s.cv.chainTime()]);
    if (nonce !== current) {
      throw conflict(`${op}: the signature's nonce ${nonce} is not the patient's current nonce ${current}${nonce < current ? ' (it was already used: a replayed signature)' : ''}; get new typed data and sign again`);
    }
    checkDeadline(deadline, now, op);
    const td = s.client.typedData(action === 'grant' ? 'Grant' : 'Revoke', { pid: s.pid, consentHash: s.hash, nonce, deadline });
    const signer = signerOf(td, signature, op);
    if (signer !== s.key) throw invalid(`${op}: the signature is by ${signer}, not by the key bound for this patient (${s.key})`);
    const r = action === 'grant'
      ? await s.client.grant(s.pid, s.hash, nonce, deadline, signature)
      : await s.client.revoke(s.pid, s.hash, nonce, deadline, signature);
    await s.cv.waitForBlock(r.blockNumber);
    opts.logger?.info({ consent: `Consent/${s.v.id}/_history/${s.v.versionId}`, action, pid: s.pid, txHash: r.txHash }, 'consent signature relayed');
    return parameters([
      { name: 'status', valueCode: action === 'grant' ? 'active' : 'revoked' }, ...str('txHash', r.txHash), ...int('blockNumber', r.blockNumber),
      ...str('consentHash', s.hash), ...str('pid', s.pid), { name: 'consent', valueReference: { reference: `Consent/${s.v.id}/_history/${s.v.versionId}` } },
    ]);
  });

  // ---------------------------------------------------------------------------- $consent-status
  const status = guarded('Consent', async (req, t) => {
    const op = '$consent-status';
    const { v, patientId, recomputed } = await consentTarget(req, t, op, 'read', true);
    const hash = `0x${v.contentHash}`;
    const ref = { name: 'consent', valueReference: { reference: `Consent/${v.id}/_history/${v.versionId}` } };
    if (!cv) return parameters([{ name: 'status', valueCode: 'off' }, ...str('consentHash', hash), ref, ...str('reason', 'the consent chain is turned off (CONSENT_CHAIN=off)')]);
    await cv.sync(); // an explicit question: answer with the chain as it is now, not up to CONSENT_SYNC_MS old
    const s = await cv.status(patientId, v.contentHash);
    const pid = s.state === 'off' ? cv.pid(patientId) : s.pid;
    const key = s.state === 'off' || s.state === 'no-key' ? undefined : s.key;
    const common = [...str('consentHash', hash), ...str('pid', pid), ...str('key', key), ref];
    if (recomputed !== v.contentHash) {
      return parameters([{ name: 'status', valueCode: 'hash-mismatch' }, ...common, ...str('recomputedHash', `0x${recomputed}`),
        ...str('reason', 'the stored Consent no longer hashes to the hash recorded when it was written: it grants nothing')]);
    }
    if (s.state === 'active') return parameters([{ name: 'status', valueCode: 'active' }, ...common, ...str('txHash', s.txHash), ...int('blockNumber', s.blockNumber)]);
    // An older version still active on chain: the Consent was changed after the patient signed it.
    for (let n = v.versionId - 1, seen = 0; n >= 1 && seen < MAX_OLDER_VERSIONS; n--, seen++) {
      const old = await store.vread('Consent', v.id, n);
      if (!old || old.deleted || !cv.isActivePid(pid, old.contentHash)) continue;
      const ev = cv.lastEvent(pid, old.contentHash);
      return parameters([{ name: 'status', valueCode: 'hash-mismatch' }, ...common,
        ...str('reason', `version ${n} of this Consent is the one active on chain (signed by the patient), not version ${v.versionId}: the Consent was changed after it was signed`),
        ...int('activeVersion', n), ...str('activeHash', `0x${old.contentHash}`), ...str('txHash', ev?.txHash), ...int('blockNumber', ev?.blockNumber)]);
    }
    if (s.state === 'revoked') return parameters([{ name: 'status', valueCode: 'revoked' }, ...common, ...str('txHash', s.txHash), ...int('blockNumber', s.blockNumber)]);
    return parameters([{ name: 'status', valueCode: 'pending-signature' }, ...common,
      ...str('reason', s.state === 'no-key' ? 'the patient has not bound a signing key yet ($consent-key)' : 'the patient has not signed this Consent version ($consent-typed-data, $consent-sign)')]);
  });

  return { instance: { '$consent-key': consentKey, '$consent-typed-data': typedData, '$consent-sign': sign, '$consent-status': status } };
}
