import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  NON_RESOURCE_SCOPES,
  covers,
  formatScope,
  grantableScopes,
  intersect,
  matchingScopes,
  parseResourceScope,
  parseScopes,
  permissionFor,
  type Interaction,
  type Permission,
  type ResourceScope,
} from '../src/smart-auth/scopes.js';

/** Parses a scope that must be valid. */
function sc(s: string): ResourceScope {
  const p = parseResourceScope(s);
  assert.ok(p, `expected valid scope: ${s}`);
  return p;
}

/** Permission letters in iteration order. */
const perms = (s: ResourceScope): string => [...s.permissions].join('');

describe('parseResourceScope: v1', () => {
  const cases: Array<[string, string]> = [['read', 'rs'], ['write', 'cud'], ['*', 'cruds']];
  for (const [suffix, letters] of cases) {
    for (const context of ['patient', 'user', 'system'] as const) {
      it(`${context}/Observation.${suffix} = .${letters}`, () => {
        const p = sc(`${context}/Observation.${suffix}`);
        assert.equal(p.raw, `${context}/Observation.${suffix}`);
        assert.equal(p.context, context);
        assert.equal(p.resourceType, 'Observation');
        assert.equal(p.version, 1);
        assert.equal(perms(p), letters);
        assert.deepEqual(p.query, []);
      });
    }
  }

  it('accepts wildcard type with every v1 suffix', () => {
    assert.equal(perms(sc('patient/*.read')), 'rs');
    assert.equal(perms(sc('user/*.write')), 'cud');
    const all = sc('system/*.*');
    assert.equal(all.resourceType, '*');
    assert.equal(all.version, 1);
    assert.equal(perms(all), 'cruds');
  });

  it('rejects v1 scopes with a query', () => {
    assert.equal(parseResourceScope('patient/Observation.read?category=laboratory'), undefined);
    assert.equal(parseResourceScope('patient/Observation.write?a=b'), undefined);
    assert.equal(parseResourceScope('patient/*.*?a=b'), undefined);
  });

  it('rejects v1 suffixes in the wrong case or misspelled', () => {
    for (const s of ['patient/Observation.READ', 'patient/Observation.Read', 'patient/Observation.reads', 'patient/Observation.wrte', 'patient/Observation.**']) {
      assert.equal(parseResourceScope(s), undefined, s);
    }
  });
});

describe('parseResourceScope: v2', () => {
  it('accepts every non-empty in-order subsequence of cruds', () => {
    const letters: Permission[] = ['c', 'r', 'u', 'd', 's'];
    let count = 0;
    for (let mask = 1; mask < 32; mask++) {
      const suffix = letters.filter((_, i) => mask & (1 << i)).join('');
      const p = sc(`user/Patient.${suffix}`);
      assert.equal(p.version, 2, suffix);
      assert.equal(perms(p), suffix);
      assert.equal(p.permissions.size, suffix.length);
      count++;
    }
    assert.equal(count, 31);
  });

  it('parses common examples', () => {
    const rs = sc('patient/*.rs');
    assert.deepEqual([rs.context, rs.resourceType, rs.version, perms(rs)], ['patient', '*', 2, 'rs']);
    const cud = sc('user/MedicationRequest.cud');
    assert.deepEqual([cud.context, cud.resourceType, cud.version, perms(cud)], ['user', 'MedicationRequest', 2, 'cud']);
    assert.ok(sc('system/Observation.s').permissions.has('s'));
    assert.ok(!sc('system/Observation.s').permissions.has('r'));
  });

  it('rejects out-of-order, repeated, empty and unknown letters', () => {
    for (const suffix of ['sr', 'rc', 'dus', 'scrud', 'rr', 'crudss', 'cc', '', 'x', 'rx', 'rsw', 'R', 'RS', 'r*', 'cruds*']) {
      assert.equal(parseResourceScope(`patient/Observation.${suffix}`), undefined, `.${suffix}`);
    }
  });

  it('parses granular queries, decoding values and keeping pair order', () => {
    const p = sc('patient/Observation.rs?code=http%3A%2F%2Floinc.org%7C1234-5');
    assert.equal(p.version, 2);
    assert.deepEqual(p.query, [['code', 'http://loinc.org|1234-5']]);

    const multi = sc('patient/Observation.rs?status=final&category=laboratory&code=a%26b%3Dc');
    assert.deepEqual(multi.query, [['status', 'final'], ['category', 'laboratory'], ['code', 'a&b=c']]);
  });

  it('accepts the spec example with unencoded reserved characters', () => {
    const p = sc('patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory');
    assert.deepEqual(p.query, [['category', 'http://terminology.hl7.org/CodeSystem/observation-category|laboratory']]);
  });

  it('keeps modifiers and chains in parameter names, and "=" inside values', () => {
    assert.deepEqual(sc('patient/Observation.rs?code:in=http://vs.example.org/ValueSet/x').query, [['code:in', 'http://vs.example.org/ValueSet/x']]);
    assert.deepEqual(sc('patient/Observation.rs?patient.birthdate=1990').query, [['patient.birthdate', '1990']]);
    assert.deepEqual(sc('patient/Observation.rs?a=b=c').query, [['a', 'b=c']]);
    assert.deepEqual(sc('patient/Observation.rs?a=%20x+y').query, [['a', ' x+y']]);
  });

  it('accepts a query on scopes with c/u/d (constraint applies to all permissions)', () => {
    const p = sc('user/Observation.cruds?category=vital-signs');
    assert.equal(perms(p), 'cruds');
    assert.deepEqual(p.query, [['category', 'vital-signs']]);
    assert.deepEqual(sc('user/Observation.c?category=vital-signs').query, [['category', 'vital-signs']]);
  });

  it('rejects malformed queries', () => {
    for (const q of ['', 'code', '=x', 'code=', 'a=1&', '&a=1', 'a=1&&b=2', 'a=%E0%A4%A', 'a=%zz', '%zz=1']) {
      assert.equal(parseResourceScope(`patient/Observation.rs?${q}`), undefined, `?${q}`);
    }
  });
});

