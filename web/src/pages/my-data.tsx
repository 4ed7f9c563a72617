/**
 * My data: the record in plain words (about you, device readings with charts, conditions,
 * medicines), each value with a "Check this value" proof check.
 */
import { useEffect, useMemo, useState } from 'preact/hooks';
import type { Session } from '../session.js';
import { ErrorNotice, Loading } from '../components/notice.js';
import { VerifyPanel } from '../components/verify-panel.js';
import { humanName, when, type Patient } from '../fhir-text.js';
import { conceptText } from '../fhir-text.js';
import type { Condition, Device, Medication, Observation } from '../data/fhir-types.js';
import { deviceDetails, deviceName, deviceOf, patientDevices, type DeviceMap } from '../data/devices.js';
import { effectiveTime, fmt, latestGroups, readingsInRange, toSeries, valueText, CHART_CAP, LATEST_READINGS, type ReadingGroup } from '../data/observations.js';
import { conditions, conditionStatus, medicationDose, medicationName, medications, medicationStatus } from '../data/record.js';
import { TimeChart } from '../data/chart.js';
import './my-data.css';

type Loaded<T> = { value?: T; error?: unknown };

function useLoad<T>(load: () => Promise<T>, deps: unknown[]): Loaded<T> {
  const [state, setState] = useState<Loaded<T>>({});
  useEffect(() => {
    let live = true;
    setState({});
    load().then((value) => { if (live) setState({ value }); }, (error: unknown) => { if (live) setState({ error }); });
    return () => { live = false; };
  }, deps);
  return state;
}

export function MyDataPage({ session }: { session: Session; params: URLSearchParams }) {
  const patient = useLoad(() => session.get<PatientRecord>(`Patient/${encodeURIComponent(session.patientId)}`), [session]);
  const groups = useLoad(() => latestGroups(session), [session]);
  const devices = useLoad(() => patientDevices(session), [session]);
  const conds = useLoad(() => conditions(session), [session]);
  const meds = useLoad(() => medications(session), [session]);

  return (
    <section aria-labelledby="page-title" class="my-data">
      <h1 id="page-title">My data</h1>
      <AboutYou state={patient} />
      <section aria-labelledby="readings-title">
        <h2 id="readings-title">Readings from your devices</h2>
        <ErrorNotice error={groups.error} />
        {!groups.value && !groups.error && <Loading what="your readings" />}
        {groups.value?.length === 0 && <p>There are no readings in your record yet.</p>}
        {groups.value && groups.value.length > 0 && (
          <>
            <p class="hint">Kinds of readings found among your latest {LATEST_READINGS}. Each chart asks the server only for the period you choose.</p>
            {groups.value.map((g) => <ReadingCard key={g.key} session={session} group={g} devices={devices.value ?? new Map()} />)}
          </>
        )}
      </section>
      <Conditions session={session} state={conds} />
      <Medicines session={session} state={meds} />
    </section>
  );
}

interface PatientRecord extends Patient {
  meta?: { versionId?: string };
  telecom?: Array<{ system?: string; value?: string; use?: string }>;
  address?: Array<{ text?: string; line?: string[]; city?: string; postalCode?: string; country?: string }>;
}

const GENDER: Record<string, string> = { female: 'Female', male: 'Male', other: 'Other', unknown: 'Not given' };
const TELECOM: Record<string, string> = { phone: 'Phone', email: 'Email', sms: 'Text messages', fax: 'Fax', url: 'Web' };

function AboutYou({ state }: { state: Loaded<PatientRecord> }) {
  const p = state.value;
  return (
    <section aria-labelledby="about-title" class="card">
      <h2 id="about-title">About you</h2>
      <ErrorNotice error={state.error} />
      {!p && !state.error && <Loading what="your details" />}
      {p && (
        <dl class="facts">
          <dt>Name</dt><dd>{humanName(p.name) || 'Not given'}</dd>
          <dt>Born</dt><dd>{p.birthDate ? when(p.birthDate, false) : 'Not given'}</dd>
          <dt>Gender</dt><dd>{p.gender ? GENDER[p.gender] ?? p.gender : 'Not given'}</dd>
          <dt>Contact</dt>
          <dd>{p.telecom?.length ? p.telecom.map((t) => <div key={`${t.system}${t.value}`}>{TELECOM[t.system ?? ''] ?? 'Contact'}: {t.value}</div>) : 'Not given'}</dd>
          {p.address?.length ? <><dt>Address</dt><dd>{p.address.map((a, i) => <div key={i}>{a.text ?? [...(a.line ?? []), a.postalCode, a.city, a.country].filter(Boolean).join(', ')}</div>)}</dd></> : null}
        </dl>
      )}
    </section>
  );
}

