/**
 * Which tables hold a resource type's search-index rows. AuditEvents (one per request, never
 * updated) have their own, lean tables: only the keys an audit trail is searched by get a
 * secondary index there (who: agent, entity and patient references; when: the date), so each
 * AuditEvent costs a few appended B-tree entries instead of a dozen scattered ones. All other
 * types share the idx_* tables.
 */
export const INDEX_KINDS = ['token', 'string', 'date', 'number', 'quantity', 'reference', 'uri'] as const;
export type IndexKind = (typeof INDEX_KINDS)[number];

/** Types whose index rows are in the aidx_* tables. */
const OWN_TABLES = new Set(['AuditEvent']);

export function indexTable(resourceType: string, kind: IndexKind): string {
  return OWN_TABLES.has(resourceType) ? `aidx_${kind}` : `idx_${kind}`;
}

/** The kind of an index table name (idx_date, aidx_date: 'date'). */
export function kindOf(table: string): IndexKind {
  return table.slice(table.indexOf('_') + 1) as IndexKind;
}

/** Every index table of every kind (both families). */
export function allIndexTables(kind: IndexKind): string[] {
  return [`idx_${kind}`, `aidx_${kind}`];
}
