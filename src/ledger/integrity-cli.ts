/** `custos integrity-check`: scan DATA_DIR's database for tampering (issue 6), read-only. */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadConfig, type Config } from '../config.js';
import { openDataDir } from '../data-dir.js';
import { loadDefinitions } from '../fhir/definitions.js';
import { AnchorRegistryClient } from './anchor-registry.js';
import { scanIntegrity, type IntegrityReport } from './integrity.js';

const USAGE = `Usage: custos integrity-check [--json] [--no-chain] [--rpc <url>]

Re-reads every version stored in DATA_DIR (read-only; safe while the server runs), decrypts it,
recomputes its content hash and compares it with the recorded one; checks that every ledger
batch's recorded hashes still give its recorded root and that confirmed roots are on chain; and
compares the search-index rows of current versions with rows re-derived from them.

Exit status: 0 no findings, 1 findings (each is named), 2 usage error or the check could not run.

Options:
  --json        Print one JSON object (the report) instead of a summary; progress stays on stderr
  --no-chain    Skip the on-chain check of confirmed batch roots
  --rpc <url>   JSON-RPC URL of the chain (default: LEDGER_RPC_URL for an external chain; for the
                embedded node http://127.0.0.1:LEDGER_NODE_PORT, which must be running - the
                server's $ledger-status reports its rpcUrl)
  -h, --help    Show this help

Environment: DATA_DIR, CUSTOS_MASTER_KEY, LEDGER, LEDGER_RPC_URL, LEDGER_CONTRACT, LEDGER_CHAIN_ID,
LEDGER_NODE_PORT (as for "custos serve").
`;

export interface IntegrityCliIo {
  stdout: { write(s: string): unknown };
  stderr: { write(s: string): unknown };
  /** How often progress is printed on stderr during a scan (default 3000 ms). */
  progressMs?: number;
}

