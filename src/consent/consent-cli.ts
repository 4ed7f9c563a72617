/**
 * `custos consent ...`: a patient's signing key on the command line. It binds the key to the
 * patient, signs Consents (EIP-712, with the key file; the key never leaves this process) and
 * revokes them, through the server's operations or, for a revocation, straight on the contract.
 * Before signing it reads the Consent itself and checks that the hash it is asked to sign is the
 * hash of that Consent's content, so a server cannot make the patient sign something else.
 * `recover` is the operator's side (run with the server's DATA_DIR, like `custos client add`):
 * it proposes, then executes, binding a patient who lost their key to a new one.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { getAddress, isAddress, Wallet } from 'ethers';
import { loadConfig } from '../config.js';
import { fund } from '../ledger/anvil.js';
import { loadMasterKeys, contentHash } from '../store/index.js';
import { ConsentRegistryClient, ConsentRegistryError, pseudonymousId, type ConsentTypedData } from './consent-registry.js';
import { CONSENT_CONTRACT_FILE, recoveryDelaySeconds } from './chain-setup.js';
import { consentPidSecret } from './chain-view.js';

export const CONSENT_USAGE = `Usage: custos consent <command> [options]

A patient's consent signing key (secp256k1, as in an Ethereum wallet), against a Custos server.

Commands:
  bind    Bind the key to the patient (first binding: signed by the key itself)
          --key <file> --patient <id> --server <base> --token <token> [--current-key <file>]
          (--current-key: to replace a bound key, the bound key approves the new one)
  sign    Grant a Consent: sign its current version (EIP-712 Grant) and have the server relay it
          --key <file> --consent <id> --server <base> --token <token>
  revoke  Revoke a Consent: sign an EIP-712 Revoke and have the server relay it
          --key <file> --consent <id> --server <base> --token <token>
          With --direct --rpc <url>: send revokeDirect from the key itself to the contract
          (pays gas; the server only tells which pid, hash and contract)
  status  Where a Consent stands on chain: --consent <id> --server <base> --token <token>
          With --patient <id> instead: the patient's bound key and any pending operator
          recovery (recoveryKey, recoveryExecutableAt)
  cancel-recovery  Cancel a pending operator recovery: the bound key sends cancelRecovery to
          the contract itself (pays gas): --key <file> --rpc <url> --patient <id> --server <base> --token <token>
  recover Operator, on the server machine (DATA_DIR, CUSTOS_MASTER_KEY as for "custos serve"):
          propose binding a patient who lost their key to --address; it can be executed only
          after the contract's recovery delay (CONSENT_RECOVERY_DAYS), and the patient sees it
          and may cancel it until then: --patient <id> --address <0x..> --rpc <url>
          With --execute: execute the proposal once its delay has passed (fails before, naming when)
          Operator key: --key <file>, else CONSENT_KEY / CONSENT_KEY_FILE, else
          DATA_DIR/keys/consent-relayer.key; contract: CONSENT_CONTRACT, else
          DATA_DIR/chain/consent-contract.json. --rpc: the node (rpcUrl of GET /fhir/$ledger-status)
  deploy  Deploy a ConsentRegistry on an external chain (for CONSENT_CONTRACT)
          --rpc <url> --key <file> [--recovery-days <days>] (default 7; the key becomes its operator)

Options:
  --key <file>         Hex secp256k1 private key (0x + 64 hex digits), e.g. mode 0600
  --server <base>      The FHIR base URL, e.g. http://127.0.0.1:8080/fhir
  --token <token>      The patient's access token (or --token-file <file>, or env CUSTOS_TOKEN);
                       it needs a scope reading Consent (and updating Consent to bind/sign/revoke),
                       e.g. patient/Consent.rus
  --json               (default) print the result as one JSON object
  -h, --help           Show this help

Before signing, the Consent is read and its hash (SHA-256 of RFC 8785 JSON) recomputed: the
command refuses to sign a hash that is not the Consent's. Exit status: 0 done, 1 failed
(the server's OperationOutcome or the chain's error is printed), 2 usage error.

Examples:
  custos consent bind --key alice.key --patient 123 --server http://127.0.0.1:8080/fhir --token-file t.txt
  custos consent sign --key alice.key --consent c1 --server http://127.0.0.1:8080/fhir --token-file t.txt
  custos consent revoke --direct --rpc http://127.0.0.1:8545 --key alice.key --consent c1 --server ... --token-file t.txt
  DATA_DIR=./data custos consent recover --patient 123 --address 0x... --rpc http://127.0.0.1:8545 [--execute]
`;

class UsageError extends Error {}
class CommandError extends Error {}

interface Param { name: string; valueString?: string; valueCode?: string; valueInteger?: number; valueInstant?: string; valueReference?: { reference?: string } }
interface ParametersBody { resourceType?: string; parameter?: Param[] }

function pv(p: ParametersBody, name: string): string | undefined {
  const x = p.parameter?.find((q) => q.name === name);
  if (!x) return undefined;
  const v = x.valueString ?? x.valueCode ?? x.valueInteger ?? x.valueInstant ?? x.valueReference?.reference;
  return v === undefined ? undefined : String(v);
}

function readKey(file: string, what = '--key'): Wallet {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UsageError(`cannot read the ${what} file ${file}: ${code === 'ENOENT' ? 'no such file' : (code ?? (err as Error).message)}`);
  }
  const m = /^(?:0x)?([0-9a-fA-F]{64})$/.exec(text.trim());
  if (!m) throw new UsageError(`the ${what} file ${file} does not hold a secp256k1 private key (0x followed by 64 hex digits)`);
  try {
    return new Wallet(`0x${m[1]!.toLowerCase()}`);
  } catch {
    throw new UsageError(`the ${what} file ${file} does not hold a valid secp256k1 private key`);
  }
}

/** A minimal FHIR client for the operations (Bearer token, JSON, OperationOutcome errors). */
class Server {
  constructor(private readonly base: string, private readonly token: string) {}

