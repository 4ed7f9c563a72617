/** Finding who to share with: care professionals and organizations by name, and the patient's care teams. */
import { useState } from 'preact/hooks';
import { ErrorNotice } from '../components/notice.js';
import { useDraft } from '../drafts.js';
import { humanName, type HumanName } from '../fhir-text.js';
import type { Session } from '../session.js';
import type { Actor } from './consent-shape.js';
import { actorWords } from './describe.js';

interface Bundle<T> { entry?: Array<{ resource?: T; search?: { mode?: string } }> }
interface Named { resourceType: string; id: string; name?: HumanName[] | string; qualification?: unknown; address?: Array<{ city?: string }> }

function displayOf(r: Named): string {
  if (typeof r.name === 'string') return r.name;
  const n = humanName(r.name);
  return r.resourceType === 'Practitioner' && n && !/^dr\.? /i.test(n) ? `Dr ${n}` : n || `${r.resourceType} ${r.id}`;
}

const matches = (b: Bundle<Named>) => (b.entry ?? []).filter((e) => e.search?.mode !== 'include' && e.resource).map((e) => e.resource!);

export async function searchDirectory(session: Session, text: string): Promise<Actor[]> {
  const q = encodeURIComponent(text.trim());
  const [pr, org, teams] = await Promise.all([
    session.get<Bundle<Named>>(`Practitioner?name=${q}&_count=20`),
    session.get<Bundle<Named>>(`Organization?name=${q}&_count=20`),
    session.get<Bundle<Named>>(`CareTeam?patient=${encodeURIComponent(session.patientId)}&_count=50`),
  ]);
  const words = text.trim().toLowerCase().split(/\s+/);
  const teamHits = matches(teams).filter((t) => words.every((w) => displayOf(t).toLowerCase().includes(w)));
  return [...matches(pr), ...matches(org), ...teamHits].map((r) => ({ reference: `${r.resourceType}/${r.id}`, display: displayOf(r) }));
}

export function DirectoryPicker({ session, value, onChange, draftKey }: { session: Session; value: Actor | undefined; onChange: (a: Actor | undefined) => void; draftKey: string }) {
  const [text, setText] = useDraft(`${draftKey}:search`, '');
  const [found, setFound] = useState<Actor[] | undefined>();
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const search = async (e: Event) => {
    e.preventDefault();
    if (!text.trim()) return;
    setBusy(true); setError(undefined);
    try { setFound(await searchDirectory(session, text)); } catch (err) { setError(err); } finally { setBusy(false); }
  };
  const list = value && !found?.some((a) => a.reference === value.reference) ? [value, ...(found ?? [])] : found ?? [];
  return (
    <>
      <label for={`${draftKey}-who`}>Name of the person, organization or care team</label>
      <div class="search-row">
        <input id={`${draftKey}-who`} type="search" value={text} onInput={(e) => setText((e.target as HTMLInputElement).value)} onKeyDown={(e) => { if (e.key === 'Enter') void search(e); }} />
        <button type="button" class="btn" disabled={busy} onClick={(e) => { void search(e); }}>Search</button>
      </div>
      <ErrorNotice error={error} />
      {found && found.length === 0 && <p role="status">Nobody found with that name. Try part of the family name.</p>}
      {list.length > 0 && (
        <fieldset>
          <legend>Choose one</legend>
          {list.map((a) => (
            <div class="choice" key={a.reference}>
              <input type="radio" id={`${draftKey}-${a.reference}`} name={`${draftKey}-actor`} checked={value?.reference === a.reference} onChange={() => onChange(a)} />
              <label for={`${draftKey}-${a.reference}`}>{actorWords(a.reference, a.display)}</label>
            </div>
          ))}
        </fieldset>
      )}
    </>
  );
}
