import fs from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { loadConfig } from './config.js';
import { loadMasterKeys } from './store/index.js';
import { openAuthDb } from './smart-auth/auth-db.js';
import { LaunchContexts } from './smart-auth/launch-context.js';
import { Registry, ValidationError, type ClientRecord, type ClientType, type NewClient, type UserRecord } from './smart-auth/registry.js';

/** `custos client ...` and `custos user ...`: manage the SMART auth registry in DATA_DIR/auth.db. */

const USAGE = {
  client: `Usage: custos client <add|list|revoke> [options]

  custos client add --type backend --jwks <file|url> --scope "<scopes>" [--name <n>] [--actor <ref>] [--trusted] [--json]
  custos client add --type public|confidential --redirect-uri <uri>... --scope "<scopes>" [--name <n>] [--json]
  custos client list [--json]
  custos client revoke <client_id>

Run "custos client <command> --help" for details.
`,
  'client add': `Usage:
  custos client add --type backend --jwks <file|url> --scope "<scopes>" [--name <n>] [--actor <ref>] [--trusted] [--json]
  custos client add --type public|confidential --redirect-uri <uri> [--redirect-uri <uri>...] --scope "<scopes>" [--name <n>] [--json]
  custos client add --type confidential --jwks <file|url> --redirect-uri <uri> --scope "<scopes>" [--json]   (asymmetric: private_key_jwt)

Registers an OAuth client and prints its client_id (and, for a confidential client, its
secret, shown only this once).

Options:
  --type <t>           public, confidential (both: SMART app launch) or backend (SMART backend services)
  --scope "<scopes>"   Allowed scopes, space-separated (e.g. "launch/patient openid fhirUser patient/*.rs";
                       backend: system/ scopes only, e.g. "system/Observation.rs")
  --redirect-uri <uri> Absolute http(s) redirect URI without fragment; repeat for several (public/confidential)
  --jwks <file|url>    Backend, or confidential (then it authenticates with private_key_jwt instead of a secret): a JWK Set file with the client's PUBLIC keys (RSA for RS384 or EC P-384 for ES384),
                       or an http(s) URL where the client publishes it
  --name <n>           Display name
  --actor <ref>        Backend only: Organization/<id>, Device/<id> or Practitioner/<id> the client acts
                       for: patients' Consents decide what it sees (a Device client may only write
                       Observations about the Device's patient and update its own Device)
  --trusted            Backend only: an operator's own integration: not limited by patient consent,
                       may run admin operations ($integrity-check); shown in "client list"
  --json               Print one JSON object instead of text
  -h, --help           Show this help
`,
  'client list': `Usage: custos client list [--json]

Lists the registered clients (revoked ones marked). Secrets are never shown.

Options:
  --json      Print a JSON array instead of a table
  -h, --help  Show this help
`,
  'client revoke': `Usage: custos client revoke <client_id>

Revokes a client: it can no longer obtain tokens. Exits 1 if there is no such client.

Options:
  -h, --help  Show this help
`,
  user: `Usage: custos user <add|list> [options]

  custos user add --username <u> --password <p> (--patient <id> | --practitioner <id>) [--break-glass] [--json]
  custos user list [--json]

Run "custos user <command> --help" for details.
`,
  'user add': `Usage: custos user add --username <u> --password <p> (--patient <id> | --practitioner <id>) [--break-glass] [--json]

Creates a user account for SMART app launch log-in, linked to a Patient or a Practitioner.

Options:
  --username <u>       1-64 characters from A-Z a-z 0-9 . _ @ -
  --password <p>       At least 8 characters (stored as an scrypt hash)
  --patient <id>       The user is Patient/<id>
  --practitioner <id>  The user is Practitioner/<id>
  --break-glass        Allow emergency (break-glass) access
  --json               Print one JSON object instead of text
  -h, --help           Show this help
`,
  'user list': `Usage: custos user list [--json]

Lists the user accounts. Password hashes are never shown.

Options:
  --json      Print a JSON array instead of a table
  -h, --help  Show this help
`,
} as const;