const SPANS = [
  { key: '7d', label: 'Last 7 days', ms: 7 * 86400e3 },
  { key: '30d', label: 'Last 30 days', ms: 30 * 86400e3 },
  { key: '1y', label: 'Last year', ms: 365 * 86400e3 },
  { key: 'all', label: 'All', ms: undefined },
] as const;
type SpanKey = (typeof SPANS)[number]['key'];

function ReadingCard({ session, group, devices }: { session: Session; group: ReadingGroup; devices: DeviceMap }) {
  const latest = group.latest;
  const device = deviceOf(latest.device, devices);
  const headingId = `g-${slug(group.key)}`;
  const latestText = `${group.name} ${valueText(latest)}${effectiveTime(latest) ? ` on ${when(effectiveTime(latest))}` : ''}`;
  return (
    <section class="card reading" aria-labelledby={headingId} data-code={group.key}>
      <h3 id={headingId}>{group.name}</h3>
      <div class="reading-latest">
        <p class="secondary">Latest reading</p>
        <p class="latest">{valueText(latest) || 'no value'}</p>
        <p>{effectiveTime(latest) ? when(effectiveTime(latest)) : 'Time not given'}</p>
        <p><DeviceLine device={device} reference={latest.device?.reference} /></p>
      </div>
      <VerifyPanel session={session} resource={latest} what={`the latest ${latestText}`} />
      {group.token ? <RangeChart session={session} group={group} /> : <p class="hint">This kind of reading has no code to chart it by.</p>}
    </section>
  );
}

function DeviceLine({ device, reference }: { device?: Device; reference?: string }) {
  if (device) {
    const more = deviceDetails(device);
    return <>Measured by <strong>{deviceName(device)}</strong>{more && <span class="secondary"> ({more})</span>}</>;
  }
  return <>{reference ? 'Measured by a device that is not in your record' : 'No device named'}</>;
}

function RangeChart({ session, group }: { session: Session; group: ReadingGroup }) {
  const [span, setSpan] = useState<SpanKey>('30d');
  const [end, setEnd] = useState(() => new Date());
  const spanMs = SPANS.find((s) => s.key === span)!.ms;
  const from = spanMs === undefined ? undefined : new Date(end.getTime() - spanMs);
  const range = useLoad(() => readingsInRange(session, group.token!, from, end), [session, group.token, span, end.getTime()]);
  const data = useMemo(() => (range.value ? toSeries(range.value.readings) : undefined), [range.value]);
  const pick = (k: SpanKey) => { setSpan(k); setEnd(new Date()); };
  const shift = (dir: -1 | 1) => { if (spanMs !== undefined) setEnd(new Date(end.getTime() + dir * spanMs)); };
  const atNow = end.getTime() >= Date.now() - 1000;
  const title = `${group.name}: chart`;
  return (
    <div class="range-chart">
      <div class="range-controls">
        <div role="group" aria-label={`Period for ${group.name}`} class="range-spans">
          {SPANS.map((s) => <button key={s.key} type="button" class="btn btn-small" aria-pressed={s.key === span} onClick={() => pick(s.key)}>{s.label}</button>)}
        </div>
        {spanMs !== undefined && (
          <div class="range-steps">
            <button type="button" class="btn btn-small" onClick={() => shift(-1)}>← Earlier<span class="visually-hidden"> {group.name}</span></button>
            <button type="button" class="btn btn-small" onClick={() => shift(1)} disabled={atNow}>Later →<span class="visually-hidden"> {group.name}</span></button>
          </div>
        )}
      </div>
      <ErrorNotice error={range.error} />
      {!range.value && !range.error && <Loading what="the chart" />}
      {range.value && data && (
        <figure class="reading-chart" aria-label={title} data-count={data.xs.length}>
          <figcaption class="chart-summary">
            <ChartSummary data={data} from={from} to={end} capped={range.value.capped} />
          </figcaption>
          {data.xs.length > 0 && <TimeChart xs={data.xs} series={data.series} values={data.values} />}
          {data.xs.length > 0 && <ReadingsTable readings={range.value.readings} name={group.name} />}
        </figure>
      )}
    </div>
  );
}

