import { useEffect, useState } from 'preact/hooks';
import type { PortalConfig } from './config.js';
import { ErrorNotice, Loading } from './components/notice.js';
import { href, PAGES, useRoute, type PagePath } from './route.js';
import { SESSION_EXPIRED_EVENT, signIn, signOut, type Session } from './session.js';
import { MyDataPage } from './pages/my-data.js';
import { AccessPage } from './pages/access.js';
import { SharingPage } from './pages/sharing.js';
import { KeyPage } from './pages/key.js';
import { patientName, type Patient } from './fhir-text.js';

export function SignInPage({ config, error }: { config: PortalConfig; error?: unknown }) {
  return (
    <main id="main" class="welcome">
      <h1>Your health record</h1>
      <p>See your data and the readings of your devices, who looked at them, and decide who may see what.</p>
      <ErrorNotice error={error} />
      <button type="button" class="btn btn-primary" onClick={() => { void signIn(config); }}>Sign in</button>
      <p class="hint">No account yet? Your care provider creates one for you.</p>
    </main>
  );
}

export function App({ session }: { session: Session }) {
  const route = useRoute();
  const [expired, setExpired] = useState(false);
  const [patient, setPatient] = useState<Patient | undefined>();
  useEffect(() => {
    const on = () => setExpired(true);
    window.addEventListener(SESSION_EXPIRED_EVENT, on);
    return () => window.removeEventListener(SESSION_EXPIRED_EVENT, on);
  }, []);
  useEffect(() => { session.get<Patient>(`Patient/${session.patientId}`).then(setPatient, () => undefined); }, [session]);
  const title = PAGES.find((p) => p.path === route.page)!.title;
  useEffect(() => { document.title = `${title} · Custos`; }, [title]);

  return (
    <>
      <a class="skip" href="#main">Skip to content</a>
      <header class="top">
        <div class="brand"><span class="logo" aria-hidden="true">◆</span> Custos</div>
        <p class="who">{patient ? patientName(patient) : ''}</p>
        <button type="button" class="btn btn-quiet" onClick={signOut}>Sign out</button>
      </header>
      <nav aria-label="Portal" class="tabs">
        <ul>
          {PAGES.map((p) => (
            <li key={p.path}><a href={href(p.path)} aria-current={p.path === route.page ? 'page' : undefined}>{p.title}</a></li>
          ))}
        </ul>
      </nav>
      {expired && (
        <div class="notice notice-warn session" role="alert">
          <p>Your session has ended. Sign in again to continue; what you typed is kept.</p>
          <button type="button" class="btn btn-primary" onClick={() => { void signIn(session.config); }}>Sign in again</button>
        </div>
      )}
      <main id="main" tabIndex={-1}>
        <Page session={session} page={route.page} params={route.params} />
      </main>
    </>
  );
}

function Page({ session, page, params }: { session: Session; page: PagePath; params: URLSearchParams }) {
  switch (page) {
    case 'data': return <MyDataPage session={session} params={params} />;
    case 'access': return <AccessPage session={session} params={params} />;
    case 'sharing': return <SharingPage session={session} params={params} />;
    case 'key': return <KeyPage session={session} params={params} />;
  }
}

export function Booting() {
  return <main id="main"><Loading what="your record" /></main>;
}
