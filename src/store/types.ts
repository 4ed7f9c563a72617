import type { AuditEvent, Resource } from '@medplum/fhirtypes';

/** One immutable version of a resource, as the store hands it back (decrypted). */
export interface StoredVersion {
  resourceType: string;
  id: string;
  versionId: number;
  /** ISO instant, also in resource.meta.lastUpdated */
  lastUpdated: string;
  deleted: boolean;
  /** The resource body; undefined for a delete marker. */
  resource?: Resource;
  /** SHA-256 (hex) of the RFC 8785 canonical JSON of the stored resource (of the delete marker for deletes). */
  contentHash: string;
  /** Ids of the Patients the current version references through ReadOptions.patientsVia (when asked). */
  patients?: string[];
}

export interface ReadOptions {
  /**
   * Also answer with the Patients the resource references through these reference params (its
   * patient compartment params): in the same statement as the read, which is what the audit
   * trail of every read needs.
   */
  patientsVia?: string[];
}

/** Search-index rows extracted from one resource, one array per search-parameter kind. */
export interface IndexRows {
  token: TokenRow[];
  string: StringRow[];
  date: DateRow[];
  number: NumberRow[];
  quantity: QuantityRow[];
  reference: ReferenceRow[];
  uri: UriRow[];
  /** The blinded free texts behind this resource's `:text` rows of patient data (see TextEntry). */
  texts?: TextEntry[];
}

/**
 * A blinded free text (CodeableConcept.text or Coding.display of patient data). Its `:text` row in
 * idx_string has value = 't:' + HMAC(the whole normalized text); its prefixes ('p:' + HMAC, as for
 * names) go to the text_prefix table once per distinct text, not once per resource, so a display
 * repeated on every Observation costs one index row like a clear one.
 */
export interface TextEntry { value: string; prefixes: readonly string[] }

/** code is the clear code, or HMAC (base64url) of the value when the parameter is blinded. */
export interface TokenRow { param: string; system: string | null; code: string | null; }
/**
 * Clear strings: value = normalized (lowercase, no accents, collapsed spaces), exact = as written.
 * Blinded strings: one row per prefix with value = 'p:' + HMAC(prefix) and exact = null, plus one
 * row with value = 'x:' + HMAC(exact form) and exact = null. Blinded `:text` rows: one row with
 * value = 't:' + HMAC(normalized text) (TextEntry).
 */
export interface StringRow { param: string; value: string; exact: string | null; }
/** Instants as epoch milliseconds; [lo, hi] is the closed range the value covers at its precision. */
export interface DateRow { param: string; lo: number; hi: number; }
export interface NumberRow { param: string; value: number; lo: number; hi: number; }
export interface QuantityRow { param: string; system: string | null; code: string | null; unit: string | null; value: number; lo: number; hi: number; }
/** targetType/targetId for literal relative (or own-base absolute) references; url for everything else (canonical, external). */
export interface ReferenceRow { param: string; targetType: string | null; targetId: string | null; url: string | null; }
export interface UriRow { param: string; value: string; }

export type SortRule = { code: string; descending: boolean };

/** A parsed, validated search (built by src/fhir/search, executed by an adapter). */
export interface SearchQuery {
  resourceType: string;
  /** AND of filters; each filter ORs its values. */
  filters: SearchFilter[];
  sort: SortRule[];
  count: number;
  offset: number;
  total: 'none' | 'estimate' | 'accurate';
  /** Restrict to a Patient compartment: resources that reference the patient through any of `params`. */
  compartment?: { resourceType: string; id: string; params: string[] };
  /** Restrict to resources with these ids (used by conditional operations within a tx). */
  ids?: string[];
  /**
   * Keyset paging: only matches after this position in the query's order (instead of `offset`),
   * as SearchResult.last gave it. Costs the same however deep the page, and neither skips nor
   * repeats a match when others are written or deleted between pages.
   */
  after?: SearchPosition;
  /** What the principal may see (patient consent), compiled into the same query. */
  access?: AccessCondition;
  /**
   * Also give each match the Patients it references through these params (StoredVersion.patients),
   * read with the match itself: its AuditEvent names them.
   */
  patientsVia?: string[];
}

