/**
 * FHIR R4 Consent at the holder: which resource types of a patient's record may go to whom, for what
 * purpose. Pure: the patient's Consents come in (consent-source.ts loads them), a decision comes out.
 * The rules are written down in docs/federation.md, "Consent"; in short:
 *
 * - Only `status: active` Consents of scope `patient-privacy` count; a root `provision.period` that does
 *   not cover the request's time takes a Consent out of the running. Of the rest, the one with the latest
 *   `dateTime` (tie: latest `meta.lastUpdated`) is the patient's current directive and decides alone.
 * - The root provision's type is its own `type` if it has one, else what `policyRule` says (v3 OPTIN ⇒
 *   permit, OPTOUT ⇒ deny; R4 leaves the root's type to the base policy). A nested provision needs a type
 *   and overrides its parent where it matches; the deepest match wins, deny wins a tie between siblings.
 * - Conditions: period, actor (by identifier: a member or a token subject), purpose (v3-ActReason, with
 *   the few specializations below), class (FHIR resource types), action (access/use/disclose). All given
 *   conditions must hold; the codes of one condition are or'ed.
 * - Where the deciding Consent does not speak (its root does not match), the consortium default decides.
 * - A Consent the gateway cannot evaluate (a condition it does not support, a malformed element, a modifier
 *   extension) is never read as a permit: if it is the deciding one, every type is denied.
 * - Break-the-glass: purpose ETREAT with a non-empty reason turns every deny into a permit, flagged.
 */
import type { DefaultConsent } from '../identity/consortium-dir.ts';
import { dateInterval, type Interval } from '../fhir/search/dates.ts';

export const ACT_REASON_SYSTEM = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
export const CONSENT_SCOPE_SYSTEM = 'http://terminology.hl7.org/CodeSystem/consentscope';
export const CONSENT_ACTION_SYSTEM = 'http://terminology.hl7.org/CodeSystem/consentaction';
export const RESOURCE_TYPES_SYSTEM = 'http://hl7.org/fhir/resource-types';
/** An actor identifier naming a consortium member (its member id). */
export const MEMBER_SYSTEM = 'urn:medblock:member';
/** An actor identifier naming an end user by their access token's subject. */
export const TOKEN_SUBJECT_SYSTEM = 'urn:medblock:token-subject';
/** The purpose of use that, with a reason, breaks the glass. */
export const EMERGENCY_TREATMENT = 'ETREAT';
export const MAX_BREAK_GLASS_REASON = 500;

/**
 * v3-ActReason purposes of use a request may state (the PurposeOfUse value set), each mapped to the more
 * general purpose it specializes, if any: a provision about the general purpose covers the special one
 * (a deny of HRESCH also denies CLINTRCH). BTG itself is not a purpose here: break-the-glass is ETREAT
 * with a reason.
 */
const PURPOSE_PARENT: ReadonlyMap<string, string | undefined> = new Map([
  ['TREAT', undefined], ['ETREAT', 'TREAT'], ['ERTREAT', 'ETREAT'], ['CLINTRL', 'TREAT'], ['COC', 'TREAT'], ['POPHLTH', 'TREAT'],
  ['HPAYMT', undefined], ['CLMATTCH', 'HPAYMT'], ['COVAUTH', 'HPAYMT'], ['COVERAGE', 'HPAYMT'], ['ELIGDTRM', 'COVERAGE'],
  ['ELIGVER', 'COVERAGE'], ['ENROLLM', 'COVERAGE'], ['MILDCRG', 'HPAYMT'], ['REMITADV', 'HPAYMT'],
  ['HRESCH', undefined], ['BIORCH', 'HRESCH'], ['CLINTRCH', 'HRESCH'], ['CLINTRCHNPC', 'CLINTRCH'], ['CLINTRCHPC', 'CLINTRCH'],
  ['PRECLINTRCH', 'HRESCH'], ['DSRCH', 'HRESCH'], ['POARCH', 'HRESCH'], ['TRANSRCH', 'HRESCH'],
  ['HOPERAT', undefined], ['CAREMGT', 'HOPERAT'], ['DONAT', 'HOPERAT'], ['FRAUD', 'HOPERAT'], ['GOV', 'HOPERAT'], ['HACCRED', 'HOPERAT'],
  ['HCOMPL', 'HOPERAT'], ['HDECD', 'HOPERAT'], ['HDIRECT', 'HOPERAT'], ['HDM', 'HOPERAT'], ['HLEGAL', 'HOPERAT'], ['HOUTCOMS', 'HOPERAT'],
  ['HPRGRP', 'HOPERAT'], ['HQUALIMP', 'HOPERAT'], ['HSYSADMIN', 'HOPERAT'], ['MEMADMIN', 'HOPERAT'], ['PATADMIN', 'HOPERAT'],
  ['PATSFTY', 'HOPERAT'], ['PERFMSR', 'HOPERAT'], ['RECORDMGT', 'HOPERAT'], ['TRAIN', 'HOPERAT'],
  ['HMARKT', undefined], ['PATRQT', undefined], ['FAMRQT', 'PATRQT'], ['PWATRNY', 'PATRQT'], ['SUPNWK', 'PATRQT'],
  ['PUBHLTH', undefined], ['DISASTER', 'PUBHLTH'], ['THREAT', 'PUBHLTH'],
]);