  async request(method: 'GET' | 'POST', path: string, body?: unknown): Promise<unknown> {
    const url = `${this.base}/${path}`;
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: {
          authorization: `Bearer ${this.token}`, accept: 'application/fhir+json',
          ...(body !== undefined ? { 'content-type': 'application/fhir+json' } : {}),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(120_000),
      });
    } catch (err) {
      const cause = (err as Error).cause instanceof Error ? ((err as Error).cause as Error).message : (err as Error).message;
      throw new CommandError(`cannot reach the server at ${this.base}: ${cause}`);
    }
    const text = await res.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    if (!res.ok) {
      const issues = (json as { resourceType?: string; issue?: Array<{ diagnostics?: string }> } | undefined)?.issue;
      const why = issues?.map((i) => i.diagnostics).filter(Boolean).join('; ') || text.slice(0, 300) || res.statusText;
      throw new CommandError(`${method} ${path.split('?')[0]} failed with HTTP ${res.status}: ${why}`);
    }
    return json;
  }

  async operation(method: 'GET' | 'POST', path: string, body?: unknown): Promise<ParametersBody> {
    const out = (await this.request(method, path, body)) as ParametersBody | undefined;
    if (!out || out.resourceType !== 'Parameters') throw new CommandError(`${method} ${path.split('?')[0]} did not answer a Parameters resource`);
    return out;
  }
}

function parseTypedData(p: ParametersBody, kind: ConsentTypedData['primaryType']): ConsentTypedData {
  const raw = pv(p, 'typedData');
  if (!raw) throw new CommandError('the server gave no typedData');
  let td: ConsentTypedData;
  try {
    td = JSON.parse(raw) as ConsentTypedData;
  } catch {
    throw new CommandError('the server\'s typedData is not valid JSON');
  }
  if (td.primaryType !== kind || td.domain?.name !== 'Custos Consent' || td.domain.version !== '1' || !td.types?.[kind] || !td.message) {
    throw new CommandError(`the server's typedData is not a Custos Consent ${kind} message`);
  }
  return td;
}

