// Validation issues and the location stack used to name where they are.
//
// The walker pushes element names and array indexes on a stack and only turns it into a string when
// an issue is reported, so valid data never pays for building paths.

export interface ValidationIssue {
  severity: 'error' | 'warning' | 'information';
  /** OperationOutcome issue-type code: 'structure' | 'required' | 'value' | 'invariant' | 'code-invalid' | ... */
  code: string;
  /** Human readable; never contains string values from the resource (no PHI). */
  message: string;
  /** FHIRPath-style location, e.g. "Patient.name[0].given[1]". */
  expression: string;
}

/**
 * At most this many issues are listed. A hostile body (say 200,000 unknown properties) must not yield a
 * huge OperationOutcome, nor a long walk: validation stops at the first error past the limit.
 */
export const MAX_ISSUES = 100;

export type IssueCode =
  | 'too-costly'
  | 'structure'
  | 'required'
  | 'value'
  | 'invariant'
  | 'code-invalid'
  | 'invalid'
  | 'not-supported'
  | 'informational';

export class LocationStack {
  private readonly parts: (string | number)[] = [];

  push(part: string | number): void {
    this.parts.push(part);
  }

  pop(): void {
    this.parts.pop();
  }

  get depth(): number {
    return this.parts.length;
  }

  /** Drops everything above `depth` (used to recover after a nested walk). */
  truncate(depth: number): void {
    this.parts.length = depth;
  }

  toString(): string {
    let out = '';
    for (const part of this.parts) {
      if (typeof part === 'number') out += `[${part}]`;
      else out += out.length === 0 ? part : `.${part}`;
    }
    return out;
  }

  /** The location of a child element, e.g. a missing required one. */
  child(name: string): string {
    return `${this.toString()}.${name}`;
  }
}

const SAFE_NAME = /^_?[A-Za-z][A-Za-z0-9]{0,63}$/;

/** JSON keys come from the input: only echo them when they look like element names. */
export function safePropertyName(key: string): string {
  return SAFE_NAME.test(key) ? key : '(invalid property name)';
}
