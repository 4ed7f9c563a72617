/**
 * "Who saw my data": the people and systems that touched the patient's record ($access-report),
 * emergency (break-the-glass) accesses first with their reason ($break-glass), then the accesses
 * themselves from the patient's AuditEvent trail, filtered by who, date and kind, a page at a time.
 */
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import type { Session } from '../session.js';
import { useDraft } from '../drafts.js';
import { ErrorNotice, Loading, Notice } from '../components/notice.js';
import type { Parameters } from '../access/fhir-params.js';
import { parseAccessReport, type AccessReport, type Actor } from '../access/report.js';
import { parseBreakGlass, type EmergencyGrant } from '../access/break-glass.js';
import { byActor, nextLink, PAGE_SIZE, toAccess, trailQuery, type Access, type Bundle, type Kind, type TrailFilters } from '../access/trail.js';
import { resolveLabels } from '../access/names.js';
import { deed, manyOf } from '../access/words.js';
import { day, onDayAt } from '../access/when.js';
import './access.css';

type Labels = Map<string, string | null>;

const KINDS: Array<{ value: Kind; label: string }> = [
  { value: 'all', label: 'Everything' },
  { value: 'read', label: 'Reads' },
  { value: 'search', label: 'Searches' },
  { value: 'change', label: 'Changes' },
  { value: 'refused', label: 'Refused' },
];

/** At most this many pages are fetched for one "Show more" while hidden entries (the patient's own) fill them. */
const MAX_PAGES_PER_STEP = 5;

const GENERIC: Record<string, string> = {
  Practitioner: 'A practitioner', PractitionerRole: 'A practitioner', Organization: 'An organization', RelatedPerson: 'A relative or carer', Patient: 'Another person',
};

