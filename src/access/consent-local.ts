/**
 * Consent on local requests: a request that states a purpose of use (`X-Purpose-Of-Use`, optionally
 * `X-Break-Glass-Reason`) is decided by the patient's Consents like a federated one, with the caller as the
 * actor (practitioner = token subject, member = this hospital). Without a stated purpose nothing changes.
 */
import type { BundleEntryParts } from '../fhir/bundle-json.ts';
import type { FhirContext, FhirRequest } from '../fhir/context.ts';
import { errors, operationOutcome, type OutcomeIssue } from '../fhir/outcome.ts';
import { knownResourceTypes } from '../fhir/validation/index.ts';
import type { DefaultConsent } from '../identity/consortium-dir.ts';
import { decideConsent, EMERGENCY_TREATMENT, isPurposeOfUse, MAX_BREAK_GLASS_REASON, type ConsentDecision } from './consent.ts';
import { activeConsents } from './consent-source.ts';

export const PURPOSE_HEADER = 'X-Purpose-Of-Use';
export const BREAK_GLASS_HEADER = 'X-Break-Glass-Reason';

/** This member, and what applies where no Consent of the patient speaks (consortium.json federation.defaultConsent). */
export interface ConsentSettings {
  member?: string;
  defaultPolicy: DefaultConsent;
}

export interface StatedPurpose {
  /** v3-ActReason purpose of use. */
  purpose: string;
  /** Present only with ETREAT: break-the-glass. */
  btgReason?: string;
}

/** What the access record of a request decided under Consent states. */
export interface DisclosureFacts {
  purpose: string;
  /** True when break-the-glass turned a deny into a permit. */
  breakTheGlass: boolean;
  /** The deciding Consent version, `Consent/<id>/_history/<v>`, or `default` (a request on one patient's record). */
  consent?: string;
  /** Resource types the decision withheld. */
  withheld?: string[];
  /** Reads, searches and histories, which may span several patients' records: each deciding version and what it withheld. */
  consents?: ConsentVerdict[];
}

/** One deciding Consent version (or `default`) of a request, and the resource types it withheld. */
export interface ConsentVerdict {
  consent: string;
  withheld: string[];
}

/**
 * The purpose a request states in its headers (undefined: none, the request is not under Consent). 400
 * for a code that is not a v3-ActReason purpose of use, and for a break-the-glass reason that is blank,
 * too long, or comes without purpose ETREAT. Header values are never echoed (a reason may hold PHI).
 */
export function statedPurpose(req: Pick<FhirRequest, 'purposeOfUse' | 'breakGlassReason'>): StatedPurpose | undefined {
  const reason = req.breakGlassReason;
  if (req.purposeOfUse === undefined) {
    if (reason !== undefined) throw errors.badRequest(`${BREAK_GLASS_HEADER} needs ${PURPOSE_HEADER}: ${EMERGENCY_TREATMENT}`);
    return undefined;
  }
  const purpose = req.purposeOfUse.trim();
  if (!isPurposeOfUse(purpose)) {
    throw errors.badRequest(`${PURPOSE_HEADER} must be an HL7 v3 ActReason purpose of use code (TREAT, ETREAT, HPAYMT, HOPERAT, HRESCH, PUBHLTH …)`);
  }
  if (reason === undefined) return { purpose };
  if (purpose !== EMERGENCY_TREATMENT) throw errors.badRequest(`break-the-glass (${BREAK_GLASS_HEADER}) needs ${PURPOSE_HEADER}: ${EMERGENCY_TREATMENT}`);
  const btgReason = reason.trim();
  if (btgReason === '') throw errors.badRequest(`break-the-glass needs a reason: ${BREAK_GLASS_HEADER} must not be blank`);
  if (btgReason.length > MAX_BREAK_GLASS_REASON) throw errors.badRequest(`${BREAK_GLASS_HEADER} must be at most ${MAX_BREAK_GLASS_REASON} characters`);
  return { purpose, btgReason };
}

