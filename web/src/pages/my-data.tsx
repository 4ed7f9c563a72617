import type { Session } from '../session.js';

export function MyDataPage({ session: _session }: { session: Session; params: URLSearchParams }) {
  return <section aria-labelledby="page-title"><h1 id="page-title">My data</h1><p>This page is being built.</p></section>;
}