export function AccessPage({ session }: { session: Session; params: URLSearchParams }) {
  const self = `Patient/${session.patientId}`;
  const [report, setReport] = useState<AccessReport | undefined>();
  const [reportError, setReportError] = useState<unknown>();
  const [grants, setGrants] = useState<EmergencyGrant[] | undefined>();
  const [grantsError, setGrantsError] = useState<unknown>();
  const [labels, setLabels] = useState<Labels>(() => new Map());

  const [who, setWho] = useDraft('access:who', '');
  const [from, setFrom] = useDraft('access:from', '');
  const [to, setTo] = useDraft('access:to', '');
  const [kind, setKind] = useDraft<Kind>('access:kind', 'all');
  const [mine, setMine] = useDraft('access:mine', false);
  const filters: TrailFilters = { who, from, to, kind, mine };

  const [entries, setEntries] = useState<Access[]>([]);
  const shown = useRef<Access[]>([]);
  shown.current = entries;
  const [next, setNext] = useState<string | undefined>();
  const [trailLoading, setTrailLoading] = useState(false);
  const [trailError, setTrailError] = useState<unknown>();
  const generation = useRef(0);
  const trailHeading = useRef<HTMLHeadingElement>(null);

  useEffect(() => {
    session.get<Parameters>(`Patient/${session.patientId}/$access-report`).then((p) => setReport(parseAccessReport(p)), setReportError);
    session.get<Parameters>(`Patient/${session.patientId}/$break-glass`).then((p) => setGrants(parseBreakGlass(p)), setGrantsError);
  }, [session]);

  const clientNames = useMemo(() => {
    const m = new Map<string, string>();
    for (const a of report?.actors ?? []) if (a.clientId && a.clientName) m.set(a.clientId, a.clientName);
    return m;
  }, [report]);

  const nameOf = (ref: string): string => {
    if (ref === self) return 'You';
    return labels.get(ref) || GENERIC[ref.split('/')[0]!] || 'Someone';
  };
  const appName = (clientId: string): string | undefined =>
    clientNames.get(clientId) ?? (clientId === session.config.clientId ? 'this portal' : undefined);
  const actorName = (a: Actor): string => {
    if (a.reference) return nameOf(a.reference);
    if (a.clientId) return cap(appName(a.clientId) ?? 'An app or system');
    return a.display?.startsWith('custos') ? 'The record server itself' : 'Someone who was not signed in';
  };
  const accessActor = (a: Access): string => {
    if (a.user) return nameOf(a.user);
    if (a.clientId) return cap(appName(a.clientId) ?? 'An app or system');
    return a.display?.startsWith('custos') ? 'The record server itself' : 'Someone who was not signed in';
  };
  const label = (ref: string): string | undefined => labels.get(ref) ?? undefined;

  // Pages of the trail: the first on every change of the filters, more on "Show more".
  // The results shown belong to the filters of the last completed load; until the current ones
  // have theirs, the list is marked busy rather than passed off as the answer to the new filters.
  const currentKey = `${trailQuery(session.patientId, filters)}&mine=${mine}`;
  const [loadedKey, setLoadedKey] = useState<string | undefined>();
  const busy = trailLoading || loadedKey !== currentKey;

  const load = async (start: string | undefined, append: boolean) => {
    const gen = ++generation.current;
    setTrailLoading(true);
    setTrailError(undefined);
    let url: string | undefined = start ?? trailQuery(session.patientId, filters);
    const found: Access[] = [];
    const seen = new Set(append ? shown.current.map((a) => a.id) : []);
    try {
      for (let pages = 0; url && pages < MAX_PAGES_PER_STEP && found.length < PAGE_SIZE; pages++) {
        const b: Bundle = await session.get<Bundle>(url);
        if (gen !== generation.current) return;
        const page = (b.entry ?? []).flatMap((e) => (e.resource?.resourceType === 'AuditEvent' ? [toAccess(e.resource)] : []));
        // Offset paging over a trail that grows at the top (the patient's own reads land there while
        // they page) shifts older entries down into the next page: each is shown once, by id.
        for (const a of page) {
          if (seen.has(a.id) || !byActor(a, who) || (!mine && who !== self && a.user === self)) continue;
          seen.add(a.id);
          found.push(a);
        }
        url = nextLink(b);
      }
      setEntries(append ? [...shown.current, ...found] : found);
      if (!append) setLoadedKey(currentKey);
      setNext(url);
    } catch (err) {
      if (gen === generation.current) setTrailError(err);
    } finally {
      if (gen === generation.current) setTrailLoading(false);
    }
  };
  useEffect(() => { void load(undefined, false); }, [session, who, from, to, kind, mine]);

  // Names for whoever and whatever is on the page, read once each.
  useEffect(() => {
    const refs = new Set<string>();
    for (const a of report?.actors ?? []) if (a.reference) refs.add(a.reference);
    for (const g of grants ?? []) { refs.add(g.practitioner); for (const x of g.accesses) x.resources.forEach((r) => refs.add(r)); }
    for (const e of entries) { if (e.user) refs.add(e.user); e.resources.forEach((r) => refs.add(r)); }
    refs.delete(self);
    const missing = [...refs].filter((r) => !labels.has(r));
    if (missing.length === 0) return;
    let live = true;
    void resolveLabels(session, missing, new Map()).then((found) => {
      if (!live) return;
      setLabels((prev) => { const m = new Map(prev); for (const [k, v] of found) m.set(k, v); for (const r of missing) if (!m.has(r)) m.set(r, null); return m; });
    });
    return () => { live = false; };
  }, [session, report, grants, entries]);

  const showActor = (key: string) => {
    setWho(key);
    trailHeading.current?.scrollIntoView({ block: 'start' });
    trailHeading.current?.focus();
  };
  const clearFilters = () => { setWho(''); setFrom(''); setTo(''); setKind('all'); setMine(false); };

  const actors = useMemo(() => {
    const list = [...(report?.actors ?? [])];
    // The patient's own use of their record comes last: others are what this page is for.
    return [...list.filter((a) => a.reference !== self), ...list.filter((a) => a.reference === self)];
  }, [report]);

  return (
    <section aria-labelledby="page-title" class="access">
      <h1 id="page-title">Who saw my data</h1>
      <p>Everyone who opened, searched or changed your record is listed here, and every time someone was turned away.</p>
      {report?.note && <Notice kind="warn"><p>This server is not keeping a record of who looks at your data right now, so new accesses do not show here.</p></Notice>}

      <Emergency grants={grants} error={grantsError} nameOf={nameOf} label={label} />

      <h2 id="actors-title">People and systems</h2>
      <ErrorNotice error={reportError} />
      {!report && !reportError && <Loading what="who accessed your data" />}
      {report && actors.length === 0 && <p>No one has accessed your record yet.</p>}
      {actors.length > 0 && (
        <ul class="actors" aria-labelledby="actors-title">
          {actors.map((a) => (
            <li key={a.key} class="card actor">
              <h3>{actorName(a)}</h3>
              <p class="secondary">{kindOfActor(a, self)}</p>
              <p>
                {a.count} {a.count === 1 ? 'access' : 'accesses'}, the last {onDayAt(a.last)}
                {a.count > 1 && a.first ? <>; the first on {day(a.first)}</> : null}.
              </p>
              {a.resourceTypes.length > 0 && <p>Concerning your {list(a.resourceTypes.map(manyOf))}.</p>}
              <p class="badges">
                {a.breakGlass && <span class="badge badge-warn">Emergency access</span>}
                {a.refused > 0 && <span class="badge badge-err">Refused {a.refused} {a.refused === 1 ? 'time' : 'times'}</span>}
              </p>
              {!a.display && (
                <button type="button" class="btn" onClick={() => showActor(a.key)}>
                  Show only {a.reference === self ? 'what you did' : 'their accesses'}<span class="visually-hidden"> ({actorName(a)})</span>
                </button>
              )}
            </li>
          ))}
        </ul>
      )}

      <h2 id="trail-title" ref={trailHeading} tabIndex={-1}>Each access</h2>
      <form class="card filters" aria-labelledby="trail-title" onSubmit={(e) => e.preventDefault()}>
        <div class="filter-row">
          <div>
            <label for="access-who">Who</label>
            <select id="access-who" value={who} onChange={(e) => setWho((e.target as HTMLSelectElement).value)}>
              <option value="">Everyone</option>
              {actors.filter((a) => !a.display).map((a) => <option key={a.key} value={a.key}>{actorName(a)}</option>)}
              {who && !actors.some((a) => a.key === who) && <option value={who}>{who.startsWith('client:') ? 'An app or system' : nameOf(who)}</option>}
            </select>
          </div>
          <div>
            <label for="access-from">From</label>
            <input id="access-from" type="date" value={from} max={to || undefined} onInput={(e) => setFrom((e.target as HTMLInputElement).value)} />
          </div>
          <div>
            <label for="access-to">To</label>
            <input id="access-to" type="date" value={to} min={from || undefined} onInput={(e) => setTo((e.target as HTMLInputElement).value)} />
          </div>
        </div>
        <fieldset class="kinds">
          <legend>Kind of access</legend>
          {KINDS.map((k) => (
            <div class="choice" key={k.value}>
              <input type="radio" id={`access-kind-${k.value}`} name="access-kind" value={k.value} checked={kind === k.value} onChange={() => setKind(k.value)} />
              <label for={`access-kind-${k.value}`}>{k.label}</label>
            </div>
          ))}
        </fieldset>
        <div class="choice">
          <input type="checkbox" id="access-mine" checked={mine || who === self} disabled={who === self} onChange={(e) => setMine((e.target as HTMLInputElement).checked)} />
          <label for="access-mine">Include what I did myself</label>
        </div>
        <div class="actions">
          <button type="button" class="btn" onClick={clearFilters}>Clear filters</button>
        </div>
      </form>

      <ErrorNotice error={trailError} />
      <p role="status" class="trail-count">
        {trailError ? 'The accesses could not be shown.' : busy ? 'Loading accesses…' : entries.length === 0 ? 'No access matches these filters.' : `Showing ${entries.length} ${entries.length === 1 ? 'access' : 'accesses'}${next ? ' (there are more)' : ''}.`}
      </p>
      {entries.length > 0 && (
        <ol class="trail" aria-labelledby="trail-title" aria-busy={busy}>
          {entries.map((a) => (
            <li key={a.id} class={a.refused ? 'refused' : a.emergency ? 'emergency-access' : undefined}>
              <p>
                <strong>{accessActor(a)}</strong> {deed(a, label, appName)} <time dateTime={a.at}>{onDayAt(a.at)}</time>.
              </p>
              {(a.refused || a.emergency) && (
                <p class="badges">
                  {a.refused && <span class="badge badge-err">Refused</span>}
                  {a.emergency && <span class="badge badge-warn">Emergency access</span>}
                </p>
              )}
            </li>
          ))}
        </ol>
      )}
      {next && (
        <div class="actions">
          <button type="button" class="btn" disabled={busy} onClick={() => { void load(next, true); }}>Show more</button>
        </div>
      )}
    </section>
  );
}