describe('parseResourceScope: invalid contexts and types', () => {
  it('rejects bad contexts, types and shapes', () => {
    for (const s of [
      'Patient/Observation.rs',
      'practitioner/Observation.rs',
      'patients/Observation.rs',
      '/Observation.rs',
      'Observation.rs',
      'patient/observation.read',
      'patient/observation.rs',
      'patient/O.rs',
      'patient/Observ-ation.rs',
      'patient/Observation1.rs',
      'patient/**.rs',
      'patient/.rs',
      'patient/Observation',
      'patient/Observationrs',
      'patient/Observation.',
      'patient//Observation.rs',
      'patient/Observation/x.rs',
      'patient/Observation.rs.rs',
      'patient/Observation.foo',
      'patient/Observation.rs?code=a b',
      ' patient/Observation.rs',
      'patient/Observation.rs\n',
      'openid',
      'launch/patient',
      '',
    ]) {
      assert.equal(parseResourceScope(s), undefined, JSON.stringify(s));
    }
  });
});

describe('parseScopes', () => {
  it('splits on any whitespace, dedupes and keeps order', () => {
    const r = parseScopes('  launch/patient\tpatient/Observation.rs\n\nopenid patient/Observation.rs openid fhirUser  patient/*.read ');
    assert.deepEqual(r.resource.map((s) => s.raw), ['patient/Observation.rs', 'patient/*.read']);
    assert.deepEqual(r.other, ['launch/patient', 'openid', 'fhirUser']);
    assert.deepEqual(r.invalid, []);
  });

  it('classifies invalid scopes, deduped', () => {
    const r = parseScopes('foo patient/Observation.foo patient/observation.read user/Patient.sr foo patient/Observation.read?x=1 launch/diagnosticreport Openid');
    assert.deepEqual(r.resource, []);
    assert.deepEqual(r.other, []);
    assert.deepEqual(r.invalid, [
      'foo',
      'patient/Observation.foo',
      'patient/observation.read',
      'user/Patient.sr',
      'patient/Observation.read?x=1',
      'launch/diagnosticreport',
      'Openid',
    ]);
  });

  it('recognises every non-resource scope', () => {
    const all = ['openid', 'fhirUser', 'profile', 'launch', 'launch/patient', 'launch/encounter', 'offline_access', 'online_access'];
    assert.deepEqual([...NON_RESOURCE_SCOPES].sort(), [...all].sort());
    const r = parseScopes(all.join(' '));
    assert.deepEqual(r.other, all);
    assert.deepEqual(r.resource, []);
    assert.deepEqual(r.invalid, []);
  });

  it('dedupes by exact text only (equivalent spellings are kept)', () => {
    const r = parseScopes('patient/Observation.read patient/Observation.rs patient/Observation.read');
    assert.deepEqual(r.resource.map((s) => s.raw), ['patient/Observation.read', 'patient/Observation.rs']);
  });

  it('handles undefined, empty and blank input', () => {
    for (const input of [undefined, '', '   \t\n ']) {
      assert.deepEqual(parseScopes(input), { resource: [], other: [], invalid: [] });
    }
  });
});

