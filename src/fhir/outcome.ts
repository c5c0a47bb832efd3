/** OperationOutcome construction and the error type every FHIR-facing failure is expressed in. */

export type IssueSeverity = 'fatal' | 'error' | 'warning' | 'information';

export interface OutcomeIssue {
  severity: IssueSeverity;
  /** OperationOutcome.issue.code (http://hl7.org/fhir/issue-type). */
  code: string;
  diagnostics: string;
  expression?: string[];
}

export interface OperationOutcome {
  resourceType: 'OperationOutcome';
  issue: Array<{
    severity: IssueSeverity;
    code: string;
    diagnostics?: string;
    details?: { text: string };
    expression?: string[];
  }>;
}

export function operationOutcome(issues: OutcomeIssue[]): OperationOutcome {
  return {
    resourceType: 'OperationOutcome',
    issue: issues.map((i) => ({
      severity: i.severity,
      code: i.code,
      details: { text: i.diagnostics },
      diagnostics: i.diagnostics,
      ...(i.expression?.length ? { expression: i.expression } : {}),
    })),
  };
}

export function informational(diagnostics: string): OperationOutcome {
  return operationOutcome([{ severity: 'information', code: 'informational', diagnostics }]);
}

/** A failure with an HTTP status and the issues explaining it. Messages must never carry PHI. */
export class FhirError extends Error {
  constructor(
    readonly status: number,
    readonly issues: OutcomeIssue[],
    readonly headers: Record<string, string> = {},
  ) {
    super(issues.map((i) => i.diagnostics).join('; '));
    this.name = 'FhirError';
  }

  get outcome(): OperationOutcome {
    return operationOutcome(this.issues);
  }

  /** The same failure located under a prefix, e.g. inside `Bundle.entry[3]`. */
  within(prefix: string): FhirError {
    return new FhirError(
      this.status,
      this.issues.map((i) => ({
        ...i,
        diagnostics: `${prefix}: ${i.diagnostics}`,
        expression: i.expression?.map((e) => `${prefix}.resource.${e}`),
      })),
      this.headers,
    );
  }
}

function fail(status: number, code: string, diagnostics: string, expression?: string[]): FhirError {
  return new FhirError(status, [{ severity: 'error', code, diagnostics, expression }]);
}

export const errors = {
  badRequest: (msg: string, expression?: string[]) => fail(400, 'invalid', msg, expression),
  unauthorized: (msg: string) =>
    new FhirError(401, [{ severity: 'error', code: 'login', diagnostics: msg }], { 'WWW-Authenticate': 'Bearer' }),
  forbidden: (msg: string) => fail(403, 'forbidden', msg),
  notFound: (msg: string) => fail(404, 'not-found', msg),
  methodNotAllowed: (msg: string) => fail(405, 'not-supported', msg),
  notAcceptable: (msg: string) => fail(406, 'not-supported', msg),
  conflict: (msg: string) => fail(409, 'conflict', msg),
  gone: (msg: string) => fail(410, 'deleted', msg),
  preconditionFailed: (msg: string, code = 'conflict') => fail(412, code, msg),
  payloadTooLarge: (msg: string) => fail(413, 'too-long', msg),
  unsupportedMediaType: (msg: string) => fail(415, 'not-supported', msg),
  unprocessable: (issues: OutcomeIssue[]) => new FhirError(422, issues),
  notSupported: (msg: string) => fail(400, 'not-supported', msg),
  /** An answer whose access record could not be made durable never leaves: an access that is not logged never happened. */
  accessLogUnavailable: () =>
    new FhirError(503, [{ severity: 'error', code: 'transient', diagnostics: 'the access log cannot be written; nothing was returned' }], { 'Retry-After': '5' }),
};
