import { shortAddress, type KeyHolder } from '../wallet/holder.js';

/** Which key will sign, and the passphrase field when it is the portal's key (never stored). */
export function KeyUse({ holder, passphrase, setPassphrase, id }: { holder: KeyHolder | undefined; passphrase: string; setPassphrase: (v: string) => void; id: string }) {
  if (!holder) return <p>You have no key in this browser yet. <a href="#/key">Create one or connect your wallet on the My key page</a>.</p>;
  return (
    <>
      <p>Signed with {holder.kind === 'portal' ? <>the key this portal keeps for you <small>({shortAddress(holder.address!)})</small></> : 'your wallet (it will ask you to confirm)'}.</p>
      {holder.needsPassphrase && (
        <>
          <label for={id}>Passphrase of your key</label>
          <input id={id} type="password" autoComplete="current-password" value={passphrase} onInput={(e) => setPassphrase((e.target as HTMLInputElement).value)} />
          <p class="hint">Your passphrase opens your key here in the browser; it is not sent anywhere and not kept.</p>
        </>
      )}
    </>
  );
}
