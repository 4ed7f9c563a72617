import { useEffect, useState } from 'preact/hooks';

/** The portal's pages, addressed by the URL fragment (#/data, #/access, ...) so a reload keeps the page. */
export const PAGES = [
  { path: 'data', title: 'My data' },
  { path: 'access', title: 'Who saw my data' },
  { path: 'sharing', title: 'Sharing' },
  { path: 'key', title: 'My key' },
] as const;
export type PagePath = (typeof PAGES)[number]['path'];

export interface Route { page: PagePath; params: URLSearchParams }

function parse(hash: string): Route {
  const [p = '', q = ''] = hash.replace(/^#\/?/, '').split('?');
  const page = (PAGES.find((x) => x.path === p)?.path ?? 'data') as PagePath;
  return { page, params: new URLSearchParams(q) };
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parse(location.hash));
  useEffect(() => {
    const on = () => setRoute(parse(location.hash));
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return route;
}

export function href(page: PagePath, params?: Record<string, string>): string {
  const q = params ? new URLSearchParams(params).toString() : '';
  return `#/${page}${q ? `?${q}` : ''}`;
}
