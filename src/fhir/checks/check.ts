/**
 * The per-version checks that need no store access: R4 validation and the version's commitment (the salted
 * digest it is anchored with, docs/proofs.md "Digests and commitments"). They run on
 * serialized versions, so they can run on worker threads while the main thread serves other requests.
 */
import { CanonicalJsonError, versionCommitmentHex } from '../../ledger/canonical-json.ts';
import { parseFhirJson } from '../json.ts';
import type { OutcomeIssue } from '../outcome.ts';
import { validateResource } from '../validation/index.ts';

export interface VersionCheck {
  /** The version's commitment (versionCommitmentHex under its salt); absent when the version is invalid. */
  digest?: string;
  /** Errors and warnings (information is dropped). */
  issues: OutcomeIssue[];
}

/** A serialized version and the salt its commitment is drawn with. */
export interface VersionToCheck {
  json: string;
  salt: Uint8Array;
}

export function checkVersion({ json, salt }: VersionToCheck): VersionCheck {
  const resource = parseFhirJson(json);
  const issues: OutcomeIssue[] = [];
  for (const i of validateResource(resource)) {
    if (i.severity !== 'information') issues.push({ severity: i.severity, code: i.code, diagnostics: i.message, expression: [i.expression] });
  }
  if (issues.some((i) => i.severity === 'error')) return { issues };
  try {
    return { digest: versionCommitmentHex(salt, resource), issues };
  } catch (e) {
    if (!(e instanceof CanonicalJsonError)) throw e;
    return { issues: [...issues, { severity: 'error', code: 'invalid', diagnostics: `the resource cannot be canonicalized: ${e.message}` }] };
  }
}