/** A decision over a patient's record for one request, in the terms a handler needs. */
export class ConsentFilter {
  constructor(
    readonly decision: ConsentDecision,
    private readonly stated: StatedPurpose,
    private readonly defaultPolicy: DefaultConsent,
  ) {}

  permits(type: string): boolean {
    return this.decision.permit[type] === true;
  }

  /** The OperationOutcome entry telling the client what was withheld or opened by break-the-glass (type names only). */
  outcome(types: readonly string[]): BundleEntryParts[] {
    const by = decidedBy(this.decision.consent, this.defaultPolicy);
    const issues: OutcomeIssue[] = [];
    const withheld = this.withheld(types);
    if (withheld.length > 0) {
      issues.push({ severity: 'information', code: 'suppressed', diagnostics: `withheld by consent (${by}): ${withheld.join(', ')}` });
    }
    if (this.decision.breakTheGlass) {
      issues.push({ severity: 'warning', code: 'informational', diagnostics: `break-the-glass: access granted over a consent deny (${by}); this access is flagged for review` });
    }
    return issues.length ? [{ resource: operationOutcome(issues), search: { mode: 'outcome' } }] : [];
  }

  facts(types: readonly string[]): DisclosureFacts {
    // The reason is free text that may hold PHI: access records carry only that the glass was broken.
    return { purpose: this.stated.purpose, breakTheGlass: this.decision.breakTheGlass, consent: this.decision.consent, withheld: this.withheld(types) };
  }

  private withheld(types: readonly string[]): string[] {
    return types.filter((t) => !this.permits(t));
  }
}

/**
 * The Consent decision for a request on a patient's record, or undefined when the request states no
 * purpose. Validates the headers before anything is read; the patient's Consents are read by the gateway
 * itself, whatever the caller's scopes.
 */
export async function consentFilter(req: FhirRequest, ctx: FhirContext, patientId: string): Promise<ConsentFilter | undefined> {
  const stated = statedPurpose(req);
  if (!stated) return undefined;
  const settings = consentSettings(ctx);
  return new ConsentFilter(await decideLocally(ctx, req.auth.subject, stated, patientId), stated, settings.defaultPolicy);
}

export function consentSettings(ctx: FhirContext): ConsentSettings {
  return ctx.consent ?? { defaultPolicy: 'opt-in' };
}

/** How the outcome and errors name what decided: the Consent version, or the default and its policy. */
export function decidedBy(consent: string, defaultPolicy: DefaultConsent): string {
  return consent === 'default' ? `the consortium default (${defaultPolicy})` : consent;
}

/**
 * The decision of a patient's Consents on a local request by `subject` (this hospital and the caller as
 * actor), for every resource type. `stated.btgReason` is passed on as given: leave it out to learn what
 * the patient's directive alone decides.
 */
export async function decideLocally(ctx: FhirContext, subject: string, stated: StatedPurpose, patientId: string): Promise<ConsentDecision> {
  const settings = consentSettings(ctx);
  const consents = await activeConsents(ctx.repo, patientId);
  return decideConsent(
    consents,
    { actor: { member: settings.member, practitioner: subject }, purpose: stated.purpose, at: new Date(), resourceTypes: knownResourceTypes(), btgReason: stated.btgReason },
    settings.defaultPolicy,
  );
}

/**
 * One request's decisions when it ran several reads under Consent (a batch's GET entries): every deciding
 * version once, with every type it withheld, and break-the-glass if any of them broke it.
 */
export function mergedDisclosure(purpose: string, parts: readonly DisclosureFacts[]): DisclosureFacts {
  const withheld = new Map<string, Set<string>>();
  for (const part of parts) {
    const verdicts = part.consents ?? (part.consent ? [{ consent: part.consent, withheld: part.withheld ?? [] }] : []);
    for (const v of verdicts) {
      const types = withheld.get(v.consent) ?? new Set<string>();
      for (const t of v.withheld) types.add(t);
      withheld.set(v.consent, types);
    }
  }
  const consents = [...withheld].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([consent, types]) => ({ consent, withheld: [...types].sort() }));
  return { purpose, breakTheGlass: parts.some((p) => p.breakTheGlass), consents };
}
