import type { Bundle, BundleEntry, BundleLink, Resource } from '@medplum/fhirtypes';
import type { SearchResult, StoredVersion, StoreReader, TotalEstimate } from '../../store/index.js';
import type { CursorCodec } from './cursor.js';
import { keepMembers, keepReadable, type ReadRule } from '../access-constraints.js';
import { applyElements, applySummary } from '../shape.js';
import type { IncludeSpec, ParsedSearch } from './parse.js';

/** Included resources per search page are bounded so one page cannot fan out without limit. */
const MAX_INCLUDES = 1000;

export interface SearchContext {
  baseUrl: string;
  /** Path of the search below the base, e.g. 'Observation' or 'Patient/1/Observation'. */
  selfPath: string;
  /** The request's parameters, for paging links. */
  query: Array<[string, string]>;
  /** A patient-limited principal: included resources outside this patient's compartment are left out. */
  confinedTo?: string;
  /** What included resources may be (types the token can read, and their scope queries). */
  readRule?: ReadRule;
  /** Told the page's matches and the included resources it kept (for the AuditEvent). */
  onPage?: (matches: StoredVersion[], included: StoredVersion[]) => void;
  /** Cursor paging (else `_offset` links only). */
  paging?: SearchPaging;
}

export interface SearchPaging {
  codec: CursorCodec;
  /** searchIdentity of this search: what its cursors are bound to. */
  identity: string;
  /** Matches before this page. */
  offset: number;
  /** The request's own `_cursor`, when it had one. */
  cursor?: string;
}

/** Runs a parsed search and assembles the searchset Bundle (matches, includes, paging links, outcome). */
export async function runSearch(reader: StoreReader, parsed: ParsedSearch, ctx: SearchContext): Promise<Bundle> {
  const q = parsed.query;
  const summaryCount = parsed.summary === 'count';
  if (summaryCount) {
    q.count = 0;
    // A count from statistics unless an exact one is asked for: counting a million matches costs seconds.
    q.total = q.total === 'accurate' ? 'accurate' : 'estimate';
  }
  const result = await reader.search(q);
  const entry: BundleEntry[] = result.matches.map((v) => ({
    fullUrl: fullUrl(ctx.baseUrl, v),
    resource: shape(v.resource!, parsed),
    search: { mode: 'match' },
  }));
  const kept: StoredVersion[] = [];
  if (!summaryCount && result.matches.length > 0) {
    const seen = new Set(result.matches.map(ref));
    const included = await includes(reader, result.matches, parsed.include, parsed.revinclude, ctx.confinedTo, ctx.readRule);
    for (const v of included) {
      if (seen.has(ref(v))) continue;
      seen.add(ref(v));
      kept.push(v);
      entry.push({ fullUrl: fullUrl(ctx.baseUrl, v), resource: v.resource, search: { mode: 'include' } });
    }
  }
  ctx.onPage?.(result.matches, kept);
  if (result.estimate) entry.push(estimateOutcome(result.total!, result.estimate));
  if (parsed.unknown.length > 0) {
    entry.push({
      search: { mode: 'outcome' },
      resource: {
        resourceType: 'OperationOutcome',
        issue: parsed.unknown.map((u) => ({ severity: 'warning', code: 'not-supported', diagnostics: `Search parameter ${u} is not supported and was ignored` })),
      } as Resource,
    });
  }
  const bundle: Bundle = { resourceType: 'Bundle', type: 'searchset', link: links(ctx, parsed, result) };
  if (result.total !== undefined) bundle.total = result.total;
  // FHIR JSON has no empty arrays.
  if (entry.length > 0) bundle.entry = entry;
  return bundle;
}