async function signTyped(w: Wallet, td: ConsentTypedData): Promise<string> {
  const { EIP712Domain: _domain, ...types } = td.types;
  return w.signTypedData(td.domain, types, td.message);
}

/** Fetches the Grant/Revoke typed data and checks it against the Consent's own content and the key. */
async function preparedSignature(server: Server, consentId: string, action: 'grant' | 'revoke', wallet: Wallet) {
  const id = encodeURIComponent(consentId);
  const p = await server.operation('GET', `Consent/${id}/$consent-typed-data?action=${action}`);
  const td = parseTypedData(p, action === 'grant' ? 'Grant' : 'Revoke');
  const consentHash = (pv(p, 'consentHash') ?? '').toLowerCase();
  const pid = (pv(p, 'pid') ?? '').toLowerCase();
  if (td.message.consentHash?.toLowerCase() !== consentHash || td.message.pid?.toLowerCase() !== pid) {
    throw new CommandError('the server\'s typedData does not match the consentHash and pid it reports: refusing to sign');
  }
  // The hash must be the Consent's own: recompute it from the version the server names.
  const ref = pv(p, 'consent') ?? '';
  const vid = /\/_history\/(\d+)$/.exec(ref)?.[1];
  const resource = (await server.request('GET', vid ? `Consent/${id}/_history/${vid}` : `Consent/${id}`)) as { resourceType?: string; id?: string; meta?: { versionId?: string } };
  if (resource?.resourceType !== 'Consent' || resource.id !== consentId) throw new CommandError(`GET Consent/${consentId} did not answer that Consent`);
  const recomputed = `0x${contentHash(resource)}`;
  if (recomputed !== consentHash) {
    throw new CommandError(`the hash to sign (${consentHash}) is not the hash of Consent/${consentId} version ${resource.meta?.versionId ?? '?'} as the server returns it (${recomputed}): refusing to sign`);
  }
  const key = pv(p, 'key');
  if (key && key.toLowerCase() !== wallet.address.toLowerCase()) {
    throw new CommandError(`the key in the key file (${wallet.address}) is not the key bound for this patient (${key})`);
  }
  return { p, td, consentHash, pid, reference: ref };
}

async function bind(v: Values, server: Server): Promise<unknown> {
  const wallet = readKey(need(v, 'key'));
  const patient = need(v, 'patient');
  const path = `Patient/${encodeURIComponent(patient)}/$consent-key`;
  const p = await server.operation('GET', `${path}?address=${wallet.address}`);
  const bound = pv(p, 'key');
  if (bound && bound.toLowerCase() === wallet.address.toLowerCase()) {
    return { status: 'already-bound', patient: `Patient/${patient}`, key: wallet.address, pid: pv(p, 'pid') };
  }
  const td = parseTypedData(p, 'BindKey');
  if (td.message.key?.toLowerCase() !== wallet.address.toLowerCase()) throw new CommandError('the server\'s typedData binds another address: refusing to sign');
  const signerAddress = pv(p, 'signer') ?? wallet.address;
  let signer = wallet;
  if (signerAddress.toLowerCase() !== wallet.address.toLowerCase()) {
    if (!v['current-key']) throw new CommandError(`Patient/${patient} is bound to ${signerAddress}: the new key must be approved by that key (--current-key <file>)`);
    signer = readKey(v['current-key'], '--current-key');
    if (signer.address.toLowerCase() !== signerAddress.toLowerCase()) throw new CommandError(`the --current-key file holds ${signer.address}, but the key bound now is ${signerAddress}`);
  }
  const signature = await signTyped(signer, td);
  const r = await server.operation('POST', path, {
    resourceType: 'Parameters',
    parameter: [
      { name: 'address', valueString: wallet.address }, { name: 'deadline', valueString: td.message.deadline },
      { name: 'nonce', valueString: td.message.nonce }, { name: 'signature', valueString: signature },
    ],
  });
  return { status: 'bound', patient: `Patient/${patient}`, key: pv(r, 'key'), pid: pv(r, 'pid'), txHash: pv(r, 'txHash'), blockNumber: num(pv(r, 'blockNumber')) };
}

