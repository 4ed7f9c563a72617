import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { HDNodeWallet } from 'ethers';
import type { Logger } from 'pino';

/** A running local chain node (anvil) started by {@link startLocalNode}. */
export interface LocalNode {
  rpcUrl: string;
  chainId: number;
  port: number;
  /** `${stateDir}/anvil-state.json` */
  stateFile: string;
  /** SIGTERM (anvil dumps its state and exits), SIGKILL after 5 s. Idempotent. */
  stop(): Promise<void>;
  /** Resolves when anvil has exited, for whatever reason (stop() or a crash), so a supervisor can restart it. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface StartLocalNodeOptions {
  /** Directory for `anvil-state.json` (created 0700 when missing). */
  stateDir: string;
  /** Loopback port; default: a free one. */
  port?: number;
  /** Default 31337. */
  chainId?: number;
  logger?: Logger;
  /** Seconds between periodic state dumps (default 10); a crash of anvil itself loses at most this much. Each dump rewrites the whole file (about 5 KB per anchor transaction so far). */
  stateIntervalS?: number;
  /** How long to wait for the RPC to answer (default 60 s; loading a large state takes a while). */
  startTimeoutMs?: number;
  /**
   * The one web origin whose pages may call the node's RPC (the patient portal checks proofs
   * against the chain itself); default none (CORS off). Never "*": a page of any other site the
   * patient visits could otherwise drive the node's development methods.
   */
  allowOrigin?: string;
  /** Path of the anvil executable; default: the one inside `@foundry-rs/anvil`'s platform package. */
  binary?: string;
}

export const STATE_FILE_NAME = 'anvil-state.json';
const DEFAULT_CHAIN_ID = 31337;
const STOP_GRACE_MS = 5000;
const STDERR_KEEP = 16 * 1024;

const PLATFORM_PACKAGES: Record<string, Record<string, string>> = {
  linux: { x64: 'anvil-linux-amd64', arm64: 'anvil-linux-arm64' },
  darwin: { x64: 'anvil-darwin-amd64', arm64: 'anvil-darwin-arm64' },
  win32: { x64: 'anvil-win32-amd64' },
};

/**
 * The anvil executable shipped by `@foundry-rs/anvil` in its optional, per-platform dependency
 * (e.g. `@foundry-rs/anvil-linux-amd64/bin/anvil`). The wrapper package's postinstall is not
 * needed (and not approved): the binary comes from the npm tarball itself.
 */
export function anvilBinary(): string {
  const platformPkg = PLATFORM_PACKAGES[process.platform]?.[process.arch];
  if (!platformPkg) {
    throw new Error(`anvil is not available for ${process.platform}/${process.arch}: set LEDGER_RPC_URL to use an external EVM node`);
  }
  const exe = process.platform === 'win32' ? 'anvil.exe' : 'anvil';
  const hint = `reinstall with \`npm ci\` (optional dependencies must not be omitted), or set LEDGER_RPC_URL to use an external EVM node`;
  const require = createRequire(import.meta.url);
  let wrapperPkgJson: string;
  try {
    wrapperPkgJson = require.resolve('@foundry-rs/anvil/package.json');
  } catch {
    throw new Error(`anvil binary not found: the npm package @foundry-rs/anvil is not installed; ${hint}`);
  }
  let file: string;
  try {
    // Resolved from the wrapper package, where npm installs its optional dependencies.
    file = createRequire(wrapperPkgJson).resolve(`@foundry-rs/${platformPkg}/bin/${exe}`);
  } catch {
    throw new Error(`anvil binary not found: @foundry-rs/${platformPkg} (an optional dependency of @foundry-rs/anvil, holding bin/${exe}) is not installed; ${hint}`);
  }
  try {
    fs.accessSync(file, fs.constants.X_OK);
  } catch {
    throw new Error(`anvil binary ${file} is not executable; ${hint}`);
  }
  return file;
}

/** Whether something already accepts connections on 127.0.0.1:`port`. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ host: '127.0.0.1', port });
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * POSIX shell prelude that makes anvil die with its parent: a background `cat` holds the read
 * end of a pipe whose only writer is this Node process; when the process goes away (even by
 * SIGKILL) the pipe closes and anvil gets SIGTERM (so it still dumps its state). `exec`
 * keeps anvil at the spawned PID. anvil has no `--ppid`-style flag. `umask 077`: the chain state
 * anvil writes is owner-only, like the rest of the data directory.
 */
