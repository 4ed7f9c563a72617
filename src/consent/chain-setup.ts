/**
 * Starting the consent chain with the server: the ConsentRegistry on the ledger's chain (deployed
 * once on the embedded node and remembered in DATA_DIR/chain/consent-contract.json; CONSENT_CONTRACT
 * on an external chain), its relaying client, and the {@link ChainConsentView} that follows it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { Wallet } from 'ethers';
import type { Logger } from 'pino';
import type { ConsentConfig } from '../config.js';
import type { LedgerChainAccess } from '../ledger/index.js';
import { fund, loadOrCreateKey } from '../ledger/anvil.js';
import { makeProvider } from '../ledger/evm-rpc.js';
import { ChainConsentView, consentPidSecret } from './chain-view.js';
import { ConsentRegistryClient } from './consent-registry.js';
import { CHAIN_OFF, type ConsentChainView } from './types.js';

/** The consent chain as the server uses it. */
export interface ConsentChain {
  /** CHAIN_OFF (CONSENT_CHAIN=off) or the {@link ChainConsentView}. */
  view: ConsentChainView;
  /** The relaying client (the view's), when the chain is on. */
  client?: ConsentRegistryClient;
  /** Gives an address gas on the embedded node (so a patient's key can call the contract itself); undefined on an external chain. */
  fund?: (address: string) => Promise<void>;
}

interface RememberedContract { address: string; chainId: number; deployBlock: number; recoveryDelaySeconds?: number }

export const CONSENT_CONTRACT_FILE = 'consent-contract.json';

/** Recovery delay in seconds for CONSENT_RECOVERY_DAYS. */
export function recoveryDelaySeconds(days: number): number {
  return Math.round(days * 86_400);
}

/**
 * Opens the consent chain for `config`: CHAIN_OFF when CONSENT_CHAIN=off, else the contract on the
 * ledger's chain and a view that has read all its events. Throws a clear error when the chain or
 * the contract cannot be reached.
 */
