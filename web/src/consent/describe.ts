/** A Consent said back in sentences: who, what, except what, for how long. */
import { when } from '../fhir-text.js';
import { CONFIDENTIALITY, KINDS, LABELS, OBSERVATION_CATEGORY, TYPES, type Consent, type Provision } from './consent-shape.js';

const ACTOR_WORDS: Record<string, string> = { Practitioner: 'a care professional', PractitionerRole: 'a care professional', Organization: 'an organization', CareTeam: 'a care team', RelatedPerson: 'a person close to you' };

export function actorWords(reference: string, display?: string): string {
  const type = reference.split('/')[0] ?? '';
  const kind = ACTOR_WORDS[type];
  return display ? `${display}${kind ? ` (${kind})` : ''}` : kind ?? 'someone';
}

function dataWords(p: Provision): string {
  const classes = (p.class ?? []).map((c) => c.code ?? '');
  const category = p.code?.flatMap((c) => c.coding).find((c) => c.system === OBSERVATION_CATEGORY)?.code;
  const kind = Object.values(KINDS).find((k) => k.category === category && k.types.join() === classes.join());
  if (kind) return kind.label.toLowerCase();
  if (!classes.length && !p.code && !p.securityLabel) return 'everything in your record';
  const named = classes.map((c) => Object.values(KINDS).find((k) => !k.category && k.types.includes(c))?.label ?? TYPES[c] ?? c);
  return [...new Set(named)].map((s) => s.toLowerCase()).join(', ') || 'some of your data';
}

function labelWords(p: Provision): string {
  return (p.securityLabel ?? []).map((l) => (l.system === CONFIDENTIALITY && l.code && LABELS[l.code]) || l.code || '').join(', and ');
}

/** Sentences in plain words; for a Consent the portal did not write, as much as it can tell. */
export function describeConsent(c: Consent): string[] {
  const root = c.provision;
  if (!root) return ['This permission has no details.'];
  const who = root.actor?.length ? root.actor.map((a) => actorWords(a.reference.reference, a.reference.display)).join(', ') : 'Anyone allowed by the service';
  const children = root.provision ?? [];
  const own = root.type ? [root] : [];
  const permits = [...own, ...children].filter((p) => p.type === 'permit');
  const denies = [...own, ...children].filter((p) => p.type === 'deny');
  const out: string[] = [];
  if (root.type === 'deny' && !root.provision?.length) out.push(`${who} may not see ${dataWords(root)}.`);
  else if (permits.length) out.push(`${who} may see: ${permits.map(dataWords).join('; ')}.`);
  else out.push(`${who} may see nothing yet.`);
  for (const d of denies.filter((p) => p !== root)) {
    const labels = labelWords(d);
    out.push(labels ? `Except ${labels}.` : `Except ${dataWords(d)}.`);
  }
  const { start, end } = root.period ?? {};
  if (start && end) out.push(`From ${when(start, false)} until ${when(end, false)} (included).`);
  else if (end) out.push(`Until ${when(end, false)} (included).`);
  else if (start) out.push(`From ${when(start, false)}, until you withdraw it.`);
  else out.push('Until you withdraw it.');
  if (root.action?.some((a) => a.coding.some((c) => c.code === 'access'))) out.push('Only to look at it: not to add or change anything.');
  return out;
}

export function consentActor(c: Consent): { reference: string; display: string } | undefined {
  const a = c.provision?.actor?.[0]?.reference;
  return a?.reference ? { reference: a.reference, display: a.display ?? actorWords(a.reference) } : undefined;
}
