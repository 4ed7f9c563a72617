import { useEffect, useState } from 'preact/hooks';
import { ErrorNotice, Loading, Notice } from '../components/notice.js';
import type { Session } from '../session.js';
import { bindKey, bindOffer, chainRpcUrl, keyState, type KeyState } from '../consent/api.js';
import { cancelRecovery } from '../consent/direct.js';
import { consentError, KeyProblem } from '../consent/errors.js';
import { KeyUse } from '../consent/key-use.js';
import { injectedWallet } from '../wallet/eip1193.js';
import { choose, currentHolder, portalHolder, shortAddress, walletHolder, type KeyHolder } from '../wallet/holder.js';
import { PortalKeyCard } from '../wallet/portal-key-card.js';
import './key.css';

export function KeyPage({ session }: { session: Session; params: URLSearchParams }) {
  const [state, setState] = useState<KeyState | undefined>();
  const [error, setError] = useState<unknown>();
  const [holder, setHolder] = useState<KeyHolder | undefined>(currentHolder);
  const [walletAddress, setWalletAddress] = useState<string | undefined>();
  const [passphrase, setPassphrase] = useState('');
  const [busy, setBusy] = useState<string | undefined>();
  const [problem, setProblem] = useState<string | undefined>();
  const [news, setNews] = useState<string | undefined>();

  const reload = () => keyState(session).then((s) => { setState(s); setError(undefined); }, setError);
  useEffect(() => { void reload(); }, [session]);
  const refreshHolder = () => setHolder(currentHolder());

  const address = holder?.kind === 'wallet' ? walletAddress : holder?.address;
  const run = async (what: string, fn: () => Promise<string>) => {
    setBusy(what); setProblem(undefined); setNews(undefined);
    // The news shows with the state it describes: reloaded first (else "cancelled" showed for a
    // moment beside the notice of the change it cancelled).
    try { const done = await fn(); setPassphrase(''); await reload(); setNews(done); } catch (e) { setProblem(consentError(e)); } finally { setBusy(undefined); }
  };

  const connectWallet = () => run('Asking your wallet…', async () => {
    const w = walletHolder()!;
    const a = await w.account();
    choose('wallet'); setWalletAddress(a); refreshHolder();
    return `Your wallet shared its account ${shortAddress(a)}.`;
  });

  const link = () => run('Linking your key…', async () => {
    if (!holder) throw new KeyProblem('Create a key or connect your wallet first.');
    const target = holder.address ?? await holder.account();
    if (holder.kind === 'wallet') setWalletAddress(target);
    const offer = await bindOffer(session, target);
    if (!offer) return 'This key is already linked to your record.';
    // A first key signs its own link; a new key must be approved by the key linked now.
    const signer = [holder, portalHolder(), walletHolder()].find((h) => h && (h.address ?? (h === holder ? target : undefined)) === offer.signer);
    if (!signer) throw new KeyProblem('To link a new key, the key linked now must approve it, and that key is not in this browser. Use it here first (restore its backup or connect the wallet that holds it).');
    const signature = await signer.signTypedData(offer.typedData, passphrase);
    await bindKey(session, target, offer, signature);
    return 'Your key is now linked to your record. You can sign permissions with it.';
  });

  const cancel = () => run('Cancelling the key change…', async () => {
    if (!holder || !state) throw new KeyProblem('Use the key linked to your record here first.');
    const rpcUrl = await chainRpcUrl(session);
    if (!rpcUrl) throw new KeyProblem('This server does not say where its ledger is, so the portal cannot reach it.');
    const a = holder.address ?? await holder.account();
    if (a !== state.key) throw new KeyProblem('Only the key linked to your record can cancel this change, and the key in use here is another one.');
    await cancelRecovery(holder, { rpcUrl, contractAddress: state.contractAddress, pid: state.pid }, passphrase);
    // The server follows the chain a moment later: wait until it no longer reports the change.
    for (let i = 0; i < 30 && (await keyState(session)).recoveryKey; i++) await new Promise((r) => setTimeout(r, 500));
    return 'The key change is cancelled. Your key stays the one linked to your record.';
  });

  const wallet = injectedWallet();
  const bound = state?.key;
  return (
    <section aria-labelledby="page-title" class="key-page">
      <h1 id="page-title">My key</h1>
      <p>Your key is how you sign your permissions. It stays with you, in this browser or in your wallet: the server never sees it, so nobody can give permissions in your name.</p>
      <ErrorNotice error={error} />
      {!state && !error && <Loading what="your key" />}
      {state?.recoveryKey && (
        <div class="notice notice-warn" role="alert">
          <p><strong>Someone asked to replace your key.</strong> The service operator started a key change to another key ({shortAddress(state.recoveryKey)}). It takes effect on {state.recoveryExecutableAt ? new Date(state.recoveryExecutableAt).toLocaleString() : 'a later date'} unless you cancel it.</p>
          <p>If you did not ask for this (for example because you lost your key), cancel it now with your current key.</p>
          <KeyUse holder={holder} passphrase={passphrase} setPassphrase={setPassphrase} id="pass-recovery" />
          <div class="actions"><button type="button" class="btn btn-danger" disabled={!!busy || !holder} onClick={() => { void cancel(); }}>Cancel this key change</button></div>
        </div>
      )}
      {state && (
        <section class="card" aria-labelledby="bound-title">
          <h2 id="bound-title">Key linked to your record</h2>
          {bound
            ? <p><span class="badge badge-ok">Linked</span> <span class="address">{bound}</span>{address === bound && <> · <strong>in use in this browser</strong></>}</p>
            : <p><span class="badge badge-warn">None yet</span> Link a key to sign your permissions.</p>}
        </section>
      )}
      {news && <Notice kind="ok"><p>{news}</p></Notice>}
      {problem && <div class="notice notice-error" role="alert"><p>{problem}</p></div>}
      {busy && <p role="status">{busy}</p>}

      <h2>Keys in this browser</h2>
      <div class="grid">
        <PortalKeyCard chosen={holder?.kind === 'portal'} onChange={() => { refreshHolder(); setNews(undefined); }} />
        <section class="card" aria-labelledby="wallet-title">
          <h3 id="wallet-title">Your wallet</h3>
          {wallet
            ? <>
                <p>A wallet app (such as MetaMask) is available in this browser{walletAddress ? <>: account <span class="address">{walletAddress}</span></> : ''}.</p>
                {holder?.kind === 'wallet' && walletAddress && <p><span class="badge badge-ok">In use</span></p>}
                <div class="actions"><button type="button" class="btn" disabled={!!busy} onClick={() => { void connectWallet(); }}>Use my wallet</button></div>
              </>
            : <p>No wallet app was found in this browser. You can use the key this portal keeps for you instead.</p>}
        </section>
      </div>

      {state && holder && (address === undefined || address !== bound) && (
        <section class="card" aria-labelledby="link-title">
          <h2 id="link-title">Link {holder.kind === 'portal' ? 'this key' : 'your wallet'} to your record</h2>
          <p>{bound ? 'Your record is linked to another key. Linking this one replaces it; the key linked now must approve the change.' : 'Linking tells the ledger that this key speaks for you. You sign it once.'}</p>
          <KeyUse holder={holder} passphrase={passphrase} setPassphrase={setPassphrase} id="pass-link" />
          <div class="actions"><button type="button" class="btn btn-primary" disabled={!!busy} onClick={() => { void link(); }}>Link this key</button></div>
        </section>
      )}
    </section>
  );
}