export async function openConsentChain(o: {
  config: ConsentConfig;
  /** The ledger's chain (LedgerService.chainAccess()); undefined when the ledger is off. */
  chain: LedgerChainAccess | undefined;
  dataDir: string;
  /** MasterKeys.indexKey: the pseudonymous-id secret is derived from it. */
  indexKey: Buffer;
  logger: Logger;
}): Promise<ConsentChain> {
  const { config, chain, logger } = o;
  if (config.chain === 'off') return { view: CHAIN_OFF };
  if (!chain) throw new Error('CONSENT_CHAIN=required needs the ledger\'s chain, but the ledger is off: set CONSENT_CHAIN=off or turn the ledger on');
  const embedded = chain.mode === 'embedded';
  let key: string;
  if (embedded) {
    key = loadOrCreateKey(path.join(o.dataDir, 'keys', 'consent-relayer.key'));
    await fund(chain.rpcUrl, new Wallet(key).address);
  } else {
    key = config.privateKey ?? (config.keyFile ? fs.readFileSync(config.keyFile, 'utf8').trim() : chain.privateKey);
  }
  const delay = recoveryDelaySeconds(config.recoveryDays);
  const file = path.join(o.dataDir, 'chain', CONSENT_CONTRACT_FILE);
  const remembered = readRemembered(file);
  const known = (address: string) => (remembered && remembered.chainId === chain.chainId && remembered.address.toLowerCase() === address.toLowerCase() ? remembered : undefined);

  let client: ConsentRegistryClient | undefined;
  let fromBlock: number | undefined;
  const wanted = config.contract ?? (embedded && remembered?.chainId === chain.chainId ? remembered.address : undefined);
  if (wanted) {
    try {
      client = await ConsentRegistryClient.connect({ rpcUrl: chain.rpcUrl, address: wanted, privateKey: key, expectedChainId: chain.chainId });
    } catch (err) {
      if (config.contract || !embedded) throw new Error(`CONSENT_CONTRACT ${wanted}: ${(err as Error).message}`, { cause: err });
      logger.error({ err: (err as Error).message, address: wanted }, 'the embedded chain lost the ConsentRegistry (its state was reset): deploying it again; '
        + 'patients must bind their keys and sign their Consents again');
    }
    if (client) {
      const k = known(client.address);
      if (k?.recoveryDelaySeconds !== undefined && k.recoveryDelaySeconds !== delay) {
        logger.warn({ deployedWith: k.recoveryDelaySeconds, configured: delay }, 'CONSENT_RECOVERY_DAYS differs from the delay the ConsentRegistry was deployed with; the deployed delay applies');
      }
      try {
        fromBlock = k?.deployBlock ?? (await deploymentBlock(chain.rpcUrl, chain.chainId, client.address, logger));
      } catch (err) {
        client.close();
        throw err;
      }
      if (!k) writeRemembered(file, { address: client.address, chainId: client.chainId, deployBlock: fromBlock, ...(embedded ? { recoveryDelaySeconds: delay } : {}) });
    }
  }
  if (!client) {
    const before = await blockNumber(chain.rpcUrl, chain.chainId);
    client = await ConsentRegistryClient.deploy(chain.rpcUrl, key, delay);
    fromBlock = before + 1;
    writeRemembered(file, { address: client.address, chainId: client.chainId, deployBlock: fromBlock, recoveryDelaySeconds: delay });
    logger.info({ address: client.address, chainId: client.chainId, recoveryDelaySeconds: delay }, 'deployed the ConsentRegistry on the embedded chain');
  }
  const view = await ChainConsentView.open({
    client, rpcUrl: chain.rpcUrl, secret: consentPidSecret(o.indexKey), syncMs: config.syncMs, fromBlock: fromBlock!, logger,
  });
  logger.info({ contract: client.address, chainId: client.chainId, relayer: client.sender, fromBlock, block: view.blockNumber }, 'consent chain on');
  const rpcUrl = chain.rpcUrl;
  return { view, client, ...(embedded ? { fund: (address: string) => fund(rpcUrl, address) } : {}) };
}

function readRemembered(file: string): RememberedContract | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const r = JSON.parse(text) as RememberedContract;
    if (typeof r.address === 'string' && Number.isSafeInteger(r.chainId) && Number.isSafeInteger(r.deployBlock)) return r;
  } catch {
    /* rewritten below */
  }
  return undefined;
}

function writeRemembered(file: string, r: RememberedContract): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(r, null, 2)}\n`, { mode: 0o600 });
  fs.renameSync(tmp, file);
}

async function blockNumber(rpcUrl: string, chainId: number): Promise<number> {
  const provider = makeProvider(rpcUrl, chainId, {});
  try {
    return await provider.getBlockNumber();
  } finally {
    provider.destroy();
  }
}

/**
 * The first block in which `address` has code (binary search over eth_getCode); 0 when the node
 * cannot answer for old blocks (a pruned node): events are then read from the genesis block.
 */
export async function deploymentBlock(rpcUrl: string, chainId: number, address: string, logger?: Logger): Promise<number> {
  const provider = makeProvider(rpcUrl, chainId, {});
  try {
    let hi = await provider.getBlockNumber();
    if ((await provider.getCode(address, hi)) === '0x') throw new Error(`no contract code at ${address} on chain ${chainId}`);
    let lo = 0;
    try {
      while (lo < hi) {
        const mid = Math.floor((lo + hi) / 2);
        if ((await provider.getCode(address, mid)) === '0x') lo = mid + 1;
        else hi = mid;
      }
      return hi;
    } catch (err) {
      logger?.warn({ err: (err as Error).message, address }, 'cannot find the ConsentRegistry\'s deployment block (old state not available): reading its events from block 0');
      return 0;
    }
  } finally {
    provider.destroy();
  }
}
