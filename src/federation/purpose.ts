/**
 * The purpose a user states for a request (docs/federation.md, "The federated record"):
 *
 *   X-Purpose-Of-Use: TREAT            an HL7 v3 ActReason (PurposeOfUse) code; TREAT when absent
 *   X-Break-Glass-Reason: <text>       break-the-glass, only with ETREAT; at most 500 characters
 *
 * Refused with a 400 that never echoes the values (a reason may name the patient).
 */
import { errors } from '../fhir/outcome.ts';

export const ACT_REASON_SYSTEM = 'http://terminology.hl7.org/CodeSystem/v3-ActReason';
export const DEFAULT_PURPOSE = 'TREAT';
export const MAX_BTG_REASON_CHARS = 500;

/** The PurposeOfUse codes of v3-ActReason a request may state. */
export const PURPOSES_OF_USE: readonly string[] = [
  'TREAT', 'ETREAT', 'CLINTRL', 'COC', 'POPHLTH',
  'HPAYMT', 'CLMATTCH', 'COVAUTH', 'COVERAGE', 'ELIGDTRM', 'ELIGVER', 'ENROLLM', 'REMITADV',
  'HOPERAT', 'CAREMGT', 'HSYSADMIN', 'PATADMIN', 'PATSFTY', 'RECORDMGT', 'HQUALIMP', 'HCOMPL', 'HLEGAL',
  'HRESCH', 'CLINTRCH', 'PUBHLTH', 'DISASTER', 'THREAT', 'PATRQT', 'FAMRQT', 'PWATRNY', 'HDIRECT', 'HMARKT', 'TRAIN',
];

export interface StatedPurpose {
  purpose: string;
  breakGlassReason?: string;
}

/** The stated purpose from the two header values (undefined when a header is absent). */
export function parsePurpose(purposeHeader: string | undefined, reasonHeader: string | undefined): StatedPurpose {
  const purpose = purposeHeader?.trim() || DEFAULT_PURPOSE;
  if (!PURPOSES_OF_USE.includes(purpose)) {
    throw errors.badRequest(`X-Purpose-Of-Use must be an HL7 v3 ActReason purpose-of-use code (${PURPOSES_OF_USE.join(', ')})`);
  }
  if (reasonHeader === undefined) return { purpose };
  const reason = reasonHeader.trim();
  if (purpose !== 'ETREAT') throw errors.badRequest('X-Break-Glass-Reason is only accepted with X-Purpose-Of-Use: ETREAT');
  if (reason === '' || reason.length > MAX_BTG_REASON_CHARS || /[\u0000-\u001F\u007F]/.test(reason)) {
    throw errors.badRequest(`X-Break-Glass-Reason must be 1 to ${MAX_BTG_REASON_CHARS} characters of text`);
  }
  return { purpose, breakGlassReason: reason };
}
