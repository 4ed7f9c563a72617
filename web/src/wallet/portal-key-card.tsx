/** The key the portal keeps for the patient: create it, back it up, restore it, choose it. */
import { useState } from 'preact/hooks';
import { consentError } from '../consent/errors.js';
import { backupFileName, createKey, forgetKey, MIN_PASSPHRASE, restoreKey, storedKey } from './keystore.js';
import { choose } from './holder.js';

function download(name: string, text: string): void {
  const url = URL.createObjectURL(new Blob([text], { type: 'application/json' }));
  const a = document.createElement('a');
  a.href = url; a.download = name;
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function PortalKeyCard({ chosen, onChange }: { chosen: boolean; onChange: () => void }) {
  const [stored, setStored] = useState(storedKey);
  // Passphrases are never kept, not even as a draft: they are typed again when needed.
  const [pass, setPass] = useState('');
  const [again, setAgain] = useState('');
  const [file, setFile] = useState<string | undefined>();
  const [busy, setBusy] = useState<string | undefined>();
  const [error, setError] = useState<string | undefined>();
  const [news, setNews] = useState<string | undefined>();

  const run = async (what: string, fn: () => Promise<string>) => {
    setBusy(what); setError(undefined); setNews(undefined);
    try { setNews(await fn()); setPass(''); setAgain(''); setStored(storedKey()); onChange(); } catch (e) { setError(consentError(e)); } finally { setBusy(undefined); }
  };
  const create = (e: Event) => {
    e.preventDefault();
    void run('Creating your key (this takes a moment)…', async () => {
      if (pass !== again) throw new Error('The two passphrases are not the same.');
      await createKey(pass);
      choose('portal');
      return 'Your key is created and kept in this browser, locked with your passphrase. Download a backup now and keep it safe.';
    });
  };
  const restore = (e: Event) => {
    e.preventDefault();
    void run('Opening your backup…', async () => {
      if (!file) throw new Error('Choose your backup file first.');
      await restoreKey(file, pass);
      choose('portal');
      return 'Your key is restored from the backup.';
    });
  };
  const onFile = async (e: Event) => {
    const f = (e.target as HTMLInputElement).files?.[0];
    setFile(f ? await f.text() : undefined);
  };

  return (
    <section class="card" aria-labelledby="portal-key-title">
      <h3 id="portal-key-title">A key kept by this portal</h3>
      {stored
        ? <>
            <p>This browser keeps your key, locked with your passphrase: <span class="address">{stored.address}</span></p>
            {chosen ? <p><span class="badge badge-ok">In use</span></p> : null}
            <div class="actions">
              {!chosen && <button type="button" class="btn" onClick={() => { choose('portal'); onChange(); }}>Use this key</button>}
              <button type="button" class="btn" onClick={() => download(backupFileName(stored.address), stored.json)}>Download a backup</button>
              <button type="button" class="btn btn-danger" onClick={() => { if (confirm('Remove the key from this browser? Without a backup it is lost.')) { forgetKey(); setStored(undefined); onChange(); } }}>Remove from this browser</button>
            </div>
            <p class="hint">The backup file is locked with the same passphrase. Keep it somewhere safe (not only on this device).</p>
          </>
        : <>
            <form onSubmit={create}>
              <h4>Create a key</h4>
              <label for="new-pass">Choose a passphrase</label>
              <input id="new-pass" type="password" autoComplete="new-password" minLength={MIN_PASSPHRASE} value={pass} onInput={(e) => setPass((e.target as HTMLInputElement).value)} aria-describedby="new-pass-hint" />
              <p class="hint" id="new-pass-hint">At least {MIN_PASSPHRASE} characters; a few words you will remember. Nobody can reset it for you.</p>
              <label for="new-pass-again">Type it again</label>
              <input id="new-pass-again" type="password" autoComplete="new-password" value={again} onInput={(e) => setAgain((e.target as HTMLInputElement).value)} />
              <div class="actions"><button type="submit" class="btn btn-primary" disabled={!!busy}>Create my key</button></div>
            </form>
            <form onSubmit={restore}>
              <h4>Or restore a backup</h4>
              <label for="restore-file">Backup file</label>
              <input id="restore-file" type="file" accept=".json,application/json" onChange={(e) => { void onFile(e); }} />
              <label for="restore-pass">Its passphrase</label>
              <input id="restore-pass" type="password" autoComplete="current-password" value={pass} onInput={(e) => setPass((e.target as HTMLInputElement).value)} />
              <div class="actions"><button type="submit" class="btn" disabled={!!busy}>Restore my key</button></div>
            </form>
          </>}
      {busy && <p role="status">{busy}</p>}
      {error && <div class="notice notice-error" role="alert"><p>{error}</p></div>}
      {news && <div class="notice notice-ok" role="status"><p>{news}</p></div>}
    </section>
  );
}
