/** `custos audit export`: the audit trail as NDJSON for an external SIEM, read-only from DATA_DIR. */
import type { AuditEvent } from '@medplum/fhirtypes';
import { parseArgs } from 'node:util';
import { loadConfig } from '../config.js';
import { openDataDir } from '../data-dir.js';
import { loadDefinitions } from '../fhir/definitions.js';
import { parseSearch } from '../fhir/search/parse.js';
import { ProofBuilder } from '../ledger/proofs.js';
import { contentHash, openSqliteReader } from '../store/index.js';

const USAGE = `Usage: custos audit export --since <date> [--until <date>] [--format ndjson] [--proofs]

Writes the AuditEvents recorded since <date> (a FHIR date or instant, e.g. 2026-11-01 or
2026-11-01T00:00:00Z), oldest first, one JSON object per line (NDJSON) to stdout, for an external
SIEM. Reads DATA_DIR's database read-only (safe while the server runs); progress on stderr.
With --proofs each line is {"resource": <AuditEvent>, "proof": <its ledger proof>}: the content
hash recomputed from what is stored, and its Merkle inclusion proof in an anchored batch (leaf
index, tree size, audit path, root, chain, contract, tx), as $verify gives it; check one against
the chain with custos verify.

Environment: DATA_DIR, CUSTOS_MASTER_KEY
Exit status: 0 written, 2 usage or setup error
`;

const PAGE = 500;
const DATE = /^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

export interface AuditCliIo { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream }

export async function runAuditCommand(argv: string[], env: NodeJS.ProcessEnv, io: AuditCliIo = { stdout: process.stdout, stderr: process.stderr }): Promise<number> {
  const [sub, ...rest] = argv;
  if (!sub || sub === '--help' || sub === '-h' || sub === 'help') {
    io.stdout.write(USAGE);
    return sub ? 0 : 2;
  }
  if (sub !== 'export') {
    io.stderr.write(`custos audit: unknown command "${sub}"\n\n${USAGE}`);
    return 2;
  }
  let values: { since?: string; until?: string; format?: string; proofs?: boolean; help?: boolean };
  try {
    ({ values } = parseArgs({ args: rest, strict: true, allowPositionals: false, options: { since: { type: 'string' }, until: { type: 'string' }, format: { type: 'string' }, proofs: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } } }));
  } catch (err) {
    io.stderr.write(`custos audit export: ${(err as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    io.stdout.write(USAGE);
    return 0;
  }
  const problems: string[] = [];
  if (!values.since || !DATE.test(values.since)) problems.push('--since <date> is required (e.g. 2026-11-01)');
  if (values.until !== undefined && !DATE.test(values.until)) problems.push('--until must be a date or instant');
  if (values.format !== undefined && values.format !== 'ndjson') problems.push('--format: only ndjson is supported');
  if (problems.length) {
    io.stderr.write(`custos audit export: ${problems.join('; ')}\n\n${USAGE}`);
    return 2;
  }
  let reader: ReturnType<typeof openSqliteReader>;
  try {
    const opened = openDataDir(loadConfig(env));
    loadDefinitions();
    reader = openSqliteReader(opened);
  } catch (err) {
    io.stderr.write(`custos audit export: ${(err as Error).message}\n`);
    return 2;
  }
  try {
    const params: Array<[string, string]> = [['date', `ge${values.since}`], ['_sort', 'date']];
    if (values.until) params.push(['date', `le${values.until}`]);
    const proofs = values.proofs ? new ProofBuilder(reader.ledger()) : undefined;
    let written = 0;
    for (let offset = 0; ; offset += PAGE) {
      const q = parseSearch('AuditEvent', params, { strict: true, defaultCount: PAGE, maxCount: PAGE }).query;
      Object.assign(q, { offset, total: 'none' });
      const page = await reader.search(q);
      for (const v of page.matches) {
        const event = v.resource as AuditEvent;
        const line = `${JSON.stringify(proofs ? { resource: event, proof: proofs.proof('AuditEvent', v.id, v.versionId, contentHash(event)) ?? null } : event)}\n`;
        if (!io.stdout.write(line)) await new Promise((r) => io.stdout.once('drain', r));
        written++;
      }
      io.stderr.write(`audit export: ${written} AuditEvents\n`);
      if (!page.hasMore) break;
    }
    return 0;
  } finally {
    reader.close();
  }
}