/** The purposes of use a request may state. */
export const PURPOSES_OF_USE: readonly string[] = [...PURPOSE_PARENT.keys()];

export function isPurposeOfUse(code: unknown): code is string {
  return typeof code === 'string' && PURPOSE_PARENT.has(code);
}

/** Consent actions that a read of the record is: its access, use or disclosure. */
const READ_ACTIONS = new Set(['access', 'use', 'disclose']);
/** Conditions of R4 provisions this gateway does not evaluate: a Consent using one is not evaluable. */
const UNSUPPORTED_CONDITIONS = ['securityLabel', 'code', 'dataPeriod', 'data'];

export interface ConsentRequest {
  /** Who asks: the requesting member, and its end user (the access token's subject). */
  actor: { member?: string; practitioner?: string };
  /** v3-ActReason purpose of use. */
  purpose: string;
  at: Date;
  resourceTypes: readonly string[];
  /** Break-the-glass reason; counts only with purpose ETREAT and when not blank. */
  btgReason?: string;
}

export interface ConsentDecision {
  /** Per requested resource type: whether it may be disclosed (after break-the-glass). */
  permit: Record<string, boolean>;
  /**
   * What decided: the deciding Consent version (`Consent/<id>/_history/<v>`) when one spoke for at least
   * one requested type, else `default` (the consortium default).
   */
  consent: string;
  /** `unreadable`: the deciding Consent could not be evaluated, so everything was denied. */
  basis: 'consent' | 'default' | 'unreadable';
  /** True when break-the-glass turned at least one deny into a permit. */
  breakTheGlass: boolean;
}

type Effect = 'permit' | 'deny';

interface Rule {
  type: Effect;
  period?: Interval;
  members: string[];
  subjects: Array<{ subject: string; member?: string }>;
  purposes?: string[];
  classes?: string[];
  /** False when the rule lists actions and none is a read: it then never matches. */
  readAction: boolean;
  children: Rule[];
}

interface Candidate {
  reference: string;
  dateTime: number;
  lastUpdated: number;
  /** Absent: the Consent could not be evaluated. */
  root?: Rule;
}

class UnevaluableConsent extends Error {}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function unevaluable(why: string): never {
  throw new UnevaluableConsent(why);
}

function list(value: unknown, field: string): Record<string, unknown>[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || !value.every(isObject)) unevaluable(`${field} must be an array of objects`);
  return value;
}

/** The codes of Codings of one system (anything else in the list: not evaluable). */
function codes(codings: unknown, system: string, field: string): string[] | undefined {
  const items = list(codings, field);
  if (items.length === 0) return undefined;
  return items.map((c) => (c.system === system && typeof c.code === 'string' ? c.code : unevaluable(`${field} must be Codings of ${system}`)));
}

function instant(value: unknown, field: string): Interval {
  const interval = typeof value === 'string' ? dateInterval(value) : undefined;
  return interval ?? unevaluable(`${field} is not a FHIR dateTime`);
}

function parsePeriod(period: unknown): Interval | undefined {
  if (period === undefined) return undefined;
  if (!isObject(period)) unevaluable('period must be an object');
  return {
    start: period.start === undefined ? -Infinity : instant(period.start, 'period.start').start,
    end: period.end === undefined ? Infinity : instant(period.end, 'period.end').end,
  };
}

