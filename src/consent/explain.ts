import type { Parameters, ParametersParameter } from '@medplum/fhirtypes';
import { accessConditionFor, simplify } from '../fhir/access-expr.js';
import { isCompartmentType, isMember, satisfying } from '../fhir/access-constraints.js';
import { FhirError, isResourceType, notFound, type FhirRequest, type FhirResponse, type InstanceOperation, type Principal } from '../fhir/index.js';
import { patientUserOf } from '../smart-auth/scope-policy.js';
import type { Store } from '../store/index.js';
import type { ConsentPolicy } from './consent-policy.js';
import { applicableRules, permitExpr, type RequestContext } from './decide.js';
import { localReference } from './provisions.js';
import { TREATMENT } from './consent-policy.js';
import type { ConsentChainView } from './types.js';

/**
 * GET Patient/[id]/$explain-access?actor=<reference>&resource=<Type or Type/id>: why an actor may
 * or may not read a patient's data: the decision, the Consents and the provisions that decided
 * it, and where each Consent stands on chain. For the patient themself and trusted administrators.
 */
export function explainAccessOperation(policy: ConsentPolicy, store: Store, chain: ConsentChainView, baseUrl: string): InstanceOperation {
  return async (req: FhirRequest, target) => {
    if (target.resourceType !== 'Patient' || target.version !== undefined) throw new FhirError(400, 'invalid', '$explain-access is an operation on Patient/[id]');
    if (!mayExplain(req.principal, target.id)) throw new FhirError(403, 'forbidden', '$explain-access is for the patient themself and trusted administrators');
    const q = new Map(req.query);
    const actorParam = q.get('actor');
    const resourceParam = q.get('resource');
    if (!actorParam) throw new FhirError(400, 'required', '$explain-access needs actor=<reference>, e.g. Practitioner/123, Organization/7 or client:<client id>');
    if (!resourceParam) throw new FhirError(400, 'required', '$explain-access needs resource=<Type> or <Type/id>');
    const actor = actorParam.startsWith('client:') ? actorParam : localReference(actorParam, baseUrl);
    if (!actor) throw new FhirError(400, 'value', `actor must be a local reference (Type/id) or client:<client id>, got "${actorParam.slice(0, 100)}"`);
    const [type, id] = resourceParam.split('/') as [string, string | undefined];
    if (!isResourceType(type) || (id !== undefined && !/^[A-Za-z0-9\-.]{1,64}$/.test(id))) throw new FhirError(400, 'value', `resource must be <Type> or <Type/id>, got "${resourceParam.slice(0, 100)}"`);

    // About a resource of someone else, the answer would tell that it exists and what it holds.
    if (id !== undefined && isCompartmentType(type) && !(await isMember(store, type, id, target.id))) throw notFound(`${type}/${id} is not known`);
    await policy.freshChain();
    const snap = await policy.index.snapshot();
    const actors = actor.startsWith('Practitioner/') ? await policy.practitionerActors(actor) : [actor];
    const ctx: RequestContext = { actors: new Set(actors), action: 'access', purpose: TREATMENT, now: Date.now() };
    const consents = snap.byPatient.get(target.id) ?? { granting: [], restricting: [], governed: false };
    const rules = applicableRules(consents, ctx, { next: Infinity });
    const base = consents.governed ? 'deny' : policy.baseFor(snap);
    const expr = permitExpr(rules, base);
    const forType = accessConditionFor(expr, type);
    const parts: ParametersParameter[] = [];
    let decision: 'permit' | 'deny' | 'depends-on-data';
    let deciding: typeof rules = [];
    if (forType === undefined) {
      decision = 'permit';
      parts.push({ name: 'note', valueString: `${type} is not patient data: consent does not govern it` });
    } else if (id !== undefined) {
      decision = (await satisfying(store, type, [id], forType)).has(id) ? 'permit' : 'deny';
      const matched = [];
      for (const r of rules) {
        const c = accessConditionFor(r.match, type);
        if ((await satisfying(store, type, [id], c)).has(id)) matched.push(r);
      }
      const top = Math.max(-1, ...matched.map((r) => r.depth));
      deciding = matched.filter((r) => r.depth === top && r.type === (decision === 'permit' ? 'permit' : 'deny'));
    } else {
      const s = simplify(forType);
      decision = s === true ? 'permit' : s === false ? 'deny' : 'depends-on-data';
      const top = Math.max(-1, ...rules.map((r) => r.depth));
      deciding = rules.filter((r) => r.depth === top);
    }
    parts.push({ name: 'decision', valueCode: decision });
    parts.push({ name: 'actor', valueString: actor });
    for (const a of await readableActors(req.principal, target.id, actors.filter((x) => x !== actor), policy, store)) parts.push({ name: 'actsAs', valueString: a });
    parts.push({ name: 'resource', valueString: resourceParam });
    if (deciding.length === 0 && forType !== undefined) parts.push({ name: 'basis', valueString: `no provision applies: the base policy (${base}) decides` });
    for (const r of deciding) {
      parts.push({
        name: 'provision',
        part: [
          { name: 'type', valueCode: r.type },
          { name: 'path', valueString: r.path },
          { name: 'consent', valueReference: { reference: `Consent/${r.consentId}` } },
        ],
      });
    }
    for (const c of snap.consents.filter((x) => x.parsed.patientId === target.id)) {
      const onChain = await chain.status(target.id, c.contentHash);
      parts.push({
        name: 'consent',
        part: [
          { name: 'reference', valueReference: { reference: `Consent/${c.parsed.id}/_history/${c.versionId}` } },
          { name: 'standing', valueCode: c.standing },
          { name: 'chain', valueCode: onChain.state },
          ...('txHash' in onChain && onChain.txHash ? [{ name: 'txHash', valueString: onChain.txHash }] : []),
          ...c.parsed.problems.map((p) => ({ name: 'problem', valueString: p })),
        ],
      });
    }
    return { status: 200, body: { resourceType: 'Parameters', parameter: parts } satisfies Parameters } as FhirResponse;
  };
}

/** The roles, organizations and care teams of an actor that the caller may read itself. */
async function readableActors(p: Principal, patientId: string, refs: string[], policy: ConsentPolicy, store: Store): Promise<string[]> {
  if (p.kind !== 'token' || p.trusted === true) return refs;
  const rule = policy.readRule(p);
  const out: string[] = [];
  for (const ref of refs) {
    const [type, id] = ref.split('/') as [string, string];
    if (rule && rule.types !== '*' && !rule.types.includes(type)) continue;
    if (isCompartmentType(type) && !(await isMember(store, type, id, patientId))) continue;
    out.push(ref);
  }
  return out;
}

function mayExplain(p: Principal, patientId: string): boolean {
  if (p.kind === 'system') return true;
  if (p.kind !== 'token') return false;
  return patientUserOf(p) === patientId || p.trusted === true;
}