/**
 * A boolean condition on the current version of a resource, decided by its index rows: the
 * form in which consent reaches the store, so it runs inside the query (paging and totals stay exact).
 */
export type AccessCondition =
  | boolean
  | { and: AccessCondition[] }
  | { or: AccessCondition[] }
  | { not: AccessCondition }
  /** A search filter on the resource's own type. */
  | { filter: SearchFilter }
  /** In the compartment of one of these patients, through any of `params` (reference params of the type). */
  | { compartment: { patients: string[]; params: string[] } }
  /** In the compartment of some patient NOT among these, through any of `params` (a resource of several patients). */
  | { outside: { patients: string[]; params: string[] } }
  /** One of these ids (of the resource's type). */
  | { ids: string[] };

export type SearchParamType = 'token' | 'string' | 'date' | 'number' | 'quantity' | 'reference' | 'uri' | 'composite' | 'special';

export type Prefix = 'eq' | 'ne' | 'gt' | 'lt' | 'ge' | 'le' | 'sa' | 'eb' | 'ap';

export interface SearchFilter {
  /** Search parameter code on the searched type, e.g. 'code', '_id', '_lastUpdated', 'subject'. */
  param: string;
  type: SearchParamType;
  /** missing, exact, contains, not, text, identifier, above, below, in, not-in, or a resource type for references. */
  modifier?: string;
  /**
   * Chain one level deep: subject:Patient.name=x -> chain { targetTypes: ['Patient'], filter: name=x }.
   * `access`: per target type, what the principal may see of it (a chain never matches through the rest).
   */
  chain?: { targetTypes: string[]; filter: SearchFilter; access?: Record<string, AccessCondition> };
  /** OR-ed values (comma-separated in the URL), each with its own prefix where the type allows it. */
  values: { prefix: Prefix; value: string }[];
  /** True when the parameter's index is blinded (HMAC) rather than clear. */
  blinded: boolean;
}

export interface SearchResult {
  /** The page of matches, in order. */
  matches: StoredVersion[];
  /** The count when asked for (total = accurate|estimate), else undefined; exact unless `estimate` says otherwise. */
  total?: number;
  /** Set when `total` was estimated (total = estimate, many matches): its 95 % margin and what it was drawn from. */
  estimate?: TotalEstimate;
  /** True when there are matches after this page. */
  hasMore: boolean;
  /** Where the page ends in the query's order, when there is more and the store pages by keyset (SearchQuery.after). */
  last?: SearchPosition;
}

/** An estimated total: total ± margin (95 %), from `sample` rows drawn from a population of `population`. */
export interface TotalEstimate { margin: number; sample: number; population: number }

/** A place in a search's order: the sort keys of a match (one per `_sort` rule) and its row key. */
export interface SearchPosition {
  keys: Array<string | number | null>;
  pk: number;
}

export interface HistoryQuery {
  resourceType?: string;
  id?: string;
  /** Only versions with lastUpdated >= since (ISO instant). */
  since?: string;
  /** Only versions with lastUpdated <= at (stable paging bound). */
  before?: string;
  count: number;
  offset: number;
  /** Type history: only versions of resources whose current version satisfies this. */
  access?: AccessCondition;
}

export interface HistoryResult {
  versions: StoredVersion[];
  total: number;
}

/** What the write path needs from the fhir layer for each new version. */
export interface WriteInput {
  resourceType: string;
  id: string;
  /** The resource to store; meta.versionId and meta.lastUpdated are set by the store. Undefined = delete. */
  resource?: Resource;
  /** When set, the write fails with a VersionConflict unless the current version equals it (If-Match). */
  ifMatch?: number;
  /**
   * The id was just made by the server (newResourceId): there is no current version to look up,
   * and this is version 1. (Were the id taken after all, the store's unique key fails the write.)
   */
  fresh?: boolean;
  /**
   * Search-index rows of `resource`, when the caller already extracted them with this store's
   * indexer (e.g. in a worker thread, outside the write transaction). Otherwise the store does.
   */
  index?: IndexRows;
}

/** Runs inside the write transaction for every stored version (ledger outbox, audit later). */
export interface VersionWriteHook {
  (tx: StoreTransaction, version: StoredVersion): void | Promise<void>;
}