function parseActors(actors: unknown, rule: Pick<Rule, 'members' | 'subjects'>): void {
  for (const actor of list(actors, 'actor')) {
    const identifier = isObject(actor.reference) ? actor.reference.identifier : undefined;
    if (!isObject(identifier) || typeof identifier.value !== 'string') {
      unevaluable(`an actor must be named by an identifier of ${MEMBER_SYSTEM} or ${TOKEN_SUBJECT_SYSTEM}`);
    }
    if (identifier.system === MEMBER_SYSTEM) rule.members.push(identifier.value);
    else if (identifier.system === TOKEN_SUBJECT_SYSTEM) {
      // A user of one member: the identifier's assigner names it; without one, the subject anywhere.
      const assigner = isObject(identifier.assigner) ? identifier.assigner.identifier : undefined;
      if (identifier.assigner !== undefined && !(isObject(assigner) && assigner.system === MEMBER_SYSTEM && typeof assigner.value === 'string')) {
        unevaluable(`a token subject's assigner must name a member by ${MEMBER_SYSTEM}`);
      }
      rule.subjects.push({ subject: identifier.value, member: isObject(assigner) ? (assigner.value as string) : undefined });
    } else unevaluable(`an actor must be named by an identifier of ${MEMBER_SYSTEM} or ${TOKEN_SUBJECT_SYSTEM}`);
  }
}

function parseRule(provision: unknown, inherited: Effect | undefined): Rule {
  if (!isObject(provision)) unevaluable('provision must be an object');
  if (provision.modifierExtension !== undefined) unevaluable('provision carries a modifier extension');
  const unsupported = UNSUPPORTED_CONDITIONS.find((c) => provision[c] !== undefined);
  if (unsupported) unevaluable(`provision.${unsupported} is not supported`);
  const type = provision.type === undefined ? inherited : provision.type;
  if (type !== 'permit' && type !== 'deny') unevaluable('a provision needs type permit or deny (the root: or a policyRule OPTIN/OPTOUT)');
  const actions = list(provision.action, 'action').flatMap((a) => codes(a.coding, CONSENT_ACTION_SYSTEM, 'action.coding') ?? []);
  const rule: Rule = {
    type,
    period: parsePeriod(provision.period),
    members: [],
    subjects: [],
    purposes: codes(provision.purpose, ACT_REASON_SYSTEM, 'purpose'),
    classes: codes(provision.class, RESOURCE_TYPES_SYSTEM, 'class'),
    readAction: provision.action === undefined || actions.some((a) => READ_ACTIONS.has(a)),
    children: [],
  };
  parseActors(provision.actor, rule);
  rule.children = list(provision.provision, 'provision').map((child) => parseRule(child, undefined));
  return rule;
}

/** policyRule OPTIN/OPTOUT (v3-ActCode) as the root provision's type, when the root has none. */
function policyEffect(policyRule: unknown): Effect | undefined {
  if (policyRule === undefined) return undefined;
  if (!isObject(policyRule)) unevaluable('policyRule must be a CodeableConcept');
  const found = list(policyRule.coding, 'policyRule.coding').map((c) => (c.system === 'http://terminology.hl7.org/CodeSystem/v3-ActCode' ? c.code : undefined));
  return found.includes('OPTOUT') ? 'deny' : found.includes('OPTIN') ? 'permit' : undefined;
}

const hasCoding = (concept: unknown, system: string, code: string) =>
  isObject(concept) && Array.isArray(concept.coding) && concept.coding.some((c) => isObject(c) && c.system === system && c.code === code);

