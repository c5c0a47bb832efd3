/**
 * Official R4 examples that are not valid R4, each with the rule it breaks. Everything else in
 * ../shared/fhir-data/examples must validate with zero errors.
 *
 * Checked and NOT excluded: Binary-example, Media-example and DiagnosticReport-gingival-mass carry
 * base64 with line breaks, which R4's base64Binary regex `(\s*([0-9a-zA-Z\+/=]){4}\s*)+` allows
 * (medplum rejects them); RiskAssessment-breastcancer-risk / -prognosis fail ras-2 only in medplum's
 * FHIRPath: the predictions have no probability, so the invariant evaluates to empty (not applicable),
 * not false; Questionnaire-bb passes que-7 (answerBoolean is a boolean; see native-invariants.ts).
 */
export const INVALID_EXAMPLES: Record<string, { code: string; reason: string }> = {
  'Questionnaire-qs1.json': {
    code: 'required',
    reason: 'nested items have no linkId; Questionnaire.item.linkId is 1..1 in R4',
  },
};
