/**
 * The audit journal read the way the store reads every other resource type: AuditEvents as
 * stored versions (each has one version; its id is its audit sequence number), with the reads,
 * history, search, includes and patient lookups that other types get from the version and index
 * tables. The SQLite reader hands every AuditEvent question to this one place.
 */
import type { Resource } from '@medplum/fhirtypes';
import type { Blinder } from '../blind.js';
import type { HistoryQuery, HistoryResult, ReadOptions, SearchFilter, SearchQuery, SearchResult, StoredVersion } from '../types.js';
import { AuditJournal, auditSeq, KEY_FLAGS, type KeyParam } from './audit-journal.js';

/** A journal entry as a stored version. */
export function auditVersion(seq: number, lastUpdated: number, contentHash: string, resource?: Resource): StoredVersion {
  return { resourceType: 'AuditEvent', id: String(seq), versionId: 1, lastUpdated: new Date(lastUpdated).toISOString(), deleted: false, contentHash, ...(resource ? { resource } : {}) };
}

/** Sequence numbers of ids that can be AuditEvent ids (others name no AuditEvent). */
function seqsOf(ids: readonly string[]): number[] {
  return ids.flatMap((id) => { const s = auditSeq(id); return s === undefined ? [] : [s]; });
}

export class JournalReader {
  constructor(
    private readonly journal: AuditJournal,
    private readonly blinder: Blinder,
    /** The data key a batch is sealed under (undefined once it is gone). */
    private readonly keyFor: (keyId: number) => Buffer | undefined,
  ) {}

  /** AuditEvents as stored versions, in the order of `seqs`. */
  versions(seqs: number[]): StoredVersion[] {
    return this.journal.events(seqs, this.keyFor)
      .map((e) => auditVersion(e.seq, e.lastUpdated, e.contentHash, JSON.parse(e.json) as Resource));
  }

  read(id: string, options?: ReadOptions): StoredVersion | undefined {
    const seq = auditSeq(id);
    const v = seq === undefined ? undefined : this.versions([seq])[0];
    if (v && options?.patientsVia?.length) v.patients = this.patientsOf([id]).get(id) ?? [];
    return v;
  }

  vread(id: string, versionId: number): StoredVersion | undefined {
    return versionId === 1 ? this.read(id) : undefined;
  }

  /** History: one version each; with an access condition, only those it lets through. */
  history(q: HistoryQuery): HistoryResult {
    if (q.id !== undefined) {
      const seq = auditSeq(q.id);
      const versions = seq === undefined ? [] : this.versions([seq]).filter((v) => (!q.since || v.lastUpdated >= q.since) && (!q.before || v.lastUpdated <= q.before));
      return { total: versions.length, versions: versions.slice(q.offset, q.offset + q.count) };
    }
    if (q.access !== undefined && q.access !== true) {
      // As a search ordered newest first (type history of a confined principal).
      const filters: SearchFilter[] = [];
      if (q.since) filters.push({ param: '_lastUpdated', type: 'date', values: [{ prefix: 'ge', value: q.since }], blinded: false });
      if (q.before) filters.push({ param: '_lastUpdated', type: 'date', values: [{ prefix: 'le', value: q.before }], blinded: false });
      const found = this.journal.search({ resourceType: 'AuditEvent', filters, sort: [{ code: '_id', descending: true }], count: q.count, offset: q.offset, total: 'accurate', access: q.access }, this.blinder);
      return { total: found.total ?? 0, versions: this.versions(found.seqs) };
    }
    const page = this.journal.history({ ...(q.since ? { since: Date.parse(q.since) } : {}), ...(q.before ? { before: Date.parse(q.before) } : {}), count: q.count, offset: q.offset });
    return { total: page.total, versions: this.versions(page.seqs) };
  }

  search(q: SearchQuery): SearchResult {
    const found = this.journal.search(q, this.blinder);
    return { matches: q.count > 0 ? this.versions(found.seqs) : [], total: found.total, hasMore: found.hasMore, ...(found.last ? { last: found.last } : {}) };
  }

  /** The Patients each AuditEvent names (id -> patient ids). */
  patientsOf(ids: string[]): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const k of this.journal.keysOf(seqsOf(ids))) {
      if ((k.flags & KEY_FLAGS.patient) === 0) continue;
      const list = out.get(String(k.seq)) ?? [];
      list.push(k.value.slice('Patient/'.length));
      out.set(String(k.seq), list);
    }
    return out;
  }

  /** The AuditEvents naming one of `targets` ("Type/id") through `param` ('*': any of agent, entity, patient), in sequence order. */
  referencing(param: string, targets: string[], limit: number): StoredVersion[] {
    const params = param === '*' ? (Object.keys(KEY_FLAGS) as KeyParam[]) : [param];
    const seqs = new Set<number>();
    // Any of the params: one search per param, merged in sequence order.
    for (const p of params) {
      if (!(p in KEY_FLAGS)) continue;
      const filter: SearchFilter = { param: p, type: 'reference', values: targets.map((value) => ({ prefix: 'eq', value })), blinded: false };
      for (const s of this.journal.search({ resourceType: 'AuditEvent', filters: [filter], sort: [], count: limit, offset: 0, total: 'none' }, this.blinder).seqs) seqs.add(s);
    }
    return this.versions([...seqs].sort((a, b) => a - b).slice(0, limit));
  }

  /** Ids of all AuditEvents, in sequence order. */
  ids(): string[] {
    return this.journal.allSeqs().map(String);
  }

  /** "Type/id" of what these AuditEvents name through `param` ('*': any), only of `targetType` if given. */
  targets(ids: string[], param: string, targetType: string | undefined): string[] {
    const mask = param === '*' ? KEY_FLAGS.agent | KEY_FLAGS.entity | KEY_FLAGS.patient : (KEY_FLAGS as Record<string, number>)[param] ?? 0;
    const out: string[] = [];
    for (const k of this.journal.keysOf(seqsOf(ids))) if ((k.flags & mask) !== 0 && (!targetType || k.value.startsWith(`${targetType}/`))) out.push(k.value);
    return out;
  }
}