async function signOrRevoke(v: Values, server: Server, action: 'grant' | 'revoke'): Promise<unknown> {
  const wallet = readKey(need(v, 'key'));
  const consentId = need(v, 'consent');
  if (v.direct && action === 'revoke') return revokeDirect(v, server, wallet, consentId);
  if (v.direct) throw new UsageError('--direct is for revoke only');
  const { td, consentHash, reference } = await preparedSignature(server, consentId, action, wallet);
  const signature = await signTyped(wallet, td);
  const r = await server.operation('POST', `Consent/${encodeURIComponent(consentId)}/$consent-sign`, {
    resourceType: 'Parameters',
    parameter: [
      { name: 'action', valueCode: action }, { name: 'signature', valueString: signature },
      { name: 'deadline', valueString: td.message.deadline }, { name: 'nonce', valueString: td.message.nonce }, { name: 'consentHash', valueString: consentHash },
    ],
  });
  return { action, consent: pv(r, 'consent') ?? reference, status: pv(r, 'status'), consentHash, pid: pv(r, 'pid'), key: wallet.address, txHash: pv(r, 'txHash'), blockNumber: num(pv(r, 'blockNumber')) };
}

async function revokeDirect(v: Values, server: Server, wallet: Wallet, consentId: string): Promise<unknown> {
  const rpc = need(v, 'rpc');
  const { td, consentHash, pid, reference } = await preparedSignature(server, consentId, 'revoke', wallet);
  let client: ConsentRegistryClient;
  try {
    client = await ConsentRegistryClient.connect({ rpcUrl: rpc, address: td.domain.verifyingContract, privateKey: wallet.privateKey, expectedChainId: Number(td.domain.chainId), pollingIntervalMs: 250 });
  } catch (err) {
    throw new CommandError(`cannot use the ConsentRegistry ${td.domain.verifyingContract} at ${rpc}: ${(err as Error).message}`);
  }
  try {
    const r = await client.revokeDirect(pid, consentHash);
    return { action: 'revoke', direct: true, consent: reference, status: 'revoked', consentHash, pid, key: wallet.address, contract: client.address, chainId: client.chainId, txHash: r.txHash, blockNumber: r.blockNumber };
  } catch (err) {
    throw new CommandError(`revokeDirect failed: ${(err as Error).message}`);
  } finally {
    client.close();
  }
}

const flat = (p: ParametersBody) => Object.fromEntries((p.parameter ?? []).map((x) => [x.name, x.valueString ?? x.valueCode ?? x.valueInteger ?? x.valueInstant ?? x.valueReference?.reference]));

async function status(v: Values, server: Server): Promise<unknown> {
  if (v.patient !== undefined && v.consent !== undefined) throw new UsageError('give either --consent <id> (a Consent\'s status) or --patient <id> (the key\'s status), not both');
  if (v.patient !== undefined) {
    const patient = need(v, 'patient');
    return { patient: `Patient/${patient}`, ...flat(await server.operation('GET', `Patient/${encodeURIComponent(patient)}/$consent-key`)) };
  }
  const consentId = need(v, 'consent');
  return flat(await server.operation('GET', `Consent/${encodeURIComponent(consentId)}/$consent-status`));
}

