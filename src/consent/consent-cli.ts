/**
 * `custos consent ...`: a patient's signing key on the command line. It binds the key to the
 * patient, signs Consents (EIP-712, with the key file; the key never leaves this process) and
 * revokes them, through the server's operations or, for a revocation, straight on the contract.
 * Before signing it reads the Consent itself and checks that the hash it is asked to sign is the
 * hash of that Consent's content, so a server cannot make the patient sign something else.
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { Wallet } from 'ethers';
import { contentHash } from '../store/index.js';
import { ConsentRegistryClient, type ConsentTypedData } from './consent-registry.js';
import { recoveryDelaySeconds } from './chain-setup.js';

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
`;

class UsageError extends Error {}
class CommandError extends Error {}

interface Param { name: string; valueString?: string; valueCode?: string; valueInteger?: number; valueReference?: { reference?: string } }
interface ParametersBody { resourceType?: string; parameter?: Param[] }

function pv(p: ParametersBody, name: string): string | undefined {
  const x = p.parameter?.find((q) => q.name === name);
  if (!x) return undefined;
  const v = x.valueString ?? x.valueCode ?? x.valueInteger ?? x.valueReference?.reference;
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

async function status(v: Values, server: Server): Promise<unknown> {
  const consentId = need(v, 'consent');
  const p = await server.operation('GET', `Consent/${encodeURIComponent(consentId)}/$consent-status`);
  return Object.fromEntries((p.parameter ?? []).map((x) => [x.name, x.valueString ?? x.valueCode ?? x.valueInteger ?? x.valueReference?.reference]));
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
  rpc?: string; 'recovery-days'?: string; direct?: boolean; json?: boolean; help?: boolean;
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
        'recovery-days': { type: 'string' }, direct: { type: 'boolean' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
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