const WATCHDOG = 'umask 077; exec 3<&0; (cat <&3 >/dev/null 2>&1; kill -TERM $$ 2>/dev/null) & exec "$@" 3<&- </dev/null';

async function rpc<T>(url: string, method: string, params: unknown[] = [], timeoutMs = 5000): Promise<T> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method, params }),
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (!res.ok) throw new Error(`${method}: HTTP ${res.status} from ${url}`);
  const body = (await res.json()) as { result?: T; error?: { code: number; message: string } };
  if (body.error) throw new Error(`${method}: ${body.error.message} (${body.error.code})`);
  return body.result as T;
}

class StartFailure extends Error {
  constructor(message: string, readonly stderr: string) {
    super(message);
  }
}

/**
 * Starts anvil on 127.0.0.1 (port: given or a free one), state persisted in
 * `${stateDir}/anvil-state.json` (loaded at start when present, dumped on stop and every
 * `stateIntervalS` seconds), chain id fixed (default 31337), automine (one block per
 * transaction), no pre-funded dev accounts, CORS off; silent unless it fails (its stderr is
 * kept for the error). Resolves when the RPC answers with the expected chain id.
 *
 * The child never outlives this process (see {@link WATCHDOG}) and does not keep the event
 * loop alive. A state file anvil cannot load (e.g. cut short by a crash during a dump) is
 * renamed `anvil-state.json.corrupt-<time>` and replaced by `anvil-state.json.bak` (the state
 * as loaded at the previous successful start) or, failing that, the node starts empty; either
 * way with a warning, and the caller must re-anchor roots the chain no longer has (and, on an
 * empty chain, redeploy: the first transaction of a fresh key yields the same contract address).
 */
export async function startLocalNode(opts: StartLocalNodeOptions): Promise<LocalNode> {
  const chainId = opts.chainId ?? DEFAULT_CHAIN_ID;
  if (!Number.isSafeInteger(chainId) || chainId <= 0) throw new Error(`Invalid chain id ${chainId}`);
  if (opts.port !== undefined && (!Number.isInteger(opts.port) || opts.port <= 0 || opts.port > 65535)) throw new Error(`Invalid port ${opts.port}`);
  const binary = opts.binary ?? anvilBinary();
  const stateDir = path.resolve(opts.stateDir);
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const stateFile = path.join(stateDir, STATE_FILE_NAME);
  // State files an earlier version let anvil write 0644 (its backups copy the mode).
  for (const f of [stateFile, `${stateFile}.bak`]) if (fs.existsSync(f) && (fs.statSync(f).mode & 0o077) !== 0) fs.chmodSync(f, 0o600);
  const log = opts.logger;

  // anvil rewrites its state file in place (not atomically): a crash during a dump can leave
  // it cut short. So the file as it was at start is copied, and promoted to `.bak` once anvil
  // has loaded it; a file anvil cannot load is moved aside and the `.bak` restored.
  const backup = `${stateFile}.bak`;
  const pendingBackup = `${stateFile}.bak.tmp`;
  let recovery: 'none' | 'backup' | 'empty' = 'none';
  for (let attempt = 1; ; attempt++) {
    const port = opts.port ?? (await freePort());
    const hadState = fs.existsSync(stateFile);
    if (hadState) fs.copyFileSync(stateFile, pendingBackup);
    try {
      const node = await launch({ ...opts, binary, chainId, port, stateFile });
      if (hadState) fs.renameSync(pendingBackup, backup);
      return node;
    } catch (err) {
      fs.rmSync(pendingBackup, { force: true });
      const stderr = err instanceof StartFailure ? err.stderr : '';
      if (opts.port === undefined && attempt < 4 && /address already in use/i.test(stderr)) continue; // lost the race for the free port
      if (recovery !== 'empty' && hadState && /invalid value .*for '--(?:load-)?state/i.test(stderr)) {
        if (recovery === 'none') {
          const aside = `${stateFile}.corrupt-${new Date().toISOString().replace(/[:.]/g, '-')}`;
          fs.renameSync(stateFile, aside);
          if (fs.existsSync(backup)) {
            fs.copyFileSync(backup, stateFile);
            recovery = 'backup';
            log?.warn({ stateFile, movedTo: aside, anvilError: stderr.trim() }, 'anvil could not load its state file; moved it aside and restored the state saved at the previous start (later anchors are missing from the chain)');
          } else {
            recovery = 'empty';
            log?.warn({ stateFile, movedTo: aside, anvilError: stderr.trim() }, 'anvil could not load its state file; moved it aside and starting an empty chain');
          }
        } else {
          fs.rmSync(stateFile, { force: true });
          recovery = 'empty';
          log?.warn({ backup, anvilError: stderr.trim() }, 'anvil could not load the backup state either; starting an empty chain');
        }
        attempt = 0;
        continue;
      }
      log?.error({ err, stderr: stderr.trim() }, 'anvil failed to start');
      throw err;
    }
  }
}

