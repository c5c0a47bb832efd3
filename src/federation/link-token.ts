/**
 * Link tokens: how consortium members find each other's records of one person without naming them
 * (docs/federation.md, "Linking a person across members").
 *
 *   token = base64url(HMAC-SHA-256(key = the consortium's shared patient-token.key,
 *                                  "medblock/link-token/v1\n" ‖ UTF-8(system ‖ "|" ‖ value)))
 *
 * over the NORMALIZED system and value, so two hospitals holding the same person under different local ids
 * get the same token, and nobody without the key can test a guessed identifier. Every member holds the key,
 * so a member can. Unlike locator tokens (src/ledger/patient-token.ts), link tokens are the same at every
 * hospital: that is their purpose. Pure module: no I/O, nothing thrown out of `patientLinkTokens`.
 */
import { createHmac, type KeyObject } from 'node:crypto';

export const US_SSN_SYSTEM = 'http://hl7.org/fhir/sid/us-ssn';
const DOMAIN_PREFIX = 'medblock/link-token/v1\n';

/** Why an identifier cannot be linked. The message never echoes the value (it may be PHI). */
export class UnlinkableIdentifierError extends Error {
  constructor(readonly reason: string) {
    super(`identifier is not linkable: ${reason}`);
    this.name = 'UnlinkableIdentifierError';
  }
}

/** Exactly what ECMAScript's String.prototype.trim removes, spelled out so that other implementations match. */
const EDGE_WHITESPACE = /^[\u0009-\u000D\u0020\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\uFEFF]+|[\u0009-\u000D\u0020\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000\uFEFF]+$/g;
/** In 'u' mode a surrogate pair is one code point, so this matches only a lone (ill-formed) surrogate. */
const LONE_SURROGATE = /[\uD800-\uDFFF]/u;
/** Inside a system: any whitespace, a control character, or the `|` that separates system from value. */
const BAD_SYSTEM_CHAR = /[\s\u0000-\u001F\u007F-\u009F|]/;

/** A system as compared and hashed: trimmed, otherwise exact (URIs are case-sensitive; no folding). */
export function normalizeSystem(system: unknown): string {
  if (typeof system !== 'string') throw new UnlinkableIdentifierError('the system is not a string');
  const trimmed = system.replace(EDGE_WHITESPACE, '');
  if (trimmed === '') throw new UnlinkableIdentifierError('the system is empty');
  if (BAD_SYSTEM_CHAR.test(trimmed)) throw new UnlinkableIdentifierError('the system contains whitespace, a control character or "|"');
  return trimmed;
}

/**
 * The canonical `{system, value}` a link token is computed over, or an UnlinkableIdentifierError.
 * Value: Unicode NFC, then trimmed; empty is refused; then the system's own rule, if it has one.
 */
export function normalizeIdentifier(system: unknown, value: unknown): { system: string; value: string } {
  const normalizedSystem = normalizeSystem(system);
  if (typeof value !== 'string') throw new UnlinkableIdentifierError('the value is not a string');
  if (LONE_SURROGATE.test(value)) throw new UnlinkableIdentifierError('the value is not well-formed Unicode');
  const trimmed = value.normalize('NFC').replace(EDGE_WHITESPACE, '');
  if (trimmed === '') throw new UnlinkableIdentifierError('the value is empty');
  const canonical = SYSTEM_RULES[normalizedSystem]?.(trimmed) ?? trimmed;
  return { system: normalizedSystem, value: canonical };
}

/**
 * US SSN: ASCII digits, optionally grouped by "-" or " "; exactly nine digits. Numbers the SSA never issues
 * (area 000 or 666, group 00, serial 0000) and nine identical digits are refused: they are the placeholders
 * ("000-00-0000", "999-99-9999") that would link unrelated people. Area 900–999 stays linkable (Synthea's
 * test SSNs live there).
 */
function canonicalUsSsn(value: string): string {
  const digits = value.replace(/[- ]/g, '');
  if (!/^[0-9]{9}$/.test(digits)) throw new UnlinkableIdentifierError('a US SSN must be nine digits');
  const [area, group, serial] = [digits.slice(0, 3), digits.slice(3, 5), digits.slice(5)];
  if (area === '000' || area === '666' || group === '00' || serial === '0000' || /^(\d)\1{8}$/.test(digits)) {
    throw new UnlinkableIdentifierError('a US SSN that is never issued (a placeholder)');
  }
  return digits;
}

const SYSTEM_RULES: Record<string, (value: string) => string> = { [US_SSN_SYSTEM]: canonicalUsSsn };

/** The link token of one identifier (base64url, 43 characters), or an UnlinkableIdentifierError. */
export function linkToken(key: KeyObject | Uint8Array, system: unknown, value: unknown): string {
  const normalized = normalizeIdentifier(system, value);
  return createHmac('sha256', key)
    .update(`${DOMAIN_PREFIX}${normalized.system}|${normalized.value}`, 'utf8')
    .digest('base64url');
}

/**
 * The sorted, de-duplicated link tokens of a Patient's identifiers in the configured systems, as of `at`.
 * Skipped, never thrown: identifiers in other systems, unlinkable ones, `use: "old"`, and those whose
 * `period.end` has passed (or cannot be read). `period.start` is not consulted.
 */
export function patientLinkTokens(key: KeyObject | Uint8Array, patient: unknown, systems: readonly string[], at: Date = new Date()): string[] {
  const identifiers = (patient as { identifier?: unknown } | null)?.identifier;
  if (!Array.isArray(identifiers)) return [];
  const wanted = new Set(systems);
  const tokens = new Set<string>();
  for (const identifier of identifiers) {
    if (typeof identifier !== 'object' || identifier === null) continue;
    const { system, value, use, period } = identifier as Record<string, unknown>;
    if (use === 'old' || hasEnded(period, at)) continue;
    try {
      if (wanted.has(normalizeSystem(system))) tokens.add(linkToken(key, system, value));
    } catch (e) {
      if (!(e instanceof UnlinkableIdentifierError)) throw e;
    }
  }
  return [...tokens].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * Whether a FHIR Period's end is before `at`. A partial end date covers its whole year, month or day (UTC);
 * an end that cannot be read counts as ended, so a malformed period never links.
 */
function hasEnded(period: unknown, at: Date): boolean {
  if (period === undefined) return false;
  if (typeof period !== 'object' || period === null) return true;
  const end = (period as { end?: unknown }).end;
  if (end === undefined) return false;
  if (typeof end !== 'string') return true;
  const partial = /^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$/.exec(end);
  let endsBefore: number;
  if (partial) {
    const [, year, month, day] = partial;
    endsBefore = day ? Date.UTC(+year, +month - 1, +day + 1) : month ? Date.UTC(+year, +month, 1) : Date.UTC(+year + 1, 0, 1);
  } else if (/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$/.test(end)) {
    endsBefore = Date.parse(end);
  } else {
    return true;
  }
  return !Number.isFinite(endsBefore) || endsBefore <= at.getTime();
}