/** The bound key cancels a pending operator recovery, itself, on the contract. */
async function cancelRecovery(v: Values, server: Server): Promise<unknown> {
  const wallet = readKey(need(v, 'key'));
  const rpc = need(v, 'rpc');
  const patient = need(v, 'patient');
  const p = await server.operation('GET', `Patient/${encodeURIComponent(patient)}/$consent-key`);
  const pid = pv(p, 'pid');
  const contract = pv(p, 'contractAddress');
  const chainId = Number(pv(p, 'chainId'));
  if (!pid || !contract || !Number.isSafeInteger(chainId)) throw new CommandError('the server\'s $consent-key answer lacks pid, contractAddress or chainId');
  const bound = pv(p, 'key');
  if (!bound) throw new CommandError(`Patient/${patient} has no key bound: there is no recovery to cancel`);
  if (bound.toLowerCase() !== wallet.address.toLowerCase()) {
    throw new CommandError(`only the key bound now (${bound}) can cancel a recovery; the --key file holds ${wallet.address}`);
  }
  let client: ConsentRegistryClient;
  try {
    client = await ConsentRegistryClient.connect({ rpcUrl: rpc, address: contract, privateKey: wallet.privateKey, expectedChainId: chainId, pollingIntervalMs: 250 });
  } catch (err) {
    throw new CommandError(`cannot use the ConsentRegistry ${contract} at ${rpc}: ${(err as Error).message}`);
  }
  try {
    // The chain, not the server, is the authority on what is pending.
    const pending = await client.pendingRecovery(pid);
    if (!pending) throw new CommandError(`Patient/${patient} has no pending recovery on the ConsentRegistry ${client.address}: nothing to cancel`);
    let r;
    try {
      r = await client.cancelRecovery(pid);
    } catch (err) {
      throw new CommandError(`cancelRecovery failed: ${(err as Error).message}`);
    }
    return {
      status: 'recovery-cancelled', patient: `Patient/${patient}`, pid, key: wallet.address, cancelledRecoveryKey: pending.newKey,
      cancelledExecutableAt: isoOf(pending.executableAt), contract: client.address, chainId: client.chainId, txHash: r.txHash, blockNumber: r.blockNumber,
    };
  } finally {
    client.close();
  }
}

const isoOf = (unixSeconds: number) => {
  const d = new Date(unixSeconds * 1000);
  return Number.isNaN(d.getTime()) ? String(unixSeconds) : d.toISOString();
};

function keyFromFile(file: string, what: string): string {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new UsageError(`cannot read ${what} ${file}: ${code === 'ENOENT' ? 'no such file' : (code ?? (err as Error).message)}`);
  }
  const m = /^(?:0x)?([0-9a-fA-F]{64})$/.exec(text.trim());
  if (!m) throw new UsageError(`${what} ${file} does not hold a secp256k1 private key (0x followed by 64 hex digits)`);
  return `0x${m[1]!.toLowerCase()}`;
}

/**
 * Operator: proposes (or, with --execute, executes) binding a patient to a new key, with the
 * server's DATA_DIR: the pid from the master key, the contract and operator key of the server.
 */
