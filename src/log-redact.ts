/**
 * What a log line may say about a request URL. Query values are search values (family names,
 * MRNs, birth dates) and OAuth parameters, so only the parameter names are kept; the path stays,
 * since resource ids are random and say nothing about a person.
 */
const PARAM_NAME = /^[A-Za-z_$][A-Za-z0-9_\-.:$]{0,99}$/;

export function redactUrl(url: string): string {
  const q = url.indexOf('?');
  const path = (q < 0 ? url : url.slice(0, q)).slice(0, 300);
  if (q < 0) return path;
  const params = url.slice(q + 1).split('&').filter(Boolean).slice(0, 50).map((part) => {
    const eq = part.indexOf('=');
    // A bare word (`?Smith`) is a value.
    if (eq < 0) return '[redacted]';
    let name = part.slice(0, eq);
    try {
      name = decodeURIComponent(name.replace(/\+/g, ' '));
    } catch {
      // Not valid URL encoding: not a name worth keeping.
    }
    if (!PARAM_NAME.test(name)) return '[redacted]';
    return `${name}=[redacted]`;
  });
  return `${path}?${params.join('&')}`;
}