describe('formatScope', () => {
  it('round-trips canonical scopes exactly', () => {
    for (const s of [
      'patient/Observation.read',
      'user/*.write',
      'system/*.*',
      'patient/*.rs',
      'user/Patient.c',
      'user/Patient.cruds',
      'system/Encounter.ud',
      'patient/Observation.rs?code=http%3A%2F%2Floinc.org%7C1234-5',
      'patient/Observation.rs?status=final&category=laboratory',
      'user/Observation.cud?category=vital-signs',
    ]) {
      assert.equal(formatScope(sc(s)), s);
      assert.equal(formatScope(sc(formatScope(sc(s)))), s);
    }
  });

  it('re-encodes query names and values with encodeURIComponent', () => {
    const p = sc('patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory&code:in=a b'.replace(' ', '%20'));
    const text = formatScope(p);
    assert.equal(text, 'patient/Observation.rs?category=http%3A%2F%2Fterminology.hl7.org%2FCodeSystem%2Fobservation-category%7Claboratory&code%3Ain=a%20b');
    assert.deepEqual(sc(text).query, p.query);
    assert.equal(formatScope(sc('patient/Observation.rs?a=x+y%26z')), 'patient/Observation.rs?a=x%2By%26z');
  });

  it('writes v2 letters in cruds order whatever the set insertion order', () => {
    const text = formatScope({ context: 'user', resourceType: 'Patient', version: 2, query: [], permissions: new Set<Permission>(['s', 'd', 'r', 'c']) });
    assert.equal(text, 'user/Patient.crds');
  });

  it('keeps v1 suffixes only for v1 scopes with a v1 permission set', () => {
    const base = { context: 'patient', resourceType: 'Observation', query: [] } as const;
    assert.equal(formatScope({ ...base, version: 1, permissions: new Set<Permission>(['s', 'r']) }), 'patient/Observation.read');
    assert.equal(formatScope({ ...base, version: 1, permissions: new Set<Permission>(['d', 'u', 'c']) }), 'patient/Observation.write');
    assert.equal(formatScope({ ...base, version: 1, permissions: new Set<Permission>(['c', 'r', 'u', 'd', 's']) }), 'patient/Observation.*');
    assert.equal(formatScope({ ...base, version: 2, permissions: new Set<Permission>(['r', 's']) }), 'patient/Observation.rs');
    assert.equal(formatScope({ ...base, version: 2, permissions: new Set<Permission>(['c', 'r', 'u', 'd', 's']) }), 'patient/Observation.cruds');
    // A "v1" shape that no v1 suffix can express falls back to v2 text, which still parses.
    const odd = formatScope({ ...base, version: 1, permissions: new Set<Permission>(['r']) });
    assert.equal(odd, 'patient/Observation.r');
    assert.ok(parseResourceScope(odd));
  });

  it('refuses an empty permission set', () => {
    assert.throws(() => formatScope({ context: 'user', resourceType: 'Patient', version: 2, query: [], permissions: new Set() }), RangeError);
  });
});