async function recover(v: Values, env: NodeJS.ProcessEnv): Promise<unknown> {
  const patient = need(v, 'patient');
  if (!/^[A-Za-z0-9\-.]{1,64}$/.test(patient)) throw new UsageError(`--patient must be a FHIR id (1-64 of A-Z a-z 0-9 - .), got "${patient.slice(0, 80)}"`);
  const rawAddress = need(v, 'address');
  if (!/^0x[0-9a-fA-F]{40}$/.test(rawAddress) || !isAddress(rawAddress.toLowerCase())) throw new UsageError(`--address must be a 0x-prefixed 20-byte hex address, got "${rawAddress.slice(0, 80)}"`);
  const address = getAddress(rawAddress.toLowerCase());
  if (BigInt(address) === 0n) throw new UsageError('--address cannot be the zero address');
  const rpc = need(v, 'rpc');
  if (!/^https?:\/\//i.test(rpc)) throw new UsageError(`--rpc must be an http(s) JSON-RPC URL (rpcUrl of GET /fhir/$ledger-status), got "${rpc}"`);

  let config;
  try {
    config = loadConfig(env);
  } catch (err) {
    throw new UsageError(`the server's configuration is not valid: ${(err as Error).message}`);
  }
  const { dataDir } = config;
  if (config.consent.chain === 'off') throw new UsageError('the consent chain is turned off for this server (CONSENT_CHAIN=off / LEDGER=off): there is no key to recover');
  // The pid comes from the server's master key: never create one here (it would give a wrong pid).
  const masterFile = path.join(dataDir, 'keys', 'master.key');
  if (!config.masterKey && !fs.existsSync(masterFile)) {
    throw new UsageError(`no master key: ${masterFile} does not exist and CUSTOS_MASTER_KEY is not set; run this with the server's DATA_DIR (now ${dataDir})`);
  }
  const pid = pseudonymousId(consentPidSecret(loadMasterKeys(dataDir, config.masterKey).indexKey), `Patient/${patient}`);

  let contract = config.consent.contract;
  let expectedChainId: number | undefined;
  if (!contract) {
    const file = path.join(dataDir, 'chain', CONSENT_CONTRACT_FILE);
    let remembered: { address?: unknown; chainId?: unknown };
    try {
      remembered = JSON.parse(fs.readFileSync(file, 'utf8')) as typeof remembered;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new UsageError(`no ConsentRegistry known: cannot read ${file} (${code === 'ENOENT' ? 'no such file: has the server run with this DATA_DIR?' : (code ?? (err as Error).message)}); or set CONSENT_CONTRACT`);
    }
    if (typeof remembered.address !== 'string' || !Number.isSafeInteger(remembered.chainId)) throw new UsageError(`${file} does not name a contract (address, chainId); set CONSENT_CONTRACT`);
    contract = remembered.address;
    expectedChainId = remembered.chainId as number;
  }

  const operatorKey = v.key !== undefined ? keyFromFile(need(v, 'key'), 'the --key file')
    : config.consent.privateKey ? config.consent.privateKey.trim()
      : keyFromFile(config.consent.keyFile ?? path.join(dataDir, 'keys', 'consent-relayer.key'), config.consent.keyFile ? 'CONSENT_KEY_FILE' : 'the operator key');
  let operator: Wallet;
  try {
    operator = new Wallet(operatorKey);
  } catch {
    throw new UsageError('the operator key (CONSENT_KEY) is not a valid secp256k1 private key');
  }

  let client: ConsentRegistryClient;
  try {
    client = await ConsentRegistryClient.connect({ rpcUrl: rpc, address: contract, privateKey: operator.privateKey, pollingIntervalMs: 250, ...(expectedChainId !== undefined ? { expectedChainId } : {}) });
  } catch (err) {
    throw new CommandError(`cannot use the ConsentRegistry ${contract} at ${rpc}: ${(err as Error).message}`);
  }
  try {
    const common = { patient: `Patient/${patient}`, pid, contract: client.address, chainId: client.chainId };
    const [current, pending, owner] = await Promise.all([client.keyOf(pid), client.pendingRecovery(pid), client.owner()]);
    if (!current) throw new CommandError(`Patient/${patient} has no key bound on the ConsentRegistry ${client.address} (pid ${pid}): there is nothing to recover; the patient binds a first key themself ($consent-key)`);

    if (v.execute) {
      if (!pending) throw new CommandError(`Patient/${patient} has no pending recovery: propose one first (the same command without --execute)`);
      if (pending.newKey !== address) throw new CommandError(`the pending recovery of Patient/${patient} binds ${pending.newKey}, not ${address}: propose ${address} first (it replaces the pending one and waits the delay again)`);
      let r;
      try {
        r = await client.executeRecovery(pid);
      } catch (err) {
        if (err instanceof ConsentRegistryError && err.reason === 'RecoveryNotReady') {
          const now = await chainNow(rpc);
          throw new CommandError(`the recovery of Patient/${patient} to ${address} is not executable yet: it becomes executable at ${isoOf(pending.executableAt)} `
            + `(${pending.executableAt}; the chain's time is ${now === undefined ? 'unknown' : `${isoOf(now)}, ${humanDuration(pending.executableAt - now)} to go`})`);
        }
        if (err instanceof ConsentRegistryError && err.reason === 'NoRecovery') throw new CommandError(`Patient/${patient} has no pending recovery any more (cancelled by the patient?)`);
        throw new CommandError(`executeRecovery failed: ${(err as Error).message}`);
      }
      // On the embedded node, give the new key gas (as binding through $consent-key does), so the
      // patient can call the contract directly (revoke --direct, cancel-recovery).
      let funded = false;
      if (config.ledger.mode === 'embedded') funded = await fund(rpc, address).then(() => true, () => false);
      return { status: 'recovered', ...common, previousKey: current, key: address, txHash: r.txHash, blockNumber: r.blockNumber, ...(funded ? { funded } : {}) };
    }

    if (owner !== operator.address) {
      throw new CommandError(`the operator key (${operator.address}) is not the ConsentRegistry's owner (${owner}): only the owner may propose a recovery (--key <file> with the owner's key, or CONSENT_KEY)`);
    }
    if (current === address) throw new CommandError(`Patient/${patient} is already bound to ${address}`);
    if (pending?.newKey === address) {
      throw new CommandError(`a recovery of Patient/${patient} to ${address} is already pending, executable at ${isoOf(pending.executableAt)}: run with --execute then (proposing again would restart the delay)`);
    }
    let r;
    try {
      r = await client.proposeRecovery(pid, address);
    } catch (err) {
      throw new CommandError(`proposeRecovery failed: ${(err as Error).message}`);
    }
    const proposed = await client.pendingRecovery(pid);
    if (!proposed || proposed.newKey !== address) throw new CommandError(`proposeRecovery was mined (${r.txHash}) but the contract reports no pending recovery to ${address}`);
    return {
      status: 'recovery-proposed', ...common, currentKey: current, recoveryKey: address,
      executableAt: isoOf(proposed.executableAt), executableAtUnix: proposed.executableAt,
      ...(pending ? { replaced: { recoveryKey: pending.newKey, executableAt: isoOf(pending.executableAt) } } : {}),
      txHash: r.txHash, blockNumber: r.blockNumber,
      next: `the patient sees it (GET Patient/${patient}/$consent-key) and may cancel it with the current key until then; afterwards run this again with --execute`,
    };
  } finally {
    client.close();
  }
}

/** The latest block's time (unix seconds), or undefined when the node does not say. */
async function chainNow(rpc: string): Promise<number | undefined> {
  try {
    const res = await fetch(rpc, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'eth_getBlockByNumber', params: ['latest', false] }),
      signal: AbortSignal.timeout(10_000),
    });
    const ts = ((await res.json()) as { result?: { timestamp?: string } }).result?.timestamp;
    return ts ? Number(BigInt(ts)) : undefined;
  } catch {
    return undefined;
  }
}