function ChartSummary({ data, from, to, capped }: { data: ReturnType<typeof toSeries>; from?: Date; to: Date; capped: boolean }) {
  const period = from ? `from ${when(from.toISOString())} to ${when(to.toISOString())}` : `up to ${when(to.toISOString())}`;
  const n = data.xs.length;
  if (n === 0) return <>No readings {period}.</>;
  const ranges = data.series.map((s, i) => {
    const vs = data.values[i]!.filter((v): v is number => v !== null);
    return vs.length ? `${data.series.length > 1 ? `${s.label}: ` : ''}lowest ${fmt(Math.min(...vs))}, highest ${fmt(Math.max(...vs))} ${s.unit}`.trim() : '';
  }).filter(Boolean);
  return (
    <>
      <strong class="chart-count">{n} {n === 1 ? 'reading' : 'readings'}</strong> {period}. {ranges.join('; ')}.
      {capped && <> Only the first {CHART_CAP} readings are shown: choose a shorter period to see the rest.</>}
    </>
  );
}

function ReadingsTable({ readings, name }: { readings: Observation[]; name: string }) {
  const [open, setOpen] = useState(false);
  return (
    <details class="readings-table" onToggle={(e) => setOpen((e.currentTarget as HTMLDetailsElement).open)}>
      <summary>Show these readings as a table</summary>
      {open && (
        <div class="table-wrap" tabIndex={0} role="region" aria-label={`${name} readings, scrollable`}>
          <table>
            <caption class="visually-hidden">{name} readings</caption>
            <thead><tr><th scope="col">When</th><th scope="col">Value</th></tr></thead>
            <tbody>
              {[...readings].reverse().map((o) => <tr key={o.id}><td>{when(effectiveTime(o))}</td><td>{valueText(o)}</td></tr>)}
            </tbody>
          </table>
        </div>
      )}
    </details>
  );
}

function Conditions({ session, state }: { session: Session; state: Loaded<Condition[]> }) {
  return (
    <section aria-labelledby="conditions-title" class="card">
      <h2 id="conditions-title">Conditions</h2>
      <ErrorNotice error={state.error} />
      {!state.value && !state.error && <Loading what="your conditions" />}
      {state.value?.length === 0 && <p>No conditions are recorded.</p>}
      {state.value && state.value.length > 0 && (
        <ul class="record-list">
          {state.value.map((c) => {
            const name = conceptText(c.code) || 'A condition';
            const since = c.onsetDateTime ?? c.recordedDate;
            return (
              <li key={c.id} class="record-item">
                <p class="record-name"><strong>{name}</strong> {conditionStatus(c) && <span class="badge">{conditionStatus(c)}</span>}</p>
                {since && <p class="secondary">Since {when(since, false)}</p>}
                <VerifyPanel session={session} resource={c} what={`the condition ${name}`} />
              </li>
            );
          })}
        </ul>
      )}
    </section>
  );
}

function Medicines({ session, state }: { session: Session; state: Loaded<Medication[]> }) {
  return (
    <section aria-labelledby="medicines-title" class="card">
      <h2 id="medicines-title">Medicines</h2>
      <ErrorNotice error={state.error} />
      {!state.value && !state.error && <Loading what="your medicines" />}
      {state.value?.length === 0 && <p>No medicines are recorded.</p>}
      {state.value && state.value.length > 0 && (
        <ul class="record-list">
          {state.value.map((m) => {
            const name = medicationName(m);
            const dose = medicationDose(m);
            const since = m.authoredOn ?? m.effectiveDateTime ?? m.effectivePeriod?.start;
            return (
              <li key={`${m.resourceType}/${m.id}`} class="record-item">
                <p class="record-name"><strong>{name}</strong> {medicationStatus(m) && <span class="badge">{medicationStatus(m)}</span>}</p>
                {dose && <p>{dose}</p>}
                {since && <p class="secondary">{m.resourceType === 'MedicationRequest' ? 'Prescribed' : 'Since'} {when(since, false)}</p>}
                <VerifyPanel session={session} resource={m} what={`the medicine ${name}`} />
              </li>
            );
          })}
        </ul>
      )}
    </section>
  );
}

function slug(s: string): string {
  return s.replace(/[^a-zA-Z0-9]+/g, '-').replace(/^-|-$/g, '').slice(-40);
}