describe('covers', () => {
  it('is reflexive, including v1 against its v2 equivalent', () => {
    for (const s of ['patient/*.rs', 'user/Observation.cud?category=x', 'system/*.*']) assert.ok(covers(sc(s), sc(s)), s);
    assert.ok(covers(sc('patient/Observation.read'), sc('patient/Observation.rs')));
    assert.ok(covers(sc('patient/Observation.rs'), sc('patient/Observation.read')));
    assert.ok(covers(sc('user/*.*'), sc('user/*.cruds')));
    assert.ok(covers(sc('user/*.cruds'), sc('user/*.*')));
  });

  it('wildcard type covers specific types, not the reverse', () => {
    assert.ok(covers(sc('patient/*.rs'), sc('patient/Observation.rs')));
    assert.ok(!covers(sc('patient/Observation.rs'), sc('patient/*.rs')));
    assert.ok(!covers(sc('patient/Observation.rs'), sc('patient/Condition.rs')));
  });

  it('requires a permission subset', () => {
    assert.ok(covers(sc('user/Patient.cruds'), sc('user/Patient.r')));
    assert.ok(covers(sc('user/Patient.read'), sc('user/Patient.s')));
    assert.ok(covers(sc('user/Patient.write'), sc('user/Patient.cd')));
    assert.ok(!covers(sc('user/Patient.r'), sc('user/Patient.rs')));
    assert.ok(!covers(sc('user/Patient.read'), sc('user/Patient.u')));
    assert.ok(!covers(sc('user/Patient.write'), sc('user/Patient.r')));
    assert.ok(!covers(sc('user/*.rs'), sc('user/Patient.rds')));
  });

  it('a query narrows: unconstrained covers constrained, not the reverse', () => {
    const all = sc('patient/Observation.rs');
    const lab = sc('patient/Observation.rs?category=laboratory');
    const labFinal = sc('patient/Observation.rs?category=laboratory&status=final');
    assert.ok(covers(all, lab));
    assert.ok(!covers(lab, all));
    assert.ok(covers(lab, labFinal));
    assert.ok(!covers(labFinal, lab));
    assert.ok(covers(sc('patient/*.rs'), labFinal));
    assert.ok(!covers(sc('patient/Observation.rs?category=vital-signs'), lab));
    assert.ok(!covers(sc('patient/Observation.rs?category=laboratory'), sc('patient/Observation.rs?code=laboratory')));
  });

  it('compares query pairs on decoded values, order-insensitively', () => {
    assert.ok(covers(sc('patient/Observation.rs?code=http%3A%2F%2Floinc.org%7C1'), sc('patient/Observation.rs?code=http://loinc.org|1')));
    assert.ok(covers(sc('patient/Observation.rs?status=final&category=lab'), sc('patient/Observation.rs?category=lab&status=final')));
  });

  it('different contexts never cover', () => {
    assert.ok(!covers(sc('system/*.*'), sc('user/Patient.r')));
    assert.ok(!covers(sc('user/*.cruds'), sc('patient/Patient.r')));
    assert.ok(!covers(sc('patient/*.cruds'), sc('user/Patient.r')));
  });
});

describe('intersect', () => {
  it('wildcard × specific yields the specific type', () => {
    const i = intersect(sc('patient/*.rs'), sc('patient/Observation.cruds'));
    assert.ok(i);
    assert.equal(i.raw, 'patient/Observation.rs');
    assert.equal(i.resourceType, 'Observation');
    assert.equal(i.version, 2);
    assert.equal(intersect(sc('patient/Observation.cruds'), sc('patient/*.rs'))?.raw, 'patient/Observation.rs');
    assert.equal(intersect(sc('user/*.rs'), sc('user/*.cu')), undefined);
    assert.equal(intersect(sc('user/*.rds'), sc('user/*.cud'))?.raw, 'user/*.d');
  });

  it('keeps only the overlapping permissions', () => {
    const i = intersect(sc('user/Patient.cru'), sc('user/Patient.rud'));
    assert.equal(i?.raw, 'user/Patient.ru');
    assert.equal(i && perms(i), 'ru');
  });

  it('returns undefined when nothing is shared', () => {
    assert.equal(intersect(sc('user/Patient.rs'), sc('user/Patient.cud')), undefined);
    assert.equal(intersect(sc('user/Patient.rs'), sc('user/Observation.rs')), undefined);
    assert.equal(intersect(sc('user/Patient.rs'), sc('patient/Patient.rs')), undefined);
    assert.equal(intersect(sc('system/*.*'), sc('user/*.*')), undefined);
  });

  it('v1 × v1 stays v1 when the result is a v1 set', () => {
    const i = intersect(sc('patient/*.read'), sc('patient/Observation.*'));
    assert.equal(i?.raw, 'patient/Observation.read');
    assert.equal(i?.version, 1);
    const w = intersect(sc('user/*.*'), sc('user/Patient.write'));
    assert.equal(w?.raw, 'user/Patient.write');
    assert.equal(w?.version, 1);
    assert.equal(intersect(sc('user/*.read'), sc('user/Patient.write')), undefined);
  });

  it('v1 × v2 is v2', () => {
    const i = intersect(sc('patient/*.read'), sc('patient/Observation.cruds'));
    assert.equal(i?.raw, 'patient/Observation.rs');
    assert.equal(i?.version, 2);
    const j = intersect(sc('patient/Observation.*'), sc('patient/Observation.r'));
    assert.equal(j?.raw, 'patient/Observation.r');
    assert.equal(j?.version, 2);
  });

  it('unions query pairs without duplicates', () => {
    const i = intersect(sc('patient/Observation.rs?category=laboratory&status=final'), sc('patient/*.rs?status=final&code=x'));
    assert.deepEqual(i?.query, [['category', 'laboratory'], ['status', 'final'], ['code', 'x']]);
    assert.equal(i?.raw, 'patient/Observation.rs?category=laboratory&status=final&code=x');
    const k = intersect(sc('patient/Observation.read'), sc('patient/Observation.rs?code=http%3A%2F%2Floinc.org%7C1'));
    assert.equal(k?.version, 2);
    assert.equal(k?.raw, 'patient/Observation.rs?code=http%3A%2F%2Floinc.org%7C1');
  });

  it('the result is covered by both inputs', () => {
    const pairs: Array<[string, string]> = [
      ['patient/*.rs', 'patient/Observation.cruds?category=lab'],
      ['user/Patient.cru', 'user/*.rud'],
      ['system/*.*', 'system/Device.write'],
    ];
    for (const [a, b] of pairs) {
      const i = intersect(sc(a), sc(b));
      assert.ok(i, `${a} ∩ ${b}`);
      assert.ok(covers(sc(a), i) && covers(sc(b), i), `${a} ∩ ${b} = ${i.raw}`);
      assert.deepEqual(parseResourceScope(i.raw)?.query, i.query);
    }
  });
});

