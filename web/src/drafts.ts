import { useEffect, useState } from 'preact/hooks';

/**
 * Form state that survives a sign-in round trip: kept in sessionStorage (this tab only, gone when
 * it closes) under the given key, so an expired session never loses what the patient typed.
 */
const PREFIX = 'custos-draft:';

export function useDraft<T>(key: string, initial: T): [T, (next: T) => void, () => void] {
  const [value, setValue] = useState<T>(() => {
    const saved = sessionStorage.getItem(PREFIX + key);
    if (saved === null) return initial;
    try { return JSON.parse(saved) as T; } catch { return initial; }
  });
  useEffect(() => { sessionStorage.setItem(PREFIX + key, JSON.stringify(value)); }, [key, value]);
  const clear = () => { sessionStorage.removeItem(PREFIX + key); setValue(initial); };
  return [value, setValue, clear];
}

export function clearDrafts(): void {
  for (const k of Object.keys(sessionStorage)) if (k.startsWith(PREFIX)) sessionStorage.removeItem(k);
}