function Emergency({ grants, error, nameOf, label }: { grants: EmergencyGrant[] | undefined; error: unknown; nameOf: (ref: string) => string; label: (ref: string) => string | undefined }) {
  if (error) return <section aria-labelledby="emergency-title"><h2 id="emergency-title">Emergency access</h2><ErrorNotice error={error} /></section>;
  if (!grants) return <Loading what="emergency accesses" />;
  if (grants.length === 0) {
    return (
      <section aria-labelledby="emergency-title" class="card no-emergency">
        <h2 id="emergency-title">Emergency access</h2>
        <p>No one has opened your record in an emergency.</p>
      </section>
    );
  }
  return (
    <section aria-labelledby="emergency-title" class="card emergency">
      <h2 id="emergency-title">Emergency access</h2>
      <p>In an emergency, some care staff may open your record without your permission. Every time this happened is listed here.</p>
      <ul class="grants">
        {grants.map((g) => (
          <li key={g.id} class="grant">
            <p><strong>{nameOf(g.practitioner)}</strong> opened your record in an emergency <time dateTime={g.granted}>{onDayAt(g.granted)}</time>.</p>
            <p class="reason">Reason given: <q>{g.reason}</q></p>
            <p>{g.active ? <>This emergency access is open until {onDayAt(g.expires).replace(/^on /, '')}.</> : <>This emergency access ended {onDayAt(g.expires)}.</>}</p>
            {g.accesses.length === 0 ? <p class="secondary">Nothing was looked at under it.</p> : (
              <details>
                <summary>What they looked at ({g.accesses.length})</summary>
                <ul>
                  {g.accesses.map((x, i) => (
                    <li key={i}>
                      {deed({ id: '', at: x.time, interaction: x.interaction, resources: x.resources, refused: false, failed: false, emergency: true }, label, () => undefined)}
                      {' '}<time dateTime={x.time}>{onDayAt(x.time)}</time>
                    </li>
                  ))}
                </ul>
              </details>
            )}
          </li>
        ))}
      </ul>
    </section>
  );
}

function kindOfActor(a: Actor, self: string): string {
  if (a.reference === self) return 'You, through this portal or apps you allowed';
  if (a.reference) {
    const type = a.reference.split('/')[0]!;
    // Another patient's account can only have tried (and been refused): it is not named.
    return { Practitioner: 'Care staff', PractitionerRole: 'Care staff', Organization: 'Organization', RelatedPerson: 'Relative or carer', Patient: 'Someone else with an account here' }[type] ?? 'Someone with an account here';
  }
  if (a.clientId) return 'An app or system acting on its own';
  return 'The record server';
}

function cap(s: string): string { return s ? s[0]!.toUpperCase() + s.slice(1) : s; }

function list(items: string[]): string {
  const u = [...new Set(items)];
  return u.length <= 1 ? (u[0] ?? '') : `${u.slice(0, -1).join(', ')} and ${u[u.length - 1]}`;
}

