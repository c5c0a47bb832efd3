/**
 * The per-version checks that need no store access: R4 validation and the canonical digest. They run on
 * serialized versions, so they can run on worker threads while the main thread serves other requests.
 */
import { CanonicalJsonError, canonicalDigestHex } from '../../ledger/canonical-json.ts';
import { parseFhirJson } from '../json.ts';
import type { OutcomeIssue } from '../outcome.ts';
import { validateResource } from '../validation/index.ts';

export interface VersionCheck {
  /** Hex SHA-256 of the canonical JSON; absent when the version is invalid. */
  digest?: string;
  /** Errors and warnings (information is dropped). */
  issues: OutcomeIssue[];
}

export function checkVersion(json: string): VersionCheck {
  const resource = parseFhirJson(json);
  const issues: OutcomeIssue[] = [];
  for (const i of validateResource(resource)) {
    if (i.severity !== 'information') issues.push({ severity: i.severity, code: i.code, diagnostics: i.message, expression: [i.expression] });
  }
  if (issues.some((i) => i.severity === 'error')) return { issues };
  try {
    return { digest: canonicalDigestHex(resource), issues };
  } catch (e) {
    if (!(e instanceof CanonicalJsonError)) throw e;
    return { issues: [...issues, { severity: 'error', code: 'invalid', diagnostics: `the resource cannot be canonicalized: ${e.message}` }] };
  }
}