/** Says that Bundle.total is an estimate, and how good (FHIR has no field for that). */
function estimateOutcome(total: number, e: TotalEstimate): BundleEntry {
  const n = (x: number) => x.toLocaleString('en-US');
  return {
    search: { mode: 'outcome' },
    resource: {
      resourceType: 'OperationOutcome',
      issue: [{
        severity: 'information',
        code: 'informational',
        diagnostics: `total is an estimate: ${n(total)} ± ${n(e.margin)} (95 %), from ${n(e.sample)} of ${n(e.population)} candidate resources drawn at random; ask _total=accurate for an exact count`,
      }],
    } as Resource,
  };
}

const ref = (v: StoredVersion) => `${v.resourceType}/${v.id}`;
const fullUrl = (base: string, v: StoredVersion) => `${base}/${v.resourceType}/${v.id}`;

function shape(resource: Resource, parsed: ParsedSearch): Resource {
  if (parsed.elements?.length) return applyElements(resource, parsed.elements);
  if (parsed.summary === 'true' || parsed.summary === 'text' || parsed.summary === 'data') return applySummary(resource, parsed.summary);
  return resource;
}

async function includes(reader: StoreReader, matches: StoredVersion[], include: IncludeSpec[], revinclude: IncludeSpec[], confinedTo?: string, readRule?: ReadRule): Promise<StoredVersion[]> {
  const allowed = async (vs: StoredVersion[]) => {
    let kept = confinedTo !== undefined ? await keepMembers(reader, vs, confinedTo) : vs;
    if (readRule) kept = await keepReadable(reader, kept, readRule);
    return kept;
  };
  let out: StoredVersion[] = [];
  let sources = matches;
  for (const spec of include) {
    const from = sources.filter((v) => spec.sourceType === '*' || v.resourceType === spec.sourceType).map(ref);
    out.push(...(await reader.referencedBy(from, spec.param, spec.targetType, MAX_INCLUDES)));
  }
  for (const spec of revinclude) {
    out.push(...(await reader.referencing(spec.sourceType, spec.param, matches.map(ref), MAX_INCLUDES)));
  }
  out = await allowed(out);
  // One level of :iterate: includes of what was just included.
  const iterating = include.filter((s) => s.iterate);
  if (iterating.length > 0 && out.length > 0) {
    sources = out.slice();
    const more: StoredVersion[] = [];
    for (const spec of iterating) {
      const from = sources.filter((v) => v.resourceType === spec.sourceType).map(ref);
      more.push(...(await reader.referencedBy(from, spec.param, spec.targetType, MAX_INCLUDES)));
    }
    out.push(...(await allowed(more)));
  }
  return out;
}

function links(ctx: SearchContext, parsed: ParsedSearch, result: SearchResult): BundleLink[] {
  const q = parsed.query;
  const kept = ctx.query.filter(([k]) => k !== '_offset' && k !== '_count' && k !== '_cursor' && !parsed.unknown.includes(k));
  const url = (param?: [string, string]) => {
    const p = new URLSearchParams(kept);
    p.set('_count', String(q.count));
    if (param) p.set(param[0], param[1]);
    return `${ctx.baseUrl}/${ctx.selfPath}?${p.toString()}`;
  };
  const offset = (o: number): [string, string] | undefined => (o > 0 ? ['_offset', String(o)] : undefined);
  const at = ctx.paging?.offset ?? q.offset;
  const own = ctx.paging?.cursor;
  const out: BundleLink[] = [{ relation: 'self', url: url(own !== undefined ? ['_cursor', own] : offset(at)) }];
  if (q.count > 0) {
    out.push({ relation: 'first', url: url() });
    if (at > 0) out.push({ relation: 'previous', url: url(offset(Math.max(0, at - q.count))) });
    if (result.hasMore) {
      // A cursor when the store gives the page's end: the next page then costs the same however deep.
      const next: [string, string] | undefined = result.last && ctx.paging
        ? ['_cursor', ctx.paging.codec.seal(ctx.paging.identity, { ...result.last, offset: at + q.count })]
        : offset(at + q.count);
      out.push({ relation: 'next', url: url(next) });
    }
  }
  return out;
}