export interface StoreReader {
  read(resourceType: string, id: string, options?: ReadOptions): Promise<StoredVersion | undefined>;
  vread(resourceType: string, id: string, versionId: number): Promise<StoredVersion | undefined>;
  history(query: HistoryQuery): Promise<HistoryResult>;
  search(query: SearchQuery): Promise<SearchResult>;
  /** Current, non-deleted versions that reference any of `targets` ("Type/id") through `param` (or any param if '*'), of `resourceType`. */
  referencing(resourceType: string, param: string, targets: string[], limit: number): Promise<StoredVersion[]>;
  /** For each of `ids` (current versions of one type): the ids of the Patients it references through any of `params`. */
  patientsOf(resourceType: string, ids: string[], params: string[]): Promise<Map<string, string[]>>;
  /** Current, non-deleted targets of the references of the given sources ("Type/id") through `param` (or any param if '*'), optionally of one target type. */
  referencedBy(sources: string[], param: string, targetType: string | undefined, limit: number): Promise<StoredVersion[]>;
}

export interface StoreTransaction extends StoreReader {
  write(input: WriteInput): Promise<StoredVersion>;
  /**
   * The next number of a named sequence (1, 2, ...), taken inside this transaction: a rolled-back
   * transaction gives its number back, so committed numbers have no gaps (the audit trail's order).
   * With `count`, that many numbers are taken at once; the first is returned.
   */
  nextSequence(name: string, count?: number): number;
  /**
   * Appends AuditEvents to the audit journal (their ids are their audit sequence numbers, taken
   * with nextSequence in this transaction; meta.lastUpdated set): one sealed batch.
   */
  appendAuditEvents(events: AuditEvent[]): void;
}

/** The store port. Adapters: sqlite (embedded default); postgres later. */
export interface Store extends StoreReader {
  /**
   * Runs fn in one database transaction. Everything fn writes commits together or not at all;
   * the promise resolves only after the commit is durable. Transactions are serializable.
   */
  transaction<T>(fn: (tx: StoreTransaction) => Promise<T>): Promise<T>;
  /** Persistence of ledger anchoring (batches over the versions in write order). */
  ledger(): LedgerStore;
  /**
   * Runs a few writes of another of the server's connections (the ledger's) in the server's turn
   * at the write lock, so they do not wait for a writer on another thread in SQLite's busy
   * handler, which would stop the event loop. Without such a writer it just runs fn.
   */
  writeTurn<T>(fn: () => T): Promise<T>;
  /** Read-only access for integrity scans (on the read connection; never writes). */
  integrity(): IntegrityReader;
  /**
   * A number that changes whenever a stored Consent, PractitionerRole or CareTeam changes, also
   * through edits made directly in the database (what consent decisions depend on). Cheap.
   */
  watchedChanges(): number;
  /** Ids of the current, non-deleted resources of a type (without reading their bodies). */
  currentIds(resourceType: string): string[];
  close(): Promise<void>;
}

/** One stored search-index row for comparison: its table, parameter and other columns in table order. */
export interface IndexRowTuple { table: string; param: string; values: Array<string | number | null> }

/** One stored version as an integrity scan reads it (decrypted where it can be). */
export interface ScannedVersion {
  /** Write order (the ledger's leaf order). */
  seq: number;
  resourceType: string;
  id: string;
  versionId: number;
  lastUpdated: string;
  deleted: boolean;
  /** The hash recorded when the version was written. */
  contentHash: string;
  /** Whether resource_current points at this version. */
  current: boolean;
  /** The decrypted version; undefined when its body cannot be read (then `error` says why, without content). */
  version?: StoredVersion;
  error?: string;
  /** Current versions only: the resource's stored search-index rows, read in the same snapshot as the version. */
  indexRows?: IndexRowTuple[];
}