type UsageKey = keyof typeof USAGE;

/** A usage error: message, then the usage, on stderr; exit 2. */
class UsageError extends Error {
  /** showUsage false: a rejected value (validation), where the whole usage text would bury the message. */
  constructor(message: string, readonly usage: UsageKey, readonly showUsage = true) {
    super(message);
  }
}

/** The registry could not do it (unknown id, ...): message on stderr; exit 1. */
class FailedError extends Error {}

interface Io {
  out: (s: string) => void;
  err: (s: string) => void;
}

const HELP_FLAGS = new Set(['--help', '-h']);

function parse<O extends NonNullable<ParseArgsConfig['options']>>(args: string[], options: O, usage: UsageKey, positionals = false) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: positionals });
  } catch (err) {
    throw new UsageError((err as Error).message, usage);
  }
}

async function withRegistryAsync<T>(env: NodeJS.ProcessEnv, fn: (r: Registry) => Promise<T>): Promise<T> {
  const config = loadConfig(env);
  const db = openAuthDb(config.dataDir);
  try {
    const keys = loadMasterKeys(config.dataDir, config.masterKey);
    return await fn(new Registry(db, keys));
  } finally {
    db.close();
  }
}

function iso(d: Date | undefined): string | undefined {
  return d?.toISOString();
}

function dropUndefined(o: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}

function clientJson(c: ClientRecord, secret?: string): Record<string, unknown> {
  return dropUndefined({
    client_id: c.clientId,
    client_secret: secret,
    type: c.type,
    name: c.name,
    scope: c.scope,
    redirect_uris: c.redirectUris,
    jwks_uri: c.jwksUri,
    jwks: c.jwks,
    actor: c.actor,
    trusted: c.trusted,
    created_at: iso(c.createdAt),
    revoked_at: iso(c.revokedAt),
  });
}

function userJson(u: UserRecord): Record<string, unknown> {
  return dropUndefined({
    account_id: u.accountId,
    username: u.username,
    fhir_user: u.fhirUser,
    break_glass: u.breakGlass,
    created_at: iso(u.createdAt),
    disabled_at: iso(u.disabledAt),
  });
}

/** Columns padded to the widest cell; the last column is not padded. */
function table(header: string[], rows: string[][]): string {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
  return all.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ').trimEnd()).join('\n') + '\n';
}

/** Strip control characters from text shown in a terminal table. */
const printable = (s: string) => s.replace(/[\u0000-\u001f\u007f]/g, '?');

function readJwksFile(file: string): unknown {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read the JWKS file "${file}": ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, 'client add', false);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UsageError(`the JWKS file "${file}" is not JSON: ${(err as Error).message}`, 'client add', false);
  }
}