function humanDuration(seconds: number): string {
  if (seconds <= 0) return 'none';
  const d = Math.floor(seconds / 86_400);
  const h = Math.floor((seconds % 86_400) / 3600);
  const m = Math.ceil((seconds % 3600) / 60);
  return [d ? `${d} d` : '', h ? `${h} h` : '', !d && m ? `${m} min` : ''].filter(Boolean).join(' ') || `${seconds} s`;
}

async function deploy(v: Values): Promise<unknown> {
  const rpc = need(v, 'rpc');
  const wallet = readKey(need(v, 'key'));
  const days = v['recovery-days'] === undefined ? 7 : Number(v['recovery-days']);
  if (!Number.isFinite(days) || days < 0 || days > 3650) throw new UsageError(`--recovery-days must be a number of days between 0 and 3650, got "${v['recovery-days']}"`);
  let client: ConsentRegistryClient;
  try {
    client = await ConsentRegistryClient.deploy(rpc, wallet.privateKey, recoveryDelaySeconds(days), { pollingIntervalMs: 500 });
  } catch (err) {
    throw new CommandError(`deploying the ConsentRegistry failed: ${(err as Error).message}`);
  }
  client.close();
  return { contract: client.address, chainId: client.chainId, owner: wallet.address, recoveryDelaySeconds: recoveryDelaySeconds(days), env: `CONSENT_CONTRACT=${client.address}` };
}

