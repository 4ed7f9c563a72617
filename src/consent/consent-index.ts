import type { Consent } from '@medplum/fhirtypes';
import { contentHash, type Store, type StoredVersion } from '../store/index.js';
import type { PatientConsents } from './decide.js';
import { parseConsent, type ParsedConsent } from './provisions.js';
import type { ConsentChainView } from './types.js';

/** Why a stored Consent does or does not grant. */
export type ConsentStanding =
  | 'granting'
  /** Not status active / not patient-privacy / no local patient: plays no part. */
  | 'inactive'
  /** Active in FHIR but its current version is not active on chain (never signed, or revoked). */
  | 'not-on-chain'
  /** The engine does not understand all of it. */
  | 'unsupported'
  /** Its stored content no longer hashes to its recorded hash. */
  | 'hash-mismatch';

export interface LoadedConsent {
  parsed: ParsedConsent;
  versionId: number;
  contentHash: string;
  hashOk: boolean;
  standing: ConsentStanding;
}

export interface ConsentSnapshot {
  /** Changes whenever any input of a decision changes (stored Consents, roles, care teams, the chain view). */
  stamp: string;
  byPatient: ReadonlyMap<string, PatientConsents>;
  consents: readonly LoadedConsent[];
  /** Stored Consents whose content cannot be read (tampered): their patients' restrictions are unknown. */
  unreadable: number;
}

/**
 * Every stored Consent, parsed and classified, reloaded when the store reports a change to
 * Consent rows (also direct database edits) and reclassified when the chain view changes.
 */
export class ConsentIndex {
  private loaded?: { watched: number; consents: Array<Omit<LoadedConsent, 'standing'>>; unreadable: number };
  private snap?: ConsentSnapshot;
  private loading?: Promise<void>;

  constructor(private readonly store: Store, private readonly baseUrl: string, private readonly chain: ConsentChainView) {}

  async snapshot(): Promise<ConsentSnapshot> {
    const watched = this.store.watchedChanges();
    if (this.loaded?.watched !== watched) await this.reload(watched);
    const stamp = `${this.loaded!.watched}:${this.chain.generation}`;
    if (this.snap?.stamp !== stamp) this.snap = this.classify(stamp);
    return this.snap;
  }

  private async reload(watched: number): Promise<void> {
    // Concurrent requests share one reload.
    this.loading ??= (async () => {
      const consents: Array<Omit<LoadedConsent, 'standing'>> = [];
      let unreadable = 0;
      for (const id of this.store.currentIds('Consent')) {
        try {
          const v = await this.store.read('Consent', id);
          if (v?.resource) consents.push(this.load(v));
        } catch {
          // Its body no longer decrypts (edited in the database); whose it was is unknowable.
          unreadable++;
        }
      }
      this.loaded = { watched, consents, unreadable };
    })().finally(() => { this.loading = undefined; });
    await this.loading;
    if (this.loaded?.watched !== watched) await this.reload(this.store.watchedChanges());
  }

  private load(v: StoredVersion): Omit<LoadedConsent, 'standing'> {
    const resource = v.resource as Consent;
    return { parsed: parseConsent(resource, this.baseUrl), versionId: v.versionId, contentHash: v.contentHash, hashOk: contentHash(resource) === v.contentHash };
  }

  private classify(stamp: string): ConsentSnapshot {
    const byPatient = new Map<string, PatientConsents>();
    const consents: LoadedConsent[] = [];
    for (const c of this.loaded!.consents) {
      const standing = this.standingOf(c);
      consents.push({ ...c, standing });
      const pid = c.parsed.patientId;
      if (standing === 'inactive' || pid === undefined) continue;
      const entry = byPatient.get(pid) ?? { granting: [], restricting: [], governed: false };
      byPatient.set(pid, entry);
      if (!c.parsed.root) {
        if (standing === 'unsupported' || standing === 'hash-mismatch') entry.governed = true;
        continue;
      }
      if (standing === 'granting') entry.granting.push(c.parsed.root);
      else entry.restricting.push(c.parsed.root);
      if (standing === 'unsupported' || standing === 'hash-mismatch') entry.governed = true;
    }
    return { stamp, byPatient, consents, unreadable: this.loaded!.unreadable };
  }

  private standingOf(c: Omit<LoadedConsent, 'standing'>): ConsentStanding {
    const p = c.parsed;
    if (p.status !== 'active' || !p.privacy || p.patientId === undefined) return 'inactive';
    if (!c.hashOk) return 'hash-mismatch';
    if (p.problems.length > 0) return 'unsupported';
    if (!this.chain.isActive(p.patientId, c.contentHash)) return 'not-on-chain';
    return 'granting';
  }
}