async function launch(o: StartLocalNodeOptions & { binary: string; chainId: number; port: number; stateFile: string }): Promise<LocalNode> {
  const started = Date.now();
  // Otherwise the readiness probe below could get its answer from whatever holds the port
  // (e.g. another anvil) before our anvil fails to bind.
  if (await listening(o.port)) {
    const msg = `Error: Address already in use (127.0.0.1:${o.port} is taken)`;
    throw new StartFailure(`anvil failed to start: ${msg}`, msg);
  }
  const args = [
    '--host', '127.0.0.1',
    '--port', String(o.port),
    '--chain-id', String(o.chainId),
    '--state', o.stateFile,
    '--state-interval', String(o.stateIntervalS ?? 10),
    '--accounts', '0',
    ...(o.allowOrigin ? ['--allow-origin', o.allowOrigin] : ['--no-cors']),
    '--quiet',
  ];
  const posix = process.platform !== 'win32';
  const child: ChildProcess = posix
    ? spawn('/bin/sh', ['-c', WATCHDOG, 'anvil', o.binary, ...args], { stdio: ['pipe', 'ignore', 'pipe'], detached: true })
    : spawn(o.binary, args, { stdio: ['ignore', 'ignore', 'pipe'], windowsHide: true });

  let stderr = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (d: string) => {
    stderr = (stderr + d).slice(-STDERR_KEEP);
  });
  // Neither the child nor its pipes keep this process alive; if it exits without stop(),
  // the watchdog stops anvil (SIGTERM, state dumped).
  child.unref();
  (child.stdin as net.Socket | null)?.unref?.();
  (child.stderr as net.Socket).unref?.();
  child.stdin?.on('error', () => {});

  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let spawnError: Error | undefined;
  const exitPromise = new Promise<void>((resolve) => {
    child.once('error', (err) => {
      spawnError = err;
      exited ??= { code: null, signal: null };
      resolve();
    });
    child.once('exit', (code, signal) => {
      exited = { code, signal };
      resolve();
    });
  });
  // Once anvil is gone, its process group holds only the watchdog: end it (the group id
  // cannot be reused while the group exists, so this never hits a stranger).
  const killGroup = (signal: NodeJS.Signals) => {
    if (!posix || child.pid === undefined) return;
    try {
      process.kill(-child.pid, signal);
    } catch {
      /* already gone */
    }
  };
  let stopping = false;
  let ready = false;
  void exitPromise.then(() => {
    killGroup('SIGKILL');
    if (!stopping && ready) {
      o.logger?.error({ anvilPid: child.pid, code: exited?.code, signal: exited?.signal, stderr: stderr.trim() }, 'anvil exited unexpectedly');
    }
  });

  const rpcUrl = `http://127.0.0.1:${o.port}`;
  const deadline = started + (o.startTimeoutMs ?? 60_000);
  try {
    for (;;) {
      if (exited) {
        const how = spawnError ? spawnError.message : exited.signal ? `signal ${exited.signal}` : `exit code ${exited.code}`;
        throw new StartFailure(`anvil failed to start (${how}): ${stderr.trim() || 'no output'}`, stderr);
      }
      try {
        const got = Number(BigInt(await rpc<string>(rpcUrl, 'eth_chainId', [], 2000)));
        if (got !== o.chainId) throw new StartFailure(`anvil on ${rpcUrl} answers chain id ${got}, expected ${o.chainId}`, stderr);
        ready = true;
        break;
      } catch (err) {
        if (err instanceof StartFailure) throw err;
        // not listening yet
      }
      if (Date.now() > deadline) throw new StartFailure(`anvil did not answer on ${rpcUrl} within ${o.startTimeoutMs ?? 60_000} ms: ${stderr.trim()}`, stderr);
      await new Promise((r) => setTimeout(r, 25));
    }
  } catch (err) {
    stopping = true;
    if (!exited) {
      try {
        child.kill('SIGKILL');
      } catch {
        /* gone */
      }
      await exitPromise;
    }
    throw err;
  }
  o.logger?.debug({ anvilPid: child.pid, rpcUrl, chainId: o.chainId, stateFile: o.stateFile, ms: Date.now() - started }, 'anvil started');

  let stopPromise: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopPromise ??= (async () => {
      stopping = true;
      if (exited) return;
      child.kill('SIGTERM');
      let timer: NodeJS.Timeout | undefined;
      const timedOut = await Promise.race([
        exitPromise.then(() => false),
        new Promise<boolean>((r) => {
          timer = setTimeout(() => r(true), STOP_GRACE_MS);
        }),
      ]);
      clearTimeout(timer);
      if (timedOut) {
        o.logger?.warn({ anvilPid: child.pid }, `anvil did not exit ${STOP_GRACE_MS} ms after SIGTERM; killing it (state as of its last periodic dump)`);
        killGroup('SIGKILL');
        child.kill('SIGKILL');
        await exitPromise;
      } else {
        const how = exited as { code: number | null; signal: NodeJS.Signals | null } | undefined; // set by the exit handler meanwhile
        if (how && how.code !== 0 && how.signal !== 'SIGTERM') {
          o.logger?.warn({ code: how.code, signal: how.signal, stderr: stderr.trim() }, 'anvil exited with an error on stop');
        }
      }
      child.stdin?.destroy();
    })();
    return stopPromise;
  };
  const exitedInfo = exitPromise.then(() => exited ?? { code: null, signal: null });
  return { rpcUrl, chainId: o.chainId, port: o.port, stateFile: o.stateFile, stop, exited: exitedInfo };
}

