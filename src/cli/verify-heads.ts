/**
 * `medblock verify`'s head-state half. The vault walk (verify.ts) checks every version against its anchor;
 * this checks, for every resource it saw, the state reads are served from:
 *
 * - the current pointer is at the newest version the vault holds, and at or beyond the newest version whose
 *   digest the ledger anchors (every digest this member anchored must be in the vault, verify.ts checks, so
 *   nothing newer can hide by being deleted);
 * - the head MAC holds for that version and its deleted flag, and the pointer's search visibility matches
 *   (hidden exactly when deleted or erased);
 * - the stored blind-index terms are exactly the terms recomputed from the decrypted current content
 *   (forged terms would route the resource into other searches, e.g. another patient's compartment).
 *
 * Problems name type, id and version only (not PHI here); never content, term values or tokens.
 */
import { parseFhirJson } from '../fhir/json.ts';
import type { FhirResource } from '../fhir/resource-version.ts';
import { resourceIndexTerms } from '../fhir/write-session.ts';
import type { VerificationProblem } from '../ledger/verify.ts';
import type { EncryptedStore } from '../vault/encrypted-store.ts';
import type { IndexTerm, StoredVersion } from '../vault/store.ts';

interface SeenResource {
  type: string;
  id: string;
  newest: number;
  /** The newest version whose anchor holds its digest on the ledger (0: none yet). */
  newestAnchored: number;
}

export class HeadCheck {
  private readonly resources = new Map<string, SeenResource>();

  /** Notes a version of the vault walk; `anchored` when the ledger holds its digest at its anchor. */
  note(version: Pick<StoredVersion, 'type' | 'id' | 'versionId'>, anchored = false): void {
    const key = `${version.type}/${version.id}`;
    let seen = this.resources.get(key);
    if (!seen) this.resources.set(key, (seen = { type: version.type, id: version.id, newest: 0, newestAnchored: 0 }));
    seen.newest = Math.max(seen.newest, version.versionId);
    if (anchored) seen.newestAnchored = Math.max(seen.newestAnchored, version.versionId);
  }

  async problems(vault: EncryptedStore): Promise<VerificationProblem[]> {
    const problems: VerificationProblem[] = [];
    for (const seen of this.resources.values()) problems.push(...(await this.check(vault, seen)));
    return problems;
  }

  private async check(vault: EncryptedStore, { type, id, newest, newestAnchored }: SeenResource): Promise<VerificationProblem[]> {
    const problems: VerificationProblem[] = [];
    const raw = await vault.inner.current(type, id);
    if (!raw) return [{ where: `${type}/${id}`, problem: `has versions up to v${newest} but no current pointer` }];
    const where = `${type}/${id} current (v${raw.versionId})`;
    const problem = (text: string) => problems.push({ where, problem: text });
    if (raw.type !== type || raw.id !== id) {
      problem('the current pointer leads to another resource\'s version');
      return problems;
    }
    // The walk may not list versions beyond a pointer (MongoDB's history hides them): the adapter's answer counts too.
    if (raw.versionId < newest || raw.head?.superseded) {
      problem(`is not the newest version: the vault holds v${Math.max(newest, raw.versionId + 1)} (the pointer was moved back)`);
    }
    if (raw.versionId < newestAnchored) problem(`is older than v${newestAnchored}, which the ledger anchors`);
    let opened: StoredVersion;
    try {
      opened = await vault.unseal(raw);
    } catch {
      return problems; // the vault walk reports the version itself
    }
    const head = await vault.headProblem(raw, type, id, opened);
    if (head) problem(`head state: ${head}`);
    const candidates = await this.expectedTerms(vault, opened);
    if (!candidates) return problems;
    const stored = await vault.inner.indexTerms(type, id);
    const key = (t: IndexTerm) => `${t.param}\0${t.value}`;
    const have = new Set(stored.map(key));
    // The terms under the index generation the stored marker names (the first live one if none matches).
    const expected = candidates.find((terms) => terms.length > 0 && have.has(key(terms[terms.length - 1]))) ?? candidates[0] ?? [];
    const want = new Set(expected.map(key));
    const params = (terms: IndexTerm[]) => [...new Set(terms.map((t) => t.param))].sort().join(', ');
    const forged = stored.filter((t) => !want.has(key(t)));
    const missing = expected.filter((t) => !have.has(key(t)));
    if (forged.length > 0 && opened.erased) problem(`${forged.length} index term(s) remain although its data key is destroyed (an $erase removes them; for ${params(forged)})`);
    else if (forged.length > 0) problem(`${forged.length} stored index term(s) its content does not have (forged, for ${params(forged)})`);
    if (missing.length > 0) problem(`${missing.length} index term(s) of its content are not stored (for ${params(missing)})`);
    return problems;
  }

  /**
   * The blind terms the current version must have, one set per live index generation (marker last): none when
   * deleted or erased; undefined if unparsable (reported by the walk).
   */
  private async expectedTerms(vault: EncryptedStore, opened: StoredVersion): Promise<IndexTerm[][] | undefined> {
    if (opened.deleted || opened.erased) return [[]];
    if (!opened.content) return undefined;
    let resource: FhirResource;
    try {
      resource = parseFhirJson(Buffer.from(opened.content).toString('utf8')) as FhirResource;
    } catch {
      return undefined;
    }
    return vault.blindTerms(opened.type, [...resourceIndexTerms(opened.type, resource), ...vault.linkTerms(opened.type, resource, opened.lastUpdated)]);
  }
}
