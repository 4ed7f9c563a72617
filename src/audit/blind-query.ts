import { isParamBlinded, type Blinder } from '../store/index.js';

/**
 * A search query as the audit trail may keep it: values of parameters whose index is blinded
 * (names, identifiers, addresses, telecom, birth dates, ...) and of chained parameters are
 * replaced by their keyed hash, so an AuditEvent never holds them in the clear while the same
 * search still gives the same string.
 */
export function blindQuery(blinder: Blinder, resourceType: string | undefined, query: string): string {
  const out = new URLSearchParams();
  for (const [key, value] of new URLSearchParams(query)) {
    const name = key.split(':')[0]!;
    const sensitive = key.includes('.') || name === 'identifier' || (resourceType !== undefined && !name.startsWith('_') && isParamBlinded(resourceType, name));
    out.append(key, sensitive ? `hmac:${blinder.token(`audit-query:${key}`, value).slice(0, 22)}` : value);
  }
  return out.toString();
}
