import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** What `scripts/build-contracts.mjs` writes to `dist/contracts/<Name>.json`. */
export interface ContractArtifact {
  contractName: string;
  /** e.g. `contracts/AnchorRegistry.sol` */
  sourceName?: string;
  /** Solidity JSON ABI, as ethers' `InterfaceAbi` accepts it. */
  abi: ReadonlyArray<Record<string, unknown>>;
  /** Creation bytecode, 0x-prefixed. */
  bytecode: string;
  /** Runtime bytecode, 0x-prefixed. */
  deployedBytecode: string;
  compiler: { version: string; settings: Record<string, unknown> };
}

/**
 * The artifacts directory as seen from a module at `moduleUrl`: compiled, the module is
 * `dist/ledger/*.js` and the artifacts are `dist/contracts`; run from source (tsx), it is
 * `src/ledger/*.ts` and the artifacts are the repository's `dist/contracts` (built by `npm run build`).
 */
export function artifactsDirFor(moduleUrl: string): string {
  const here = path.dirname(fileURLToPath(moduleUrl));
  return /\.[cm]?ts$/.test(moduleUrl) ? path.resolve(here, '..', '..', 'dist', 'contracts') : path.resolve(here, '..', 'contracts');
}

/** Where this module looks for contract artifacts. */
export const ARTIFACTS_DIR = artifactsDirFor(import.meta.url);

const cache = new Map<string, ContractArtifact>();

/**
 * Reads `dist/contracts/<name>.json` (see {@link artifactsDirFor}); `dir` overrides the directory.
 * Throws a message that says to run `npm run build` when it is missing or incomplete.
 */
export function loadArtifact(name: string, dir: string = ARTIFACTS_DIR): ContractArtifact {
  if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new Error(`Invalid contract name "${name}"`);
  const file = path.join(dir, `${name}.json`);
  const cached = cache.get(file);
  if (cached) return cached;
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error(`Contract artifact ${file} not found: run \`npm run build\` (it compiles contracts/*.sol into dist/contracts)`);
    }
    throw err;
  }
  let artifact: ContractArtifact;
  try {
    artifact = JSON.parse(text) as ContractArtifact;
  } catch (err) {
    throw new Error(`Contract artifact ${file} is not valid JSON (${(err as Error).message}): run \`npm run build\` again`);
  }
  const hex = (v: unknown) => typeof v === 'string' && /^0x(?:[0-9a-fA-F]{2})+$/.test(v);
  if (artifact.contractName !== name || !Array.isArray(artifact.abi) || !hex(artifact.bytecode) || !hex(artifact.deployedBytecode)) {
    throw new Error(`Contract artifact ${file} is incomplete (no ABI or bytecode for ${name}): run \`npm run build\` again`);
  }
  cache.set(file, artifact);
  return artifact;
}
