/**
 * The search-index tables: one per kind of search parameter (idx_token, idx_date, ...), shared by
 * every resource type. (AuditEvents are not in them: the audit journal, audit-journal.ts, keeps
 * their search keys.)
 */
export const INDEX_KINDS = ['token', 'string', 'date', 'number', 'quantity', 'reference', 'uri'] as const;
export type IndexKind = (typeof INDEX_KINDS)[number];

export function indexTable(kind: IndexKind): string {
  return `idx_${kind}`;
}

/** The kind of an index table name (idx_date: 'date'). */
export function kindOf(table: string): IndexKind {
  return table.slice(table.indexOf('_') + 1) as IndexKind;
}
