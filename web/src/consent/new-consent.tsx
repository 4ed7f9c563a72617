/** The form that builds a new permission in plain words and says it back before it is saved. */
import { useState } from 'preact/hooks';
import { ErrorNotice } from '../components/notice.js';
import { useDraft } from '../drafts.js';
import type { Session } from '../session.js';
import { buildConsent, draftProblems, EMPTY_DRAFT, KINDS, LABELS, TYPES, type Consent, type ConsentDraft } from './consent-shape.js';
import { describeConsent } from './describe.js';
import { DirectoryPicker } from './directory.js';

const toggle = (list: string[], v: string, on: boolean) => (on ? [...new Set([...list, v])] : list.filter((x) => x !== v));

function Check({ id, label, checked, onChange }: { id: string; label: string; checked: boolean; onChange: (on: boolean) => void }) {
  return (
    <div class="choice">
      <input type="checkbox" id={id} checked={checked} onChange={(e) => onChange((e.target as HTMLInputElement).checked)} />
      <label for={id}>{label}</label>
    </div>
  );
}

export function NewConsentForm({ session, onSaved }: { session: Session; onSaved: (c: Consent) => void }) {
  const [draft, setDraft, clearDraft] = useDraft<ConsentDraft>('sharing:new', EMPTY_DRAFT);
  const [step, setStep, clearStep] = useDraft<'edit' | 'review'>('sharing:new:step', 'edit');
  const [problems, setProblems] = useState<string[]>([]);
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const set = (patch: Partial<ConsentDraft>) => setDraft({ ...draft, ...patch });

  const review = (e: Event) => {
    e.preventDefault();
    const p = draftProblems(draft);
    setProblems(p);
    if (p.length === 0) setStep('review');
  };
  const save = async () => {
    setBusy(true); setError(undefined);
    try {
      const saved = await session.post<Consent>('Consent', buildConsent(draft, session.patientId));
      clearDraft(); clearStep();
      onSaved(saved);
    } catch (err) { setError(err); } finally { setBusy(false); }
  };

  if (step === 'review') {
    const sentences = describeConsent(buildConsent(draft, session.patientId));
    return (
      <section class="card" aria-labelledby="new-title">
        <h2 id="new-title">Check your new permission</h2>
        <p>This is what you are about to allow:</p>
        <ul class="sentences review">{sentences.map((s) => <li key={s}>{s}</li>)}</ul>
        <p class="hint">Once saved, you sign it with your key; only then does it count.</p>
        <ErrorNotice error={error} />
        <div class="actions">
          <button type="button" class="btn btn-primary" disabled={busy} onClick={() => { void save(); }}>Save and go on to sign</button>
          <button type="button" class="btn" disabled={busy} onClick={() => setStep('edit')}>Change something</button>
        </div>
      </section>
    );
  }

  return (
    <section class="card" aria-labelledby="new-title">
      <h2 id="new-title">Share with someone new</h2>
      <form onSubmit={review} noValidate>
        <fieldset>
          <legend>Who may see it?</legend>
          <DirectoryPicker session={session} value={draft.actor} onChange={(actor) => set(actor ? { actor } : { actor: undefined })} draftKey="new-consent" />
        </fieldset>
        <fieldset>
          <legend>What may they see?</legend>
          <div class="choice">
            <input type="radio" id="what-everything" name="what" checked={draft.everything} onChange={() => set({ everything: true })} />
            <label for="what-everything">Everything in my record</label>
          </div>
          <div class="choice">
            <input type="radio" id="what-some" name="what" checked={!draft.everything} onChange={() => set({ everything: false })} />
            <label for="what-some">Only what I tick below</label>
          </div>
          {!draft.everything && (
            <div class="kinds">
              {Object.entries(KINDS).map(([k, v]) => <Check key={k} id={`kind-${k}`} label={v.label} checked={draft.kinds.includes(k)} onChange={(on) => set({ kinds: toggle(draft.kinds, k, on) })} />)}
              <details open={draft.types.length > 0}>
                <summary>Other kinds of records</summary>
                {Object.entries(TYPES).map(([t, label]) => <Check key={t} id={`type-${t}`} label={label} checked={draft.types.includes(t)} onChange={(on) => set({ types: toggle(draft.types, t, on) })} />)}
              </details>
            </div>
          )}
        </fieldset>
        <fieldset>
          <legend>Except</legend>
          {Object.entries(LABELS).map(([code, label]) => <Check key={code} id={`except-${code}`} label={`Anything marked as ${label}`} checked={draft.except.includes(code)} onChange={(on) => set({ except: toggle(draft.except, code, on) })} />)}
        </fieldset>
        <fieldset>
          <legend>For how long?</legend>
          <label for="period-start">From (leave empty for today)</label>
          <input id="period-start" type="date" value={draft.start} onInput={(e) => set({ start: (e.target as HTMLInputElement).value })} />
          <label for="period-end">Until (leave empty for “until I withdraw it”)</label>
          <input id="period-end" type="date" value={draft.end} onInput={(e) => set({ end: (e.target as HTMLInputElement).value })} />
        </fieldset>
        {problems.length > 0 && <div class="notice notice-error" role="alert">{problems.map((p) => <p key={p}>{p}</p>)}</div>}
        <div class="actions">
          <button type="submit" class="btn btn-primary">Review</button>
          <button type="button" class="btn" onClick={() => { clearDraft(); setProblems([]); }}>Clear the form</button>
        </div>
      </form>
    </section>
  );
}