describe('grantableScopes', () => {
  it('grants covered scopes as asked', () => {
    assert.deepEqual(grantableScopes('patient/Observation.rs patient/Condition.read', 'patient/*.*'), ['patient/Observation.rs', 'patient/Condition.read']);
    assert.deepEqual(grantableScopes('patient/Observation.rs?category=laboratory', 'patient/Observation.rs'), ['patient/Observation.rs?category=laboratory']);
  });

  it('narrows a wildcard request to what is allowed', () => {
    assert.deepEqual(grantableScopes('patient/*.read', 'patient/Observation.rs'), ['patient/Observation.rs']);
    assert.deepEqual(grantableScopes('patient/*.read', 'patient/Observation.rs patient/Condition.r'), ['patient/Observation.rs', 'patient/Condition.r']);
  });

  it('refuses escalation', () => {
    assert.deepEqual(grantableScopes('patient/*.cruds', 'patient/Observation.rs'), ['patient/Observation.rs']);
    assert.deepEqual(grantableScopes('user/Patient.r', 'patient/*.*'), []);
    assert.deepEqual(grantableScopes('patient/Observation.cud', 'patient/*.rs'), []);
    assert.deepEqual(grantableScopes('patient/Observation.rs', 'patient/Observation.rs?category=laboratory'), ['patient/Observation.rs?category=laboratory']);
    assert.deepEqual(grantableScopes('system/*.*', 'user/*.* openid'), []);
  });

  it('grants non-resource scopes only when allowed', () => {
    assert.deepEqual(grantableScopes('openid fhirUser launch/patient offline_access', 'openid launch/patient patient/*.rs'), ['openid', 'launch/patient']);
    assert.deepEqual(grantableScopes('openid', ''), []);
    assert.deepEqual(grantableScopes('foo openid', 'foo openid'), ['openid']);
  });

  it('drops invalid requested scopes', () => {
    assert.deepEqual(grantableScopes('patient/Observation.sr patient/observation.rs patient/Observation.rs', 'patient/*.*'), ['patient/Observation.rs']);
  });

  it('keeps requested order and dedupes', () => {
    assert.deepEqual(
      grantableScopes('launch/patient patient/Observation.rs openid patient/Observation.rs launch/patient', 'openid launch/patient patient/*.rs'),
      ['launch/patient', 'patient/Observation.rs', 'openid'],
    );
  });

  it('drops scopes covered by another granted scope', () => {
    assert.deepEqual(grantableScopes('patient/Observation.rs patient/*.rs', 'patient/*.cruds'), ['patient/*.rs']);
    assert.deepEqual(grantableScopes('patient/Observation.r patient/Observation.rs?category=lab patient/Observation.rs', 'patient/*.rs'), ['patient/Observation.rs']);
    // Equivalent spellings: the first is kept.
    assert.deepEqual(grantableScopes('patient/Observation.read patient/Observation.rs', 'patient/*.rs'), ['patient/Observation.read']);
    // An intersection covered by a scope granted as asked disappears.
    assert.deepEqual(grantableScopes('patient/*.cruds patient/Observation.rs', 'patient/Observation.rs patient/Condition.r'), ['patient/Observation.rs', 'patient/Condition.r']);
  });

  it('returns nothing for empty requests', () => {
    assert.deepEqual(grantableScopes('', 'patient/*.* openid'), []);
    assert.deepEqual(grantableScopes('   ', 'patient/*.* openid'), []);
  });
});