const HEX_KEY = /^(?:0x)?([0-9a-fA-F]{64})$/;
// secp256k1 group order: a private key must be in [1, n-1].
const SECP256K1_N = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;

let devKeys: Set<string> | undefined;
/** True for the private keys anvil, hardhat and ganache derive from `test test ... junk` (first 20 accounts). */
export function isWellKnownDevKey(privateKey: string): boolean {
  if (!devKeys) {
    devKeys = new Set();
    const parent = HDNodeWallet.fromPhrase('test test test test test test test test test test test junk', undefined, "m/44'/60'/0'/0");
    for (let i = 0; i < 20; i++) devKeys.add(parent.deriveChild(i).privateKey.toLowerCase());
  }
  const m = HEX_KEY.exec(privateKey.trim());
  return m !== null && devKeys.has(`0x${m[1]!.toLowerCase()}`);
}

function checkKey(text: string, file: string): string {
  const m = HEX_KEY.exec(text.trim());
  if (!m) throw new Error(`${file} does not hold a private key (64 hex digits, optionally 0x-prefixed)`);
  const key = `0x${m[1]!.toLowerCase()}`;
  const n = BigInt(key);
  if (n === 0n || n >= SECP256K1_N) throw new Error(`${file} does not hold a valid secp256k1 private key`);
  if (isWellKnownDevKey(key)) throw new Error(`${file} holds a well-known development key (anyone can sign with it); remove the file to generate a new key`);
  return key;
}

/**
 * A private key for this data dir (not anvil's well-known dev keys): read from `file` (0600 hex),
 * or generated and written (0600, directory 0700). Returns it 0x-prefixed, lower case.
 * Two processes racing on a fresh dir end up with the same key (atomic create).
 */
export function loadOrCreateKey(file: string): string {
  try {
    return checkKey(fs.readFileSync(file, 'utf8'), file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  let key: string;
  do key = `0x${randomBytes(32).toString('hex')}`;
  while (BigInt(key) === 0n || BigInt(key) >= SECP256K1_N);
  // Write a complete temp file, then link it into place: the key file never exists half-written,
  // and link() fails if another process got there first.
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  fs.writeFileSync(tmp, `${key}\n`, { mode: 0o600, flag: 'wx' });
  try {
    fs.linkSync(tmp, file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return checkKey(fs.readFileSync(file, 'utf8'), file);
  } finally {
    fs.rmSync(tmp, { force: true });
  }
  return key;
}

/**
 * Gives `address` ETH on a local node (anvil_setBalance), so a generated key can pay gas:
 * raises its balance to `wei` (default 100 ETH) when it has less; never lowers it.
 */
export async function fund(rpcUrl: string, address: string, wei: bigint = 100n * 10n ** 18n): Promise<void> {
  if (!/^0x[0-9a-fA-F]{40}$/.test(address)) throw new Error(`Invalid address ${address}`);
  const balance = BigInt(await rpc<string>(rpcUrl, 'eth_getBalance', [address, 'latest']));
  if (balance >= wei) return;
  await rpc<null>(rpcUrl, 'anvil_setBalance', [address, `0x${wei.toString(16)}`]);
}