/** A Consent that takes part in the decision (active, patient-privacy), read; undefined for the others. */
function candidate(consent: unknown): Candidate | undefined {
  if (!isObject(consent) || consent.resourceType !== 'Consent' || consent.status !== 'active') return undefined;
  if (!hasCoding(consent.scope, CONSENT_SCOPE_SYSTEM, 'patient-privacy')) return undefined;
  const meta = isObject(consent.meta) ? consent.meta : {};
  const reference = `Consent/${String(consent.id)}/_history/${String(meta.versionId)}`;
  const time = (value: unknown) => (typeof value === 'string' ? dateInterval(value)?.start : undefined);
  // An unreadable date ranks first: a Consent that cannot be placed in time is not outranked by an older one.
  const ranked = { reference, dateTime: time(consent.dateTime) ?? Infinity, lastUpdated: time(meta.lastUpdated) ?? Infinity };
  try {
    if (consent.modifierExtension !== undefined) unevaluable('the Consent carries a modifier extension');
    if (consent.dateTime !== undefined && ranked.dateTime === Infinity) unevaluable('dateTime is not a FHIR dateTime');
    return { ...ranked, root: parseRule(consent.provision ?? {}, policyEffect(consent.policyRule)) };
  } catch (e) {
    if (e instanceof UnevaluableConsent) return ranked;
    throw e;
  }
}

function purposeCovers(provisionPurpose: string, requested: string): boolean {
  for (let p: string | undefined = requested; p !== undefined; p = PURPOSE_PARENT.get(p)) if (p === provisionPurpose) return true;
  return false;
}

function matches(rule: Rule, request: ConsentRequest, type: string): boolean {
  const at = request.at.getTime();
  if (rule.period && !(at >= rule.period.start && at < rule.period.end)) return false;
  if (!rule.readAction) return false;
  if (rule.purposes && !rule.purposes.some((p) => purposeCovers(p, request.purpose))) return false;
  if (rule.classes && !rule.classes.includes(type)) return false;
  if (rule.members.length + rule.subjects.length > 0) {
    const { member, practitioner } = request.actor;
    const byMember = member !== undefined && rule.members.includes(member);
    const bySubject = practitioner !== undefined && rule.subjects.some((s) => s.subject === practitioner && (s.member === undefined || s.member === member));
    if (!byMember && !bySubject) return false;
  }
  return true;
}

/** The effect of the deepest matching provision under `rule` (undefined: `rule` does not match). */
function evaluate(rule: Rule, request: ConsentRequest, type: string, depth = 0): { effect: Effect; depth: number } | undefined {
  if (!matches(rule, request, type)) return undefined;
  let best = { effect: rule.type, depth };
  let fromChild = false;
  for (const child of rule.children) {
    const found = evaluate(child, request, type, depth + 1);
    if (!found) continue;
    if (!fromChild || found.depth > best.depth || (found.depth === best.depth && found.effect === 'deny')) best = found;
    fromChild = true;
  }
  return best;
}

/** Whether the root period (the Consent's term) covers the request's time; an unreadable Consent stays in. */
function inForce(c: Candidate, at: Date): boolean {
  const period = c.root?.period;
  return !period || (at.getTime() >= period.start && at.getTime() < period.end);
}

/**
 * The decision for one request over a patient's Consents (any JSON: what is not an active patient-privacy
 * Consent is ignored), with the consortium default where no Consent speaks.
 */
export function decideConsent(consents: readonly unknown[], request: ConsentRequest, defaultPolicy: DefaultConsent): ConsentDecision {
  const inTerm = consents.map(candidate).filter((c): c is Candidate => c !== undefined && inForce(c, request.at));
  inTerm.sort((a, b) => b.dateTime - a.dateTime || b.lastUpdated - a.lastUpdated || (a.root ? 1 : 0) - (b.root ? 1 : 0) || (a.reference < b.reference ? -1 : 1));
  const deciding = inTerm[0];
  const permit: Record<string, boolean> = {};
  let basis: ConsentDecision['basis'] = 'default';
  for (const type of request.resourceTypes) {
    if (deciding && !deciding.root) {
      basis = 'unreadable';
      permit[type] = false;
      continue;
    }
    const found = deciding?.root ? evaluate(deciding.root, request, type) : undefined;
    if (found) basis = 'consent';
    permit[type] = found ? found.effect === 'permit' : defaultPolicy === 'opt-out';
  }
  const glass = request.purpose === EMERGENCY_TREATMENT && (request.btgReason?.trim() ?? '') !== '';
  let breakTheGlass = false;
  for (const type of request.resourceTypes) {
    if (permit[type] || !glass) continue;
    permit[type] = true;
    breakTheGlass = true;
  }
  return { permit, consent: basis === 'default' ? 'default' : deciding!.reference, basis, breakTheGlass };
}