async function clientAdd(args: string[], env: NodeJS.ProcessEnv, io: Io): Promise<number> {
  const { values } = parse(args, {
    type: { type: 'string' },
    scope: { type: 'string' },
    'redirect-uri': { type: 'string', multiple: true },
    jwks: { type: 'string' },
    name: { type: 'string' },
    actor: { type: 'string' },
    trusted: { type: 'boolean' },
    json: { type: 'boolean' },
  }, 'client add');
  const type = values.type;
  if (type === undefined) throw new UsageError('--type is required (public, confidential or backend)', 'client add');
  if (type !== 'public' && type !== 'confidential' && type !== 'backend') throw new UsageError(`--type must be public, confidential or backend, got "${type}"`, 'client add');
  if (values.scope === undefined) throw new UsageError('--scope is required', 'client add');
  const client: NewClient = { type: type as ClientType, scope: values.scope };
  if (values.name !== undefined) client.name = values.name;
  if (values.jwks !== undefined && /^https?:\/\//i.test(values.jwks)) assertReachableJwksUri(values.jwks, env);
  if (type === 'backend') {
    if (values['redirect-uri']) throw new UsageError('--redirect-uri is for public and confidential clients, not backend ones', 'client add');
    if (values.jwks === undefined) throw new UsageError('--jwks <file|url> is required for a backend client', 'client add');
    if (/^https?:\/\//i.test(values.jwks)) client.jwksUri = values.jwks;
    else client.jwks = readJwksFile(values.jwks) as { keys: object[] };
    if (values.actor !== undefined) client.actor = values.actor;
    if (values.trusted) client.trusted = true;
  } else {
    if (values.jwks !== undefined) {
      if (type === 'public') throw new UsageError('--jwks is for confidential (asymmetric) and backend clients, not public ones', 'client add');
      if (/^https?:\/\//i.test(values.jwks)) client.jwksUri = values.jwks;
      else client.jwks = readJwksFile(values.jwks) as { keys: object[] };
    }
    for (const opt of ['actor', 'trusted'] as const) {
      if (values[opt] !== undefined) throw new UsageError(`--${opt} is only for backend clients`, 'client add');
    }
    if (!values['redirect-uri']?.length) throw new UsageError(`--redirect-uri is required for a ${type} client`, 'client add');
    client.redirectUris = values['redirect-uri'];
  }
  const { client: added, clientSecret } = await withRegistryAsync(env, async (r) => {
    try {
      return r.addClient(client);
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err;
      throw new UsageError(err.message, 'client add', false);
    }
  });
  if (values.json) {
    io.out(JSON.stringify(clientJson(added, clientSecret)) + '\n');
    return 0;
  }
  const lines = [`Registered ${added.type} client${added.name ? ` "${added.name}"` : ''}.`, `  client_id:     ${added.clientId}`];
  if (clientSecret !== undefined) lines.push(`  client_secret: ${clientSecret}`);
  lines.push(`  scope:         ${added.scope}`);
  if (added.redirectUris.length) lines.push(`  redirect_uris: ${added.redirectUris.join(' ')}`);
  if (added.jwksUri) lines.push(`  jwks_uri:      ${added.jwksUri}`);
  if (added.jwks) lines.push(`  jwks:          ${added.jwks.keys.length} key(s) inline`);
  if (added.actor) lines.push(`  actor:         ${added.actor}`);
  if (added.trusted) lines.push('  trusted:       yes');
  if (clientSecret !== undefined) lines.push('', 'The client secret is shown only this once: store it now. It cannot be displayed again.');
  io.out(lines.join('\n') + '\n');
  return 0;
}

async function clientList(args: string[], env: NodeJS.ProcessEnv, io: Io): Promise<number> {
  const { values } = parse(args, { json: { type: 'boolean' } }, 'client list');
  const clients = await withRegistryAsync(env, async (r) => r.listClients());
  if (values.json) {
    io.out(JSON.stringify(clients.map((c) => clientJson(c))) + '\n');
    return 0;
  }
  if (!clients.length) {
    io.out('No clients registered.\n');
    return 0;
  }
  io.out(table(
    ['CLIENT_ID', 'TYPE', 'STATUS', 'TRUSTED', 'NAME', 'CREATED', 'SCOPE'],
    clients.map((c) => [
      c.clientId,
      c.type,
      c.revokedAt ? `REVOKED ${c.revokedAt.toISOString().slice(0, 10)}` : 'active',
      c.trusted ? 'yes' : 'no',
      printable(c.name ?? '-'),
      c.createdAt.toISOString().slice(0, 10),
      c.scope,
    ]),
  ));
  return 0;
}

async function clientRevoke(args: string[], env: NodeJS.ProcessEnv, io: Io): Promise<number> {
  const { positionals } = parse(args, {}, 'client revoke', true);
  if (positionals.length !== 1) throw new UsageError(positionals.length ? 'give exactly one client_id' : 'a client_id is required', 'client revoke');
  const id = positionals[0]!;
  const revoked = await withRegistryAsync(env, async (r) => {
    // listClients, not getClient: revoking needs no secret unsealed.
    const before = r.listClients().find((c) => c.clientId === id);
    if (!before) return undefined;
    r.revokeClient(id);
    return { already: before.revokedAt !== undefined };
  });
  if (!revoked) throw new FailedError(`no client with client_id "${printable(id)}"`);
  io.out(revoked.already ? `Client ${id} was already revoked.\n` : `Revoked client ${id}.\n`);
  return 0;
}

async function userAdd(args: string[], env: NodeJS.ProcessEnv, io: Io): Promise<number> {
  const { values } = parse(args, {
    username: { type: 'string' },
    password: { type: 'string' },
    patient: { type: 'string' },
    practitioner: { type: 'string' },
    'break-glass': { type: 'boolean' },
    json: { type: 'boolean' },
  }, 'user add');
  if (values.username === undefined) throw new UsageError('--username is required', 'user add');
  if (values.password === undefined) throw new UsageError('--password is required', 'user add');
  if ((values.patient === undefined) === (values.practitioner === undefined)) {
    throw new UsageError('give exactly one of --patient <id> or --practitioner <id>', 'user add');
  }
  const fhirUser = values.patient !== undefined ? `Patient/${values.patient}` : `Practitioner/${values.practitioner}`;
  const user = await withRegistryAsync(env, async (r) => {
    try {
      return await r.addUser({ username: values.username!, password: values.password!, fhirUser, breakGlass: values['break-glass'] === true });
    } catch (err) {
      if (!(err instanceof ValidationError)) throw err;
      throw new UsageError(err.message, 'user add', false);
    }
  });
  if (values.json) {
    io.out(JSON.stringify({ account_id: user.accountId, username: user.username, fhir_user: user.fhirUser, break_glass: user.breakGlass }) + '\n');
    return 0;
  }
  io.out(`Created user ${user.username} (${user.fhirUser}${user.breakGlass ? ', break-glass' : ''}).\n  account_id: ${user.accountId}\n`);
  return 0;
}

async function userList(args: string[], env: NodeJS.ProcessEnv, io: Io): Promise<number> {
  const { values } = parse(args, { json: { type: 'boolean' } }, 'user list');
  const users = await withRegistryAsync(env, async (r) => r.listUsers());
  if (values.json) {
    io.out(JSON.stringify(users.map(userJson)) + '\n');
    return 0;
  }
  if (!users.length) {
    io.out('No users.\n');
    return 0;
  }
  io.out(table(
    ['ACCOUNT_ID', 'USERNAME', 'FHIR_USER', 'STATUS', 'BREAK_GLASS', 'CREATED'],
    users.map((u) => [
      u.accountId,
      u.username,
      u.fhirUser,
      u.disabledAt ? `DISABLED ${u.disabledAt.toISOString().slice(0, 10)}` : 'active',
      u.breakGlass ? 'yes' : 'no',
      u.createdAt.toISOString().slice(0, 10),
    ]),
  ));
  return 0;
}

const COMMANDS: Record<string, (args: string[], env: NodeJS.ProcessEnv, io: Io) => Promise<number>> = {
  'client add': clientAdd,
  'client list': clientList,
  'client revoke': clientRevoke,
  'user add': userAdd,
  'user list': userList,
};

/**
 * Run `client ...` or `user ...` (argv starts with the group name). Returns the exit code:
 * 0 done, 1 could not be done, 2 usage or validation error.
 */
export async function runAdminCommand(argv: string[], env: NodeJS.ProcessEnv, io: Io = {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
}): Promise<number> {
  if (argv[0] === 'launch') return launchCommand(argv.slice(1), env, io);
  const [group, sub, ...rest] = argv;
  if (group !== 'client' && group !== 'user') {
    io.err(`custos: unknown command "${group ?? ''}"\n`);
    return 2;
  }
  if (sub === undefined) {
    io.err(`custos ${group}: a command is required\n\n${USAGE[group]}`);
    return 2;
  }
  if (HELP_FLAGS.has(sub) || sub === 'help') {
    io.out(USAGE[group]);
    return 0;
  }
  const key = `${group} ${sub}`;
  const run = COMMANDS[key];
  if (!run) {
    io.err(`custos ${group}: unknown command "${sub}"\n\n${USAGE[group]}`);
    return 2;
  }
  if (rest.some((a) => HELP_FLAGS.has(a))) {
    io.out(USAGE[key as UsageKey]);
    return 0;
  }
  try {
    return await run(rest, env, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`custos ${key}: ${err.message}\n${err.showUsage ? `\n${USAGE[err.usage]}` : `Run "custos ${err.usage} --help" for usage.\n`}`);
      return 2;
    }
    io.err(`custos ${key}: ${(err as Error).message}\n`);
    return 1;
  }
}

const LAUNCH_USAGE = `Usage: custos launch --patient <id> [--encounter <id>] [--minutes <n>] [--json]

Mints an opaque EHR launch id (SMART EHR launch) for a patient, valid --minutes (default 60).
Open the app's launch URL with it: <app launch url>?iss=<BASE_URL>&launch=<id>.
The app asks for the "launch" scope; the signed-in practitioner then works with this patient.

Options:
  --patient <id>     The Patient in context
  --encounter <id>   The Encounter in context (optional)
  --minutes <n>      Lifetime of the launch id (1-1440, default 60)
  --json             Print one JSON object {launch, patient, iss, expires_in}
  -h, --help         Show this help
`;

async function launchCommand(args: string[], env: NodeJS.ProcessEnv, io: Io): Promise<number> {
  if (args.some((a) => HELP_FLAGS.has(a))) {
    io.out(LAUNCH_USAGE);
    return 0;
  }
  let values: { patient?: string; encounter?: string; minutes?: string; json?: boolean };
  try {
    ({ values } = parseArgs({ args, options: { patient: { type: 'string' }, encounter: { type: 'string' }, minutes: { type: 'string' }, json: { type: 'boolean' } }, strict: true }));
  } catch (err) {
    io.err(`custos launch: ${(err as Error).message}\n\n${LAUNCH_USAGE}`);
    return 2;
  }
  const idPattern = /^[A-Za-z0-9\-.]{1,64}$/;
  const minutes = values.minutes === undefined ? 60 : Number(values.minutes);
  if (!values.patient || !idPattern.test(values.patient) || (values.encounter !== undefined && !idPattern.test(values.encounter))
    || !Number.isInteger(minutes) || minutes < 1 || minutes > 1440) {
    io.err(`custos launch: --patient <id> is required; ids are 1-64 characters [A-Za-z0-9-.]; --minutes 1-1440\n\n${LAUNCH_USAGE}`);
    return 2;
  }
  const config = loadConfig(env);
  const db = openAuthDb(config.dataDir);
  try {
    const launch = new LaunchContexts(db).mint({ patient: values.patient, encounter: values.encounter }, minutes * 60);
    if (values.json) io.out(JSON.stringify({ launch, patient: values.patient, ...(values.encounter ? { encounter: values.encounter } : {}), iss: config.baseUrl, expires_in: minutes * 60 }) + '\n');
    else io.out(`launch=${launch}\niss=${config.baseUrl}\nvalid for ${minutes} minutes: open <app launch url>?iss=${encodeURIComponent(config.baseUrl)}&launch=${launch}\n`);
    return 0;
  } finally {
    db.close();
  }
}

/**
 * The token endpoint refuses to fetch key sets from loopback/private addresses unless the host
 * is listed in JWKS_PRIVATE_HOSTS (SSRF protection): say so at registration, not at the first token.
 */
function assertReachableJwksUri(uri: string, env: NodeJS.ProcessEnv): void {
  let host: string;
  try {
    host = new URL(uri).hostname.replace(/^\[|\]$/g, '');
  } catch {
    return; // the registry reports the malformed URL
  }
  const privateLiteral = host === 'localhost' || host.endsWith('.localhost') || host === '::1' || /^(127\.|10\.|192\.168\.|169\.254\.|172\.(1[6-9]|2\d|3[01])\.|0\.)/.test(host) || /^f[cd]/i.test(host);
  if (privateLiteral && !loadConfig(env).auth.jwksPrivateHosts.includes(host)) {
    throw new UsageError(`--jwks ${uri} is on a loopback/private address, which the token endpoint will not fetch; list "${host}" in JWKS_PRIVATE_HOSTS (for the server too) to allow it`, 'client add', false);
  }
}
