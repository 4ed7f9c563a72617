/** "Can Dr X see my blood pressure?" answered by the server's $explain-access. */
import { useEffect, useState } from 'preact/hooks';
import { ErrorNotice } from '../components/notice.js';
import { useDraft } from '../drafts.js';
import { conceptText, type CodeableConcept } from '../fhir-text.js';
import type { Session } from '../session.js';
import { explainAccess, type Decision } from './api.js';
import { TYPES, type Actor, type Consent } from './consent-shape.js';
import { actorWords, consentActor } from './describe.js';
import { DirectoryPicker } from './directory.js';

interface Thing { value: string; label: string }
interface Bundle { entry?: Array<{ resource?: { resourceType: string; id: string; code?: CodeableConcept } }> }

/** The patient's own kinds of measurement (latest of each), then whole kinds of record. */
async function things(session: Session): Promise<Thing[]> {
  const out: Thing[] = [];
  try {
    const b = await session.get<Bundle>(`Observation?patient=${encodeURIComponent(session.patientId)}&_sort=-date&_count=100`);
    const seen = new Set<string>();
    for (const e of b.entry ?? []) {
      const r = e.resource;
      const label = r && conceptText(r.code);
      if (!r || r.resourceType !== 'Observation' || !label || seen.has(label.toLowerCase())) continue;
      seen.add(label.toLowerCase());
      out.push({ value: `Observation/${r.id}`, label: `My ${label.toLowerCase()} (latest)` });
    }
  } catch { /* the kinds of record below still work */ }
  const types: Record<string, string> = { Observation: 'All my measurements', Condition: 'My conditions', MedicationRequest: 'My medicines', AllergyIntolerance: 'My allergies', Immunization: 'My vaccinations' };
  for (const [t, label] of Object.entries({ ...types, ...Object.fromEntries(Object.entries(TYPES).filter(([t]) => !types[t]).map(([t, l]) => [t, `My ${l.toLowerCase()}`])) })) out.push({ value: t, label });
  return out;
}

const ANSWER: Record<Decision, (who: string, what: string) => string> = {
  permit: (who, what) => `Yes: ${who} can see ${what}.`,
  deny: (who, what) => `No: ${who} cannot see ${what}.`,
  'depends-on-data': (who, what) => `Partly: ${who} can see some of ${what}, not all of it.`,
};

export function AskForm({ session, consents }: { session: Session; consents: Consent[] }) {
  const known = [...new Map(consents.map(consentActor).filter((a): a is Actor => !!a).map((a) => [a.reference, a])).values()];
  const [who, setWho] = useDraft<string>('sharing:ask:who', '');
  const [other, setOther] = useDraft<Actor | undefined>('sharing:ask:other', undefined);
  const [what, setWhat] = useDraft<string>('sharing:ask:what', '');
  const [options, setOptions] = useState<Thing[]>([]);
  const [answer, setAnswer] = useState<string | undefined>();
  const [error, setError] = useState<unknown>();
  useEffect(() => { void things(session).then(setOptions); }, [session]);

  const actor = who === 'other' ? other : known.find((a) => a.reference === who);
  const ask = async (e: Event) => {
    e.preventDefault();
    setAnswer(undefined); setError(undefined);
    if (!actor || !what) { setError(new Error('Choose who and what to ask about.')); return; }
    try {
      const r = await explainAccess(session, actor.reference, what);
      const label = options.find((o) => o.value === what)?.label.replace(/^My /, 'your ').replace(/ \(latest\)$/, '') ?? what;
      const base = ANSWER[r.decision]?.(actorWords(actor.reference, actor.display), label) ?? 'The server could not answer.';
      setAnswer(r.basis && r.decision === 'deny' ? `${base} You have not shared it with them.` : base);
    } catch (err) { setError(err); }
  };

  return (
    <section class="card" aria-labelledby="ask-title">
      <h2 id="ask-title">Ask: who can see what?</h2>
      <form onSubmit={(e) => { void ask(e); }}>
        <label for="ask-who">Who</label>
        <select id="ask-who" value={who} onChange={(e) => setWho((e.target as HTMLSelectElement).value)}>
          <option value="">Choose…</option>
          {known.map((a) => <option key={a.reference} value={a.reference}>{actorWords(a.reference, a.display)}</option>)}
          <option value="other">Someone else…</option>
        </select>
        {who === 'other' && <DirectoryPicker session={session} value={other} onChange={(a) => setOther(a)} draftKey="ask" />}
        <label for="ask-what">Can they see</label>
        <select id="ask-what" value={what} onChange={(e) => setWhat((e.target as HTMLSelectElement).value)}>
          <option value="">Choose…</option>
          {options.map((o) => <option key={o.value} value={o.value}>{o.label}</option>)}
        </select>
        <div class="actions"><button type="submit" class="btn">Ask</button></div>
      </form>
      <ErrorNotice error={error} />
      {answer && <p class="answer" role="status">{answer}</p>}
    </section>
  );
}
