const WORDS: Record<string, [string, string]> = {
  active: ['In force', 'badge-ok'],
  'pending-signature': ['Waiting for your signature', 'badge-warn'],
  revoked: ['Withdrawn', 'badge-err'],
  'hash-mismatch': ['Changed after you signed it: not in force', 'badge-err'],
  off: ['In force (no signature needed on this server)', 'badge-ok'],
  inactive: ['Not in use', 'badge'],
  unknown: ['Status unknown right now', 'badge-warn'],
};

export function statusWords(status: string): string { return (WORDS[status] ?? WORDS.unknown!)[0]; }

export function StatusBadge({ status }: { status: string }) {
  const [text, cls] = WORDS[status] ?? WORDS.unknown!;
  return <span class={`badge ${cls}`}>{text}</span>;
}