/** Read-only access for integrity scans (`custos integrity-check`, `$integrity-check`). */
export interface IntegrityReader {
  /** How many versions are stored, and the highest seq. */
  versionExtent(): { count: number; maxSeq: number };
  /** The last number a named sequence gave out (0 if none): e.g. how many AuditEvents there must be. */
  sequenceValue(name: string): number;
  /** Up to `limit` versions with afterSeq < seq <= untilSeq, in seq order, read in one snapshot. */
  scanVersions(afterSeq: number, untilSeq: number, limit: number): ScannedVersion[];
  /** Up to `limit` audit journal entries with seq > afterSeq, in order, as current versions (indexRows: their stored journal rows). */
  scanAuditJournal(afterSeq: number, limit: number): ScannedVersion[];
  /** Current-version pointers (resource_current) with pk > afterPk, by pk, and whether the version they name is stored. */
  currentPointers(afterPk: number, limit: number): Array<{ pk: number; resourceType: string; id: string; versionId: number; stored: boolean }>;
  /** The index rows this store writes for `resource` (same indexer and index key), in the stored form. */
  derivedIndexRows(resource: Resource): IndexRowTuple[];
  /** Ledger batches with id > afterId, by id (at most `limit`). */
  batches(afterId: number, limit: number): LedgerBatch[];
  /** A batch's leaves (recorded content hashes of its seq range), in order. */
  leaves(batch: LedgerBatch): LedgerLeaf[];
}

/**
 * One leaf as the ledger sees it: a stored version (its write order) or, with `audit`, an entry
 * of the audit journal (its audit sequence number); and its content hash (32 bytes).
 */
export interface LedgerLeaf { seq: number; hash: Buffer; audit?: true }

export type LedgerBatchStatus = 'pending' | 'submitted' | 'confirmed';

/**
 * A batch covers the versions with seq in [firstSeq, lastSeq] (none when firstSeq > lastSeq), in
 * seq order (leaf index = rank in that range), then the audit journal's entries with audit
 * sequence numbers in [auditFirst, auditLast], if any. pending (recorded, tx not known to be
 * sent) -> submitted (tx sent) -> confirmed.
 */
export interface LedgerBatch {
  id: number;
  firstSeq: number;
  lastSeq: number;
  auditFirst?: number;
  auditLast?: number;
  size: number;
  root: Buffer;
  status: LedgerBatchStatus;
  chainId: number;
  contract: string;
  txHash?: string;
  blockNumber?: number;
  blockTime?: number;
  createdAt: number;
}

/** Where one version stands in the ledger. */
export interface LedgerPosition { seq: number; contentHash: string; batch?: LedgerBatch; leafIndex?: number }

/**
 * The version table is the ledger's outbox: every version (and its content hash) is written in
 * its own write transaction with an increasing seq, so "not yet anchored" is simply "seq after
 * the last batch" and costs the write path nothing extra.
 */
export interface LedgerStore {
  /** Versions not in any batch yet, in seq order (at most `limit`). */
  unbatched(limit: number): LedgerLeaf[];
  /** How many versions are not in any batch yet. */
  backlog(): number;
  /** A batch's leaves, in order. */
  leaves(batch: LedgerBatch): LedgerLeaf[];
  /** Records a new pending batch; its range must start after the last batch's. */
  createBatch(b: { firstSeq: number; lastSeq: number; auditFirst?: number; auditLast?: number; size: number; root: Buffer; chainId: number; contract: string }): LedgerBatch;
  markSubmitted(id: number, txHash: string): void;
  /** Confirmed on this chain/contract (a re-anchored batch may move to a redeployed contract). */
  markConfirmed(id: number, r: { txHash: string; blockNumber: number; blockTime: number; chainId: number; contract: string }): void;
  /** Back to pending: its root is not (or no longer) on the chain. */
  markPending(id: number): void;
  openBatches(): LedgerBatch[];
  /** Confirmed batches, newest first, with id below `beforeId` when given. */
  confirmedBatches(limit: number, beforeId?: number): LedgerBatch[];
  lastBatch(): LedgerBatch | undefined;
  /** The current version number of a resource (without reading its body). */
  currentVersion(resourceType: string, id: string): number | undefined;
  /** The batch and leaf index of one version (type/id/version), if it exists. */
  position(resourceType: string, id: string, version: number): LedgerPosition | undefined;
  /** Batches of any status with id > afterId, by id (at most `limit`); read-only. */
  batchesAfter(afterId: number, limit: number): LedgerBatch[];
}