export async function runIntegrityCommand(argv: string[], env: NodeJS.ProcessEnv, io: IntegrityCliIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  let values: { json?: boolean; 'no-chain'?: boolean; rpc?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args: argv, allowPositionals: false, strict: true,
      options: { json: { type: 'boolean' }, 'no-chain': { type: 'boolean' }, rpc: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    }));
  } catch (err) {
    io.stderr.write(`custos integrity-check: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    io.stdout.write(USAGE);
    return 0;
  }
  if (values.rpc !== undefined && !/^https?:\/\/\S+$/.test(values.rpc)) {
    io.stderr.write(`custos integrity-check: --rpc must be an http(s) URL\n\n${USAGE}`);
    return 2;
  }

  let config: Config;
  try {
    config = loadConfig(env);
  } catch (err) {
    io.stderr.write(`custos integrity-check: ${(err as Error).message}\n`);
    return 2;
  }
  let opened: ReturnType<typeof openDataDir>;
  try {
    opened = openDataDir(config);
  } catch (err) {
    io.stderr.write(`custos integrity-check: ${(err as Error).message}\n`);
    return 2;
  }
  const { file, keys } = opened;

  let chain: AnchorRegistryClient | undefined;
  try {
    loadDefinitions();
    const c = values['no-chain'] ? { skip: 'turned off (--no-chain)' } : await connectChain(config, values.rpc);
    chain = c.chain;
    if (c.skip) io.stderr.write(`integrity-check: chain check skipped: ${c.skip}\n`);
    io.stderr.write(`integrity-check: scanning ${file}\n`);

    const every = io.progressMs ?? 3000;
    let lastPrint = Date.now();
    const report = await scanIntegrity({
      file, keys, ...(chain ? { chain } : { skipChain: c.skip }),
      onProgress: (p) => {
        if (Date.now() - lastPrint < every) return;
        lastPrint = Date.now();
        io.stderr.write(p.phase === 'versions'
          ? `integrity-check: ${p.versionsChecked} / ${p.versionsTotal} versions checked\n`
          : p.phase === 'audit'
            ? `integrity-check: ${p.versionsChecked} versions, ${p.auditEventsChecked} / ${p.auditEventsTotal} AuditEvents checked\n`
            : `integrity-check: ${p.versionsChecked} versions, ${p.auditEventsChecked} AuditEvents, ${p.batchesChecked} batches checked\n`);
      },
    });
    if (values.json) io.stdout.write(`${JSON.stringify({ database: file, ...report })}\n`);
    else io.stdout.write(summary(file, report));
    return report.ok ? 0 : 1;
  } catch (err) {
    io.stderr.write(`custos integrity-check: the check could not run: ${(err as Error).message}\n`);
    return 2;
  } finally {
    chain?.close();
  }
}

interface ContractFile { address?: string; chainId?: number }

/** A read-only client of the AnchorRegistry this data directory anchors to, or why there is none. */
async function connectChain(config: Config, rpc?: string): Promise<{ chain?: AnchorRegistryClient; skip?: string }> {
  const l = config.ledger;
  if (l.mode === 'off') return { skip: 'ledger anchoring is off (LEDGER=off)' };
  let rpcUrl: string | undefined;
  let address: string | undefined;
  let chainId: number | undefined;
  if (l.mode === 'external') {
    rpcUrl = rpc ?? l.rpcUrl;
    address = l.contract;
    chainId = l.chainId;
    if (!address) return { skip: 'LEDGER_CONTRACT is not set' };
  } else {
    const contractFile = path.join(config.dataDir, 'chain', 'contract.json');
    let remembered: ContractFile;
    try {
      remembered = JSON.parse(fs.readFileSync(contractFile, 'utf8')) as ContractFile;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { skip: `no contract was deployed for this data directory (${contractFile} is missing)` };
      return { skip: `${contractFile} cannot be read: ${(err as Error).message}` };
    }
    if (typeof remembered.address !== 'string') return { skip: `${contractFile} names no contract address` };
    address = remembered.address;
    chainId = typeof remembered.chainId === 'number' ? remembered.chainId : undefined;
    rpcUrl = rpc ?? (l.nodePort ? `http://127.0.0.1:${l.nodePort}` : undefined);
    if (!rpcUrl) {
      return { skip: 'the embedded node\'s port is not known: set LEDGER_NODE_PORT as the server has it, or pass --rpc <url> (the server\'s $ledger-status reports rpcUrl)' };
    }
  }
  try {
    return { chain: await AnchorRegistryClient.connect({ rpcUrl: rpcUrl!, address, expectedChainId: chainId, txTimeoutMs: 30_000 }) };
  } catch (err) {
    const why = (err as Error).message.split('\n')[0];
    return { skip: `the chain at ${rpcUrl} is not reachable or has no AnchorRegistry at ${address} (${why})${l.mode === 'embedded' ? '; the embedded node runs only while the server does' : ''}` };
  }
}

function summary(file: string, r: IntegrityReport): string {
  const lines = [
    `Integrity check of ${file}`,
    `  versions checked:   ${r.versionsChecked} (index rows of ${r.indexesChecked} current versions compared)`,
    `  AuditEvents:        ${r.auditEventsChecked} checked (hash, journal rows, sequence)`,
    `  ledger batches:     ${r.batchesChecked} checked`,
    r.chain.checked
      ? `  chain:              ${r.chain.rootsChecked} confirmed roots looked up in ${r.chain.contract} on chain ${r.chain.chainId}`
        + (r.chain.otherContract ? ` (${r.chain.otherContract} batches confirmed on another contract not looked up)` : '')
      : `  chain:              not checked${r.chain.skipped ? ` (${r.chain.skipped})` : ''}`,
  ];
  const total = r.findings.length + r.findingsOmitted;
  if (total === 0) {
    lines.push(`OK: no findings (${(r.durationMs / 1000).toFixed(1)} s)`);
  } else {
    lines.push(`FINDINGS: ${total}`);
    const width = Math.max(...r.findings.map((f) => f.kind.length));
    for (const f of r.findings) lines.push(`  ${f.kind.padEnd(width)}  ${f.detail}`);
    if (r.findingsOmitted) lines.push(`  ... and ${r.findingsOmitted} more not listed`);
    lines.push(`TAMPERING DETECTED: ${total} finding${total === 1 ? '' : 's'} (${(r.durationMs / 1000).toFixed(1)} s)`);
  }
  return `${lines.join('\n')}\n`;
}
