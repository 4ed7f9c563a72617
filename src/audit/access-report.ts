import type { AuditEvent, Parameters, ParametersParameter } from '@medplum/fhirtypes';
import { FhirError, type FhirRequest, type InstanceOperation } from '../fhir/index.js';
import { viewForPatient } from '../fhir/audit-view.js';
import { parseSearch } from '../fhir/search/parse.js';
import { patientUserOf } from '../smart-auth/scope-policy.js';
import type { StoreReader } from '../store/index.js';

interface ActorSummary { actor: string; first: string; last: string; count: number; types: Set<string>; breakGlass: boolean; refused: number }

const PAGE = 500;

/** Who an AuditEvent's access was by: the user's reference, else the client. */
function actorOf(e: AuditEvent): string {
  const user = e.agent?.find((a) => a.who?.reference);
  if (user) return user.who!.reference!;
  const client = e.agent?.find((a) => a.who?.identifier?.value);
  return client ? `client:${client.who!.identifier!.value}` : (e.agent?.[0]?.who?.display ?? 'unknown');
}

/** How an actor is named: a user's reference, a client by id (with the name it was registered under), or only a display. */
function whoParts(actor: string, clientName: (clientId: string) => string | undefined): ParametersParameter[] {
  if (actor.startsWith('client:')) {
    const id = actor.slice('client:'.length);
    const name = clientName(id);
    return [{ name: 'client', valueString: id }, ...(name ? [{ name: 'name', valueString: name }] : [])];
  }
  // The server itself, or an anonymous caller: no reference to resolve, a display only.
  if (!/^[A-Za-z]+\/[A-Za-z0-9\-.]{1,64}$/.test(actor)) return [{ name: 'who', valueReference: { display: actor } }];
  return [{ name: 'who', valueReference: { reference: actor } }];
}

/**
 * GET Patient/[id]/$access-report: per actor who touched the patient's data, the first and last
 * access, how many, which resource types, refusals and whether break-the-glass was used, as a
 * Parameters resource a portal can show. For the patient themself and trusted administrators.
 * A client (an app or a system acting without a user) comes with the name it was registered
 * under (`clientName`), so the patient reads "Clinic EHR" rather than a client id: the name an
 * app shows on the approval page, no patient data.
 */
export function accessReportOperation(store: StoreReader, enabled: boolean, clientName: (clientId: string) => string | undefined = () => undefined): InstanceOperation {
  const op: InstanceOperation = async (req: FhirRequest, target) => {
    if (target.resourceType !== 'Patient' || target.version !== undefined) throw new FhirError(400, 'invalid', '$access-report is an operation on Patient/[id]');
    const p = req.principal;
    const allowed = p.kind === 'system' || (p.kind === 'token' && (patientUserOf(p) === target.id || p.trusted === true));
    if (!allowed) throw new FhirError(403, 'forbidden', '$access-report is for the patient themself and trusted administrators');
    const byActor = new Map<string, ActorSummary>();
    for (let offset = 0; ; offset += PAGE) {
      const q = parseSearch('AuditEvent', [['patient', `Patient/${target.id}`], ['_sort', 'date']], { strict: true, defaultCount: PAGE, maxCount: PAGE }).query;
      q.offset = offset;
      q.total = 'none';
      const page = await store.search(q);
      for (const v of page.matches) {
        // Only this patient's part of events that concern others too.
        const e = viewForPatient(v.resource as AuditEvent, target.id);
        const actor = actorOf(e);
        const s = byActor.get(actor) ?? { actor, first: e.recorded!, last: e.recorded!, count: 0, types: new Set<string>(), breakGlass: false, refused: 0 };
        s.count++;
        if (e.recorded! < s.first) s.first = e.recorded!;
        if (e.recorded! > s.last) s.last = e.recorded!;
        if (e.outcome !== '0') s.refused++;
        if (e.purposeOfEvent?.some((x) => x.coding?.some((c) => c.code === 'ETREAT'))) s.breakGlass = true;
        for (const en of e.entity ?? []) {
          const ref = en.what?.reference;
          if (ref && ref !== `Patient/${target.id}`) s.types.add(ref.split('/')[0]!);
          if (ref === `Patient/${target.id}` && en.role?.code !== '1') s.types.add('Patient');
          // A search names its query (with the type searched) rather than each resource it returned.
          if (en.query !== undefined && en.description) s.types.add(en.description);
        }
        byActor.set(actor, s);
      }
      if (!page.hasMore) break;
    }
    const parameter: ParametersParameter[] = [{ name: 'patient', valueReference: { reference: `Patient/${target.id}` } }];
    if (!enabled) parameter.push({ name: 'note', valueString: 'The audit trail is off on this server (AUDIT=off): accesses are not being recorded' });
    for (const s of [...byActor.values()].sort((a, b) => (a.last < b.last ? 1 : -1))) {
      parameter.push({
        name: 'actor',
        part: [
          ...whoParts(s.actor, clientName),
          { name: 'first', valueInstant: s.first },
          { name: 'last', valueInstant: s.last },
          { name: 'count', valueInteger: s.count },
          ...(s.refused ? [{ name: 'refused', valueInteger: s.refused }] : []),
          ...[...s.types].sort().map((t) => ({ name: 'resourceType', valueCode: t })),
          { name: 'breakGlass', valueBoolean: s.breakGlass },
        ],
      });
    }
    return { status: 200, body: { resourceType: 'Parameters', parameter } satisfies Parameters };
  };
  op.types = ['Patient'];
  return op;
}
