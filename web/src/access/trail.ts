/**
 * The patient's AuditEvent trail as the portal asks for it and reads it: the search a patient's
 * token may make (their own trail, filtered by who, date and kind), and each event boiled down
 * to what a sentence needs.
 */

export type Kind = 'all' | 'read' | 'search' | 'change' | 'refused';

export interface TrailFilters {
  /** An actor key from the report ("Practitioner/1", "client:<id>"), or '' for everyone. */
  who: string;
  /** yyyy-mm-dd, inclusive, or ''. */
  from: string;
  to: string;
  kind: Kind;
  /** Show what the patient did themself (reading their own record through the portal) too. */
  mine: boolean;
}

export const NO_FILTERS: TrailFilters = { who: '', from: '', to: '', kind: 'all', mine: false };

const CLIENT_SYSTEM = 'urn:custos:client';
export const PAGE_SIZE = 20;

// A refusal is its own kind: the other kinds are the accesses that went through.
const KIND_QUERY: Record<Kind, Array<[string, string]>> = {
  all: [],
  read: [['action', 'R'], ['outcome', '0']],
  search: [['subtype', 'search-type,search-system'], ['outcome', '0']],
  change: [['action', 'C,U,D'], ['outcome', '0']],
  refused: [['outcome', '4']],
};

const DAY = /^\d{4}-\d{2}-\d{2}$/;

function localMidnight(day: string, plusDays: number): string {
  const [y, m, d] = day.split('-').map(Number) as [number, number, number];
  return new Date(y, m - 1, d + plusDays).toISOString();
}

/** The first page's search, relative to the FHIR base. */
export function trailQuery(patientId: string, f: TrailFilters): string {
  const q = new URLSearchParams([['patient', `Patient/${patientId}`]]);
  if (f.who.startsWith('client:')) q.append('agent:identifier', `${CLIENT_SYSTEM}|${f.who.slice('client:'.length)}`);
  else if (f.who.includes('/')) q.append('agent', f.who);
  // The days are the patient's own (local midnight to midnight), not UTC days.
  if (DAY.test(f.from)) q.append('date', `ge${localMidnight(f.from, 0)}`);
  if (DAY.test(f.to)) q.append('date', `lt${localMidnight(f.to, 1)}`);
  for (const [k, v] of KIND_QUERY[f.kind]) q.append(k, v);
  q.append('_sort', '-date');
  q.append('_count', String(PAGE_SIZE));
  return `AuditEvent?${q.toString()}`;
}

interface Coding { system?: string; code?: string }
export interface AuditEvent {
  resourceType: 'AuditEvent';
  id?: string;
  recorded?: string;
  action?: string;
  outcome?: string;
  subtype?: Coding[];
  purposeOfEvent?: Array<{ coding?: Coding[] }>;
  agent?: Array<{ who?: { reference?: string; display?: string; identifier?: { system?: string; value?: string } } }>;
  entity?: Array<{ what?: { reference?: string }; role?: Coding; description?: string; query?: string }>;
}
export interface Bundle { resourceType: 'Bundle'; link?: Array<{ relation: string; url: string }>; entry?: Array<{ resource?: AuditEvent }> }

/** One access, ready to be said in words. */
export interface Access {
  id: string;
  at: string;
  /** The interaction (read, search-type, create, ..., login, token-grant) or the operation's name ($verify). */
  interaction: string;
  operation?: string;
  /** The user's reference, if a user acted. */
  user?: string;
  clientId?: string;
  /** A display for the server itself. */
  display?: string;
  refused: boolean;
  failed: boolean;
  emergency: boolean;
  /** Resources named ("Observation/1"), the patient's own Patient resource included. */
  resources: string[];
  /** The type a search looked through. */
  searched?: string;
}

const OPERATION_SYSTEM = 'urn:custos:operation';

export function toAccess(e: AuditEvent): Access {
  const user = e.agent?.find((a) => a.who?.reference)?.who?.reference;
  const client = e.agent?.find((a) => a.who?.identifier?.system === CLIENT_SYSTEM)?.who?.identifier?.value;
  const display = !user && !client ? e.agent?.[0]?.who?.display : undefined;
  const operation = e.subtype?.find((c) => c.system === OPERATION_SYSTEM)?.code;
  const interaction = e.subtype?.find((c) => c.system !== OPERATION_SYSTEM)?.code ?? 'unknown';
  const resources = (e.entity ?? [])
    .filter((x) => x.what?.reference && x.role?.code !== '24')
    .map((x) => x.what!.reference!.split('/').slice(0, 2).join('/'));
  const searched = e.entity?.find((x) => x.role?.code === '24')?.description;
  return {
    id: e.id ?? '',
    at: e.recorded ?? '',
    interaction: interaction === '110122' ? 'login' : interaction,
    ...(operation ? { operation } : {}),
    ...(user ? { user } : {}),
    ...(client ? { clientId: client } : {}),
    ...(display ? { display } : {}),
    refused: e.outcome === '4',
    failed: e.outcome === '8',
    emergency: e.purposeOfEvent?.some((p) => p.coding?.some((c) => c.code === 'ETREAT')) === true,
    resources: [...new Set(resources)],
    ...(searched ? { searched } : {}),
  };
}

/** Whether an access belongs to the actor the trail is filtered on (a client's own accesses, not its users'). */
export function byActor(a: Access, who: string): boolean {
  if (!who) return true;
  if (who.startsWith('client:')) return !a.user && a.clientId === who.slice('client:'.length);
  return a.user === who;
}

export function nextLink(b: Bundle): string | undefined {
  return b.link?.find((l) => l.relation === 'next')?.url;
}