// ---------------------------------------------------------------------------------------------

type Values = Record<string, string | boolean | undefined> & {
  key?: string; 'current-key'?: string; patient?: string; consent?: string; server?: string; token?: string; 'token-file'?: string;
  rpc?: string; 'recovery-days'?: string; address?: string; direct?: boolean; execute?: boolean; json?: boolean; help?: boolean;
};

function need(v: Values, name: string): string {
  const x = v[name];
  if (typeof x !== 'string' || x.trim() === '') throw new UsageError(`--${name} is required`);
  return x.trim();
}

const num = (s: string | undefined) => (s === undefined ? undefined : Number(s));

function serverOf(v: Values, env: NodeJS.ProcessEnv): Server {
  const base = need(v, 'server').replace(/\/+$/, '');
  if (!/^https?:\/\//i.test(base)) throw new UsageError(`--server must be an http(s) URL of the FHIR base, got "${base}"`);
  let token = v.token;
  if (!token && v['token-file']) {
    try {
      token = fs.readFileSync(v['token-file'], 'utf8').trim();
    } catch (err) {
      throw new UsageError(`cannot read --token-file ${v['token-file']}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
  token ||= env.CUSTOS_TOKEN;
  if (!token) throw new UsageError('an access token is required: --token <token>, --token-file <file> or env CUSTOS_TOKEN');
  return new Server(base, token.trim());
}

/** Runs `custos consent <argv>`; returns the exit status. */
export async function runConsentCommand(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const [sub, ...rest] = argv;
  if (!sub || sub === 'help' || sub === '--help' || sub === '-h') {
    process.stdout.write(CONSENT_USAGE);
    return sub ? 0 : 2;
  }
  let v: Values;
  try {
    v = parseArgs({
      args: rest,
      strict: true,
      allowPositionals: false,
      options: {
        key: { type: 'string' }, 'current-key': { type: 'string' }, patient: { type: 'string' }, consent: { type: 'string' },
        server: { type: 'string' }, token: { type: 'string' }, 'token-file': { type: 'string' }, rpc: { type: 'string' },
        'recovery-days': { type: 'string' }, address: { type: 'string' }, direct: { type: 'boolean' }, execute: { type: 'boolean' },
        json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
      },
    }).values as Values;
  } catch (err) {
    process.stderr.write(`custos consent: ${(err as Error).message}\n\n${CONSENT_USAGE}`);
    return 2;
  }
  if (v.help) {
    process.stdout.write(CONSENT_USAGE);
    return 0;
  }
  try {
    let out: unknown;
    switch (sub) {
      case 'bind': out = await bind(v, serverOf(v, env)); break;
      case 'sign': out = await signOrRevoke(v, serverOf(v, env), 'grant'); break;
      case 'revoke': out = await signOrRevoke(v, serverOf(v, env), 'revoke'); break;
      case 'status': out = await status(v, serverOf(v, env)); break;
      case 'deploy': out = await deploy(v); break;
      case 'cancel-recovery': out = await cancelRecovery(v, serverOf(v, env)); break;
      case 'recover': out = await recover(v, env); break;
      default:
        process.stderr.write(`custos consent: unknown command "${sub}"\n\n${CONSENT_USAGE}`);
        return 2;
    }
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`custos consent ${sub}: ${err.message}\n(see "custos consent --help")\n`);
      return 2;
    }
    process.stderr.write(`custos consent ${sub}: ${(err as Error).message}\n`);
    return 1;
  }
}
