/**
 * Field checks for strict JSON schemas (ledger envelopes and their payloads): each returns a problem (a JSON
 * path and what is wrong, never the value found) or undefined.
 */
import { decodeBase64url } from './signature.ts';

/** A path and what is wrong there; undefined when nothing is. */
export type Problem = string | undefined;

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** An object with every required member, and no member outside required ∪ optional. */
export function shapeProblem(value: unknown, path: string, required: readonly string[], optional: readonly string[] = []): Problem {
  if (!isPlainObject(value)) return `${path} must be an object`;
  for (const name of required) if (!Object.hasOwn(value, name)) return `${path}/${name} is missing`;
  for (const name of Object.keys(value)) {
    if (!required.includes(name) && !optional.includes(name)) return `${path} has an unknown member`;
  }
  return undefined;
}

export function patternProblem(value: unknown, path: string, pattern: RegExp): Problem {
  return typeof value === 'string' && pattern.test(value) ? undefined : `${path} must match ${pattern}`;
}

export function base64urlProblem(value: unknown, path: string, byteLength: number): Problem {
  return decodeBase64url(value, byteLength) === undefined ? `${path} must be ${byteLength} bytes in base64url` : undefined;
}
