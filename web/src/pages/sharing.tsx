import { useEffect, useState } from 'preact/hooks';
import { ErrorNotice, Loading } from '../components/notice.js';
import type { Session } from '../session.js';
import { when } from '../fhir-text.js';
import { chainStatus, type Action } from '../consent/api.js';
import type { Consent } from '../consent/consent-shape.js';
import { describeConsent } from '../consent/describe.js';
import { consentError } from '../consent/errors.js';
import { SignPanel } from '../consent/sign-panel.js';
import { StatusBadge, statusWords } from '../consent/status-badge.js';
import { NewConsentForm } from '../consent/new-consent.js';
import { AskForm } from '../consent/ask.js';
import './sharing.css';

interface Row { consent: Consent; status: string; problem?: string }
interface Bundle { entry?: Array<{ resource?: Consent }> }

async function loadRows(session: Session): Promise<Row[]> {
  const b = await session.get<Bundle>(`Consent?patient=${encodeURIComponent(session.patientId)}&_sort=-_lastUpdated&_count=100`);
  const consents = (b.entry ?? []).map((e) => e.resource!).filter((c) => c?.resourceType === 'Consent');
  return Promise.all(consents.map(async (consent): Promise<Row> => {
    if (consent.status !== 'active') return { consent, status: 'inactive' };
    try { return { consent, status: (await chainStatus(session, consent.id!)).status }; } catch (e) { return { consent, status: 'unknown', problem: consentError(e) }; }
  }));
}

export function SharingPage({ session }: { session: Session; params: URLSearchParams }) {
  const [rows, setRows] = useState<Row[] | undefined>();
  const [error, setError] = useState<unknown>();
  const [open, setOpen] = useState<{ id: string; action: Action } | undefined>();
  const [news, setNews] = useState<string | undefined>();
  const reload = () => loadRows(session).then((r) => { setRows(r); setError(undefined); }, setError);
  useEffect(() => { void reload(); }, [session]);

  const done = (row: Row) => (status: string) => {
    setOpen(undefined);
    setNews(`${describeConsent(row.consent)[0]} Now: ${statusWords(status).toLowerCase()}.`);
    void reload();
  };

  return (
    <section aria-labelledby="page-title" class="sharing">
      <h1 id="page-title">Sharing</h1>
      <p>Here you decide who may see which parts of your record. A permission counts only once you have signed it with your own key; you can withdraw it at any time.</p>
      {news && <div class="notice notice-ok" role="status"><p>{news}</p></div>}
      <h2>Your permissions</h2>
      <ErrorNotice error={error} />
      {!rows && !error && <Loading what="your permissions" />}
      {rows && rows.length === 0 && <p>You have not shared your record with anyone yet.</p>}
      {rows && rows.length > 0 && (
        <ul class="consents">
          {rows.map((row) => {
            const id = row.consent.id!;
            const sentences = describeConsent(row.consent);
            return (
              <li key={id} class="card consent" aria-label={sentences[0]}>
                <p class="consent-state"><StatusBadge status={row.status} /> <small>written {when(row.consent.dateTime ?? row.consent.meta?.lastUpdated)}</small></p>
                <ul class="sentences">{sentences.map((s) => <li key={s}>{s}</li>)}</ul>
                {row.problem && <p class="notice notice-warn">{row.problem}</p>}
                {open?.id === id
                  ? <SignPanel session={session} consentId={id} action={open.action} sentences={sentences} onDone={done(row)} onCancel={() => setOpen(undefined)} />
                  : (
                    <div class="actions">
                      {row.status === 'pending-signature' && <button type="button" class="btn btn-primary" onClick={() => { setNews(undefined); setOpen({ id, action: 'grant' }); }}>Sign to put in force</button>}
                      {(row.status === 'active' || row.status === 'hash-mismatch') && <button type="button" class="btn btn-danger" onClick={() => { setNews(undefined); setOpen({ id, action: 'revoke' }); }}>Withdraw</button>}
                    </div>
                  )}
              </li>
            );
          })}
        </ul>
      )}
      <NewConsentForm session={session} onSaved={(c) => { void reload().then(() => setOpen({ id: c.id!, action: 'grant' })); }} />
      <AskForm session={session} consents={rows?.map((r) => r.consent) ?? []} />
    </section>
  );
}
