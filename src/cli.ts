#!/usr/bin/env node
import { loadConfig } from './config.js';
import { createLogger } from './logger.js';

const HELP = `custos - FHIR R4 server with encrypted storage, patient consent and ledger anchoring

Usage: custos <command> [options]

Commands:
  serve            Start the FHIR server (base URL /fhir)
  client           Manage SMART OAuth clients: add, list, revoke (see "custos client --help")
  user             Manage SMART user accounts: add, list (see "custos user --help")
  launch           Mint an EHR launch id for a patient (see "custos launch --help")
  verify           Check a resource and its $verify proof against the chain, without the server
                   (see "custos verify --help")
  integrity-check  Re-read every stored version and report tampering (see "custos integrity-check --help")
  audit export     Write the audit trail as NDJSON for a SIEM (see "custos audit --help")
  consent          A patient's consent key: bind it, sign and revoke Consents, cancel a key recovery;
                   operator: recover a lost key, deploy a ConsentRegistry (see "custos consent --help")
  help             Show this help

Environment (read once at start):
  PORT             HTTP port (default 8080; 0 = any free port)
  HOST             Interface to bind (default 127.0.0.1)
  DATA_DIR         Database and keys (default ./data; created on first start)
  BASE_URL         Public FHIR base URL (default http://HOST:PORT/fhir)
  LOG_LEVEL        pino level: fatal, error, warn, info, debug, trace (default info)
  CUSTOS_MASTER_KEY  Base64 32-byte master key (default: DATA_DIR/keys/master.key, generated, mode 0600)
  SEARCH_DEFAULT_COUNT, SEARCH_MAX_COUNT  Search page size default (20) and maximum (1000)
  MAX_BODY_BYTES   Largest request body (default 16 MiB; larger is a 413)
  WRITE_WORKERS, READ_WORKERS  Worker threads for validation+indexing and for searches
                   (default cores-1 and cores; 0 = on the main thread)
  ACCESS_TOKEN_TTL, SIGNING_KEY_ROTATION_DAYS, JWKS_PRIVATE_HOSTS  SMART auth (see README)
  LEDGER           off to turn ledger anchoring off (default: an embedded anvil under DATA_DIR)
  LEDGER_RPC_URL, LEDGER_KEY | LEDGER_KEY_FILE, LEDGER_CONTRACT, LEDGER_CHAIN_ID  An external chain
  LEDGER_NODE_PORT, LEDGER_BATCH_SIZE (10000), LEDGER_BATCH_MS (2000), LEDGER_CONFIRMATIONS (1)
  AUDIT            on (default): an AuditEvent for every FHIR interaction; off: none
                   AUDIT_FLUSH_MS (500): reads are durable in the trail within this many ms
  CONSENT_CHAIN    required: a Consent grants only while the patient's signature of its version is
                   active in the ConsentRegistry contract; off: on its FHIR status alone
                   (default required with the ledger on, off with LEDGER=off; required needs the ledger)
  CONSENT_SYNC_MS  Largest age of the server's view of the contract at a decision (default 1000)
  CONSENT_RECOVERY_DAYS  Delay of an operator key recovery, set when the contract is deployed (default 7)
  CONSENT_CONTRACT ConsentRegistry address (required on an external chain; the embedded node deploys its own)
  CONSENT_KEY | CONSENT_KEY_FILE  Relayer key on an external chain (default: the ledger's key)
  CONSENT_BASE     deny (default) or permit: what applies where no Consent decides
  BREAK_GLASS_MINUTES  How long an emergency (break-the-glass) access lasts (default 60)

Examples:
  custos serve
  PORT=8081 DATA_DIR=./data2 custos serve
  custos client add --type backend --jwks ./device-keys.json --scope "system/Observation.c system/Device.u" --actor Device/glucometer-1 --json
  custos client add --type public --redirect-uri https://app.example/callback --scope "launch/patient openid fhirUser patient/*.rs"
  custos user add --username alice --password '...' --patient 123
  curl http://127.0.0.1:8080/fhir/metadata
`;

async function serve(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(config.logLevel);
  // Loaded here so admin commands start fast and without the server's dependencies.
  const { startServer } = await import('./server.js');
  const running = await startServer(config, { logger });
  logger.info({ url: `${running.url}/fhir`, portal: new URL('/portal/', config.baseUrl).href, dataDir: config.dataDir, baseUrl: config.baseUrl }, 'custos listening');
  if (running.app.auth.registry.listClients().every((c) => c.clientId === running.app.portalClientId)) {
    logger.info({
      smart_configuration: `${config.baseUrl}/.well-known/smart-configuration`,
      token_endpoint: running.app.auth.endpoints.token,
      steps: [
        'Every FHIR request except /metadata needs a Bearer token. To get a first one (SMART Backend Services):',
        '1. make an ES384 (or RS384) key pair and save its public JWK Set, e.g. keys.json',
        `2. DATA_DIR=${config.dataDir} custos client add --type backend --jwks keys.json --scope "system/*.rs" --trusted --json (--trusted: an operator's own integration, not limited by patient consent; a partner system registers with --actor Organization/<id> instead)`,
        `3. POST ${running.app.auth.endpoints.token} with grant_type=client_credentials, scope, client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer and client_assertion = a JWT signed with your private key (iss=sub=client_id, aud=the token endpoint, jti, exp <= 5 min)`,
        'Apps (SMART App Launch): custos client add --type public --redirect-uri <uri> --scope "..." and custos user add ...; see README "Authorization".',
        `Patients: custos user add --username <name> --password <password> --patient <Patient id> gives a patient an account for the portal at ${new URL('/portal/', config.baseUrl).href}`,
      ],
    }, 'no OAuth clients registered yet: how to get a first token');
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    running.close().then(() => process.exit(0), (err: unknown) => {
      logger.error({ err }, 'error during shutdown');
      process.exit(1);
    });
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === 'help' || cmd === '--help' || cmd === '-h') {
    process.stdout.write(HELP);
    return cmd ? 0 : 1;
  }
  if (cmd === '--version' || cmd === '-v') {
    process.stdout.write('custos 0.1.0\n');
    return 0;
  }
  if (cmd === 'serve') {
    if (rest.includes('--help') || rest.includes('-h')) {
      process.stdout.write(HELP);
      return 0;
    }
    await serve();
    return -1;
  }
  if (cmd === 'client' || cmd === 'user' || cmd === 'launch') {
    const { runAdminCommand } = await import('./admin-cli.js');
    return runAdminCommand(argv, process.env);
  }
  if (cmd === 'verify') {
    const { runVerifyCommand } = await import('./ledger/verify-cli.js');
    return runVerifyCommand(rest);
  }
  if (cmd === 'consent') {
    const { runConsentCommand } = await import('./consent/consent-cli.js');
    return runConsentCommand(rest, process.env);
  }
  if (cmd === 'audit') {
    const { runAuditCommand } = await import('./audit/export-cli.js');
    return runAuditCommand(rest, process.env);
  }
  if (cmd === 'integrity-check') {
    const { runIntegrityCommand } = await import('./ledger/integrity-cli.js');
    return runIntegrityCommand(rest, process.env);
  }
  process.stderr.write(`custos: unknown command "${cmd}"\n\n${HELP}`);
  return 2;
}

main(process.argv.slice(2)).then((code) => {
  if (code >= 0) process.exit(code);
}, (err: unknown) => {
  process.stderr.write(`custos: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
