/**
 * Consent on the local reads of patients' records — read, vread, search (by type, in a compartment, across
 * types) and history — when the request states a purpose of use (consent-local.ts checks the headers and
 * serves `$everything`). A resource in a patient compartment is disclosed only when the Consent of every
 * patient whose compartment holds it permits its type for this caller and purpose (a resource about two
 * patients is both patients' data). A resource in no compartment (a Practitioner, an Organization) and a
 * deletion (no content) pass unchanged. Each patient's Consents are loaded and decided once per request.
 */
import type { BundleEntryParts } from '../fhir/bundle-json.ts';
import { patientCompartments } from '../fhir/compartment.ts';
import type { FhirContext, FhirRequest, FhirResponse } from '../fhir/context.ts';
import { errors, operationOutcome, type OutcomeIssue } from '../fhir/outcome.ts';
import { parseVersion, type ResourceVersion } from '../fhir/resource-version.ts';
import type { ConsentDecision } from './consent.ts';
import { consentSettings, decidedBy, decideLocally, statedPurpose, type DisclosureFacts, type StatedPurpose } from './consent-local.ts';

/**
 * The Consent decisions of one request, for a request that states a purpose (undefined otherwise). Checks
 * the headers (400 before anything is read).
 */
export function requestConsent(req: FhirRequest, ctx: FhirContext): RequestConsent | undefined {
  const stated = statedPurpose(req);
  return stated && new RequestConsent(ctx, req.auth.subject, stated);
}

export class RequestConsent {
  /** Per patient, what the patient's directive alone decides (break-the-glass is applied here, per resource). */
  private readonly decisions = new Map<string, Promise<ConsentDecision>>();
  /** Per deciding version (or `default`): the types it withheld in this request. */
  private readonly verdicts = new Map<string, Set<string>>();
  /** Deciding versions whose deny break-the-glass overrode. */
  private readonly opened = new Set<string>();
  private withheldCount = 0;

  constructor(
    private readonly ctx: FhirContext,
    private readonly subject: string,
    private readonly stated: StatedPurpose,
  ) {}

  /** The versions the patients' Consents let this caller see, in their order. */
  async filter(versions: readonly ResourceVersion[]): Promise<ResourceVersion[]> {
    const denials = await Promise.all(versions.map((v) => this.denial(v)));
    return versions.filter((_, i) => denials[i] === undefined);
  }

  /** For a read: undefined when the version may be disclosed, else a 403 naming the deciding Consent version(s), never the content. */
  async refusal(v: ResourceVersion): Promise<FhirResponse | undefined> {
    const denying = await this.denial(v);
    if (!denying) return undefined;
    const error = errors.forbidden(`the patient's consent (${this.named(denying)}) does not permit disclosing this ${v.type} for purpose ${this.stated.purpose}`);
    return { status: 403, body: error.outcome, disclosure: this.facts() };
  }

  /** The Bundle's OperationOutcome entry: how many resources were withheld and by which versions, or that the glass was broken. */
  outcome(): BundleEntryParts[] {
    const issues: OutcomeIssue[] = [];
    if (this.withheldCount > 0) {
      const by = this.sortedVerdicts().filter(([, types]) => types.size > 0).map(([consent, types]) => `${this.named([consent])}: ${[...types].sort().join(', ')}`);
      const n = this.withheldCount;
      issues.push({ severity: 'information', code: 'suppressed', diagnostics: `${n} resource${n === 1 ? '' : 's'} withheld by consent (${by.join('; ')})` });
    }
    if (this.opened.size > 0) {
      issues.push({ severity: 'warning', code: 'informational', diagnostics: `break-the-glass: access granted over a consent deny (${this.named([...this.opened])}); this access is flagged for review` });
    }
    return issues.length ? [{ resource: operationOutcome(issues), search: { mode: 'outcome' } }] : [];
  }

  /** What the access record states: the purpose, every deciding version with what it withheld, break-the-glass. */
  facts(): DisclosureFacts {
    // The reason is free text that may hold PHI: access records carry only that the glass was broken.
    const consents = this.sortedVerdicts().map(([consent, types]) => ({ consent, withheld: [...types].sort() }));
    return { purpose: this.stated.purpose, breakTheGlass: this.opened.size > 0, consents };
  }

  /** The versions whose deny withholds `v` from this caller (undefined: it may be disclosed), noting the verdicts. */
  private async denial(v: ResourceVersion): Promise<string[] | undefined> {
    if (v.json === undefined) return undefined;
    const patients = patientCompartments(v.type, parseVersion(v));
    if (patients.length === 0) return undefined;
    const decisions = await Promise.all(patients.map((p) => this.decisionFor(p)));
    const denying = [...new Set(decisions.filter((d) => !d.permit[v.type]).map((d) => d.consent))];
    const glass = this.stated.btgReason !== undefined;
    for (const d of decisions) {
      const types = this.verdicts.get(d.consent) ?? new Set<string>();
      if (!d.permit[v.type] && !glass) types.add(v.type);
      this.verdicts.set(d.consent, types);
    }
    if (denying.length === 0) return undefined;
    if (glass) {
      for (const consent of denying) this.opened.add(consent);
      return undefined;
    }
    this.withheldCount++;
    return denying;
  }

  private decisionFor(patientId: string): Promise<ConsentDecision> {
    let decision = this.decisions.get(patientId);
    if (!decision) {
      // Decided without the reason: break-the-glass counts only where it actually opens a resource served.
      decision = decideLocally(this.ctx, this.subject, { purpose: this.stated.purpose }, patientId);
      this.decisions.set(patientId, decision);
    }
    return decision;
  }

  /** In a stable order (versions, then `default`), whatever order the patients came in. */
  private sortedVerdicts(): Array<[string, Set<string>]> {
    return [...this.verdicts].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }

  private named(consents: readonly string[]): string {
    const policy = consentSettings(this.ctx).defaultPolicy;
    return consents.map((c) => decidedBy(c, policy)).join(', ');
  }
}
