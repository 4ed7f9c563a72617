#!/usr/bin/env node
// Compiles every contracts/*.sol with solc-js (in-process, no binary download) and writes
// dist/contracts/<Name>.json = { contractName, abi, bytecode, deployedBytecode, compiler }.
// Part of `npm run build`. Exits non-zero with the compiler's messages on any error.
// Skips the compiler when sources, settings and compiler version are unchanged since the
// last successful run (dist/contracts/.build-stamp.json) and its artifacts are all there,
// so repeated builds stay fast (`--force` recompiles anyway).
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const srcDir = path.join(root, 'contracts');
const outDir = path.join(root, 'dist', 'contracts');
const stampFile = path.join(outDir, '.build-stamp.json');

/** Compiler settings recorded in every artifact. `cancun` runs on anvil 1.x (default hardfork: latest) and on current L1/L2s. */
const settings = {
  optimizer: { enabled: true, runs: 10_000 },
  evmVersion: 'cancun',
  outputSelection: { '*': { '*': ['abi', 'evm.bytecode.object', 'evm.deployedBytecode.object'] } },
};

function fail(msg) {
  process.stderr.write(`build-contracts: ${msg}\n`);
  process.exit(1);
}

if (!fs.existsSync(srcDir)) fail(`no contracts directory at ${srcDir}`);
const files = fs.readdirSync(srcDir).filter((f) => f.endsWith('.sol')).sort();
if (files.length === 0) fail(`no .sol files in ${srcDir}`);

const sources = Object.fromEntries(files.map((f) => [`contracts/${f}`, { content: fs.readFileSync(path.join(srcDir, f), 'utf8') }]));
const solcPkgVersion = require('solc/package.json').version;
const inputHash = createHash('sha256').update(JSON.stringify({ sources, settings, solcPkgVersion })).digest('hex');

const force = process.argv.includes('--force');
if (!force && upToDate()) process.exit(0);

function upToDate() {
  try {
    const stamp = JSON.parse(fs.readFileSync(stampFile, 'utf8'));
    return stamp.inputHash === inputHash && Array.isArray(stamp.artifacts) && stamp.artifacts.length > 0
      && stamp.artifacts.every((n) => fs.existsSync(path.join(outDir, `${n}.json`)));
  } catch {
    return false;
  }
}

const solc = require('solc');
const input = { language: 'Solidity', sources, settings };
const output = JSON.parse(solc.compile(JSON.stringify(input)));
const messages = output.errors ?? [];
for (const m of messages) {
  if (m.severity !== 'error') process.stderr.write(`${m.formattedMessage ?? m.message}\n`);
}
const errors = messages.filter((m) => m.severity === 'error');
if (errors.length > 0) {
  for (const e of errors) process.stderr.write(`${e.formattedMessage ?? e.message}\n`);
  fail(`solc ${solc.version()}: ${errors.length} error(s)`);
}

fs.mkdirSync(outDir, { recursive: true });
// Stale artifacts (renamed or removed contracts) go; so does the stamp until this run succeeds.
for (const f of fs.readdirSync(outDir)) if (f.endsWith('.json')) fs.rmSync(path.join(outDir, f));
const { outputSelection: _omit, ...recorded } = settings;
const names = [];
for (const [file, contracts] of Object.entries(output.contracts ?? {})) {
  for (const [contractName, c] of Object.entries(contracts)) {
    if (names.includes(contractName)) fail(`two contracts named ${contractName} (${file})`);
    names.push(contractName);
    const artifact = {
      contractName,
      sourceName: file,
      abi: c.abi,
      bytecode: `0x${c.evm.bytecode.object}`,
      deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
      compiler: { version: solc.version(), settings: recorded },
    };
    fs.writeFileSync(path.join(outDir, `${contractName}.json`), `${JSON.stringify(artifact, null, 2)}\n`);
  }
}
fs.writeFileSync(stampFile, `${JSON.stringify({ inputHash, artifacts: names })}\n`);
process.stdout.write(`build-contracts: ${names.join(', ')} (solc ${solc.version()})\n`);
