/**
 * Signing a permission (grant) or its withdrawal (revoke): the server prepares the EIP-712 typed
 * data, the patient sees what it says, signs in the browser, the server relays it; a withdrawal
 * can also go straight to the ledger contract, sent by the patient's key, without the server.
 */
import { useEffect, useState } from 'preact/hooks';
import type { Session } from '../session.js';
import { currentHolder } from '../wallet/holder.js';
import { chainRpcUrl, chainStatus, keyState, relay, signOffer, waitForStatus, type Action, type SignOffer } from './api.js';
import { revokeDirect } from './direct.js';
import { consentError, KeyProblem } from './errors.js';
import { KeyUse } from './key-use.js';

const WRONG_HOLDER = 'The key in use here is not the one linked to your record, so it cannot sign for you. Choose the linked key on the My key page (or link this one first).';

export function SignPanel({ session, consentId, action, sentences, onDone, onCancel }: {
  session: Session; consentId: string; action: Action; sentences: string[]; onDone: (status: string) => void; onCancel: () => void;
}) {
  const [offer, setOffer] = useState<SignOffer | undefined>();
  const [error, setError] = useState<string | undefined>();
  const [busy, setBusy] = useState<string | undefined>();
  const [passphrase, setPassphrase] = useState('');
  const holder = currentHolder();

  const prepare = () => {
    setError(undefined); setOffer(undefined);
    signOffer(session, consentId, action).then(setOffer, (e: unknown) => setError(consentError(e)));
  };
  useEffect(prepare, [consentId, action]);

  const run = async (what: string, fn: () => Promise<string>) => {
    setBusy(what); setError(undefined);
    try {
      const status = await fn();
      setPassphrase('');
      onDone(status);
    } catch (e) {
      setError(consentError(e));
    } finally {
      setBusy(undefined);
    }
  };

  const signAndRelay = () => run('Signing and sending…', async () => {
    if (!holder || !offer) throw new KeyProblem('You have no key in this browser yet. Create one or connect your wallet on the My key page.');
    const account = holder.address ?? await holder.account();
    if (account !== offer.key) throw new KeyProblem(WRONG_HOLDER);
    const signature = await holder.signTypedData(offer.typedData, passphrase);
    await relay(session, consentId, action, offer, signature);
    return (await waitForStatus(session, consentId, action === 'grant' ? 'active' : 'revoked')).status;
  });

  const direct = () => run('Sending to the ledger…', async () => {
    if (!holder) throw new KeyProblem('You have no key in this browser yet. Create one or connect your wallet on the My key page.');
    const [ks, st, rpcUrl] = await Promise.all([keyState(session), chainStatus(session, consentId), chainRpcUrl(session)]);
    if (!rpcUrl) throw new KeyProblem('This server does not say where its ledger is, so the portal cannot reach it directly. Withdraw through the server instead.');
    const account = holder.address ?? await holder.account();
    if (ks.key && account !== ks.key) throw new KeyProblem(WRONG_HOLDER);
    await revokeDirect(holder, { rpcUrl, contractAddress: ks.contractAddress, pid: ks.pid }, st.consentHash, passphrase);
    return (await waitForStatus(session, consentId, 'revoked')).status;
  });

  const verb = action === 'grant' ? 'put in force' : 'withdraw';
  const id = `pass-${consentId}-${action}`;
  return (
    <div class="sign-panel" role="group" aria-label={action === 'grant' ? 'Sign this permission' : 'Withdraw this permission'}>
      <h3>{action === 'grant' ? 'Sign to put this permission in force' : 'Withdraw this permission'}</h3>
      <p>With your signature you {verb} this permission:</p>
      <ul>{sentences.map((s) => <li key={s}>{s}</li>)}</ul>
      {offer && <p class="hint">The signature is valid until {new Date(Number(offer.deadline) * 1000).toLocaleString()}. The ledger records only a fingerprint of the permission, never your data.</p>}
      {offer && (
        <details>
          <summary>What exactly is signed</summary>
          <pre class="signing">{JSON.stringify(offer.typedData, null, 2)}</pre>
        </details>
      )}
      <KeyUse holder={holder} passphrase={passphrase} setPassphrase={setPassphrase} id={id} />
      {error && <div class="notice notice-error" role="alert"><p>{error}</p></div>}
      {busy && <p role="status">{busy}</p>}
      <div class="actions">
        {offer && <button type="button" class="btn btn-primary" disabled={!!busy || !holder} onClick={() => { void signAndRelay(); }}>{action === 'grant' ? 'Sign and put in force' : 'Sign and withdraw'}</button>}
        {error && <button type="button" class="btn" disabled={!!busy} onClick={prepare}>Prepare the signature again</button>}
        {action === 'revoke' && <button type="button" class="btn btn-danger" disabled={!!busy || !holder} onClick={() => { void direct(); }}>Withdraw directly on the ledger</button>}
        <button type="button" class="btn" disabled={!!busy} onClick={onCancel}>Not now</button>
      </div>
      {action === 'revoke' && <p class="hint">“Directly on the ledger” sends the withdrawal from your key to the ledger yourself: it works even if this server would not pass it on.</p>}
    </div>
  );
}