describe('permissionFor', () => {
  it('maps every interaction', () => {
    const expected: Record<Interaction, Permission> = {
      read: 'r',
      vread: 'r',
      'history-instance': 'r',
      'history-type': 's',
      'history-system': 's',
      'search-type': 's',
      'search-system': 's',
      create: 'c',
      update: 'u',
      patch: 'u',
      delete: 'd',
      operation: 'r',
    };
    for (const [interaction, permission] of Object.entries(expected) as Array<[Interaction, Permission]>) {
      assert.equal(permissionFor(interaction), permission, interaction);
    }
  });
});

describe('matchingScopes', () => {
  const granted = [
    'patient/Observation.rs?category=laboratory',
    'patient/Condition.read',
    'user/*.r',
    'system/Observation.cud',
    'patient/*.s',
  ].map(sc);
  const raws = (xs: ResourceScope[]): string[] => xs.map((s) => s.raw);

  it('matches by permission and type, with wildcard types matching everything, across contexts', () => {
    assert.deepEqual(raws(matchingScopes(granted, 'r', 'Observation')), ['patient/Observation.rs?category=laboratory', 'user/*.r']);
    assert.deepEqual(raws(matchingScopes(granted, 's', 'Observation')), ['patient/Observation.rs?category=laboratory', 'patient/*.s']);
    assert.deepEqual(raws(matchingScopes(granted, 's', 'Condition')), ['patient/Condition.read', 'patient/*.s']);
    assert.deepEqual(raws(matchingScopes(granted, 'c', 'Observation')), ['system/Observation.cud']);
    assert.deepEqual(raws(matchingScopes(granted, 'c', 'Condition')), []);
    assert.deepEqual(raws(matchingScopes(granted, 'u', 'Patient')), []);
  });

  it('filters by context', () => {
    assert.deepEqual(raws(matchingScopes(granted, 'r', 'Observation', 'patient')), ['patient/Observation.rs?category=laboratory']);
    assert.deepEqual(raws(matchingScopes(granted, 'r', 'Observation', 'user')), ['user/*.r']);
    assert.deepEqual(raws(matchingScopes(granted, 'r', 'Observation', 'system')), []);
    assert.deepEqual(raws(matchingScopes(granted, 'd', 'Observation', 'system')), ['system/Observation.cud']);
    assert.deepEqual(raws(matchingScopes(granted, 'd', 'Observation', 'patient')), []);
  });

  it('returns query-constrained scopes with their constraints', () => {
    const m = matchingScopes(granted, 'r', 'Observation', 'patient');
    assert.deepEqual(m[0]?.query, [['category', 'laboratory']]);
  });

  it('a "*" resource type (system-level interaction) is matched only by wildcard scopes', () => {
    assert.deepEqual(raws(matchingScopes(granted, 's', '*')), ['patient/*.s']);
  });

  it('is empty for no granted scopes', () => {
    assert.deepEqual(matchingScopes([], 'r', 'Patient'), []);
  });

  it('works with scopes from parseScopes', () => {
    const { resource } = parseScopes('openid patient/*.read launch/patient');
    assert.deepEqual(raws(matchingScopes(resource, permissionFor('search-type'), 'Encounter', 'patient')), ['patient/*.read']);
    assert.deepEqual(matchingScopes(resource, permissionFor('create'), 'Encounter', 'patient'), []);
  });
});
