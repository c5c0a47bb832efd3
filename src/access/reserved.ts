/**
 * What the generic SMART resource scopes do not decide alone: the access log and erasure.
 *
 * - AuditEvent resources are the gateway's own access records. They are append-only: no token may create,
 *   update, patch or delete one through the FHIR API (405), whatever its scopes, so a bundle entry or a
 *   conditional form is refused the same way. Reading them needs an explicit grant on AuditEvent at user or
 *   system level (the auditor scope, `user/AuditEvent.rs`): a wildcard (`user/*.rs`) does not cover the
 *   access log, and a patient-bound token never reads it (403).
 * - `$erase` needs the erase scope, `user/Patient.$erase` or `system/Patient.$erase`; `Patient.d` does not
 *   cover it, and a patient-bound token never has it.
 */
import { errors } from '../fhir/outcome.ts';
import type { Permission } from './scopes.ts';
import type { AuthContext } from './tokens.ts';

/** The resource type of the access log. */
export const ACCESS_LOG_TYPE = 'AuditEvent';

/** The scopes that allow `$erase` on a patient (the operation's name, SMART v2 shaped; no patient/ form). */
export const ERASE_SCOPES = ['user/Patient.$erase', 'system/Patient.$erase'] as const;

const WRITES: ReadonlySet<Permission> = new Set<Permission>(['c', 'u', 'd']);

/**
 * Throws when `permission` on `type` is refused whatever the generic grants say: a write to the access log
 * (405), or a read of it without an explicit user/ or system/ AuditEvent grant (403).
 */
export function assertReservedAccess(auth: AuthContext, type: string, permission: Permission): void {
  if (type !== ACCESS_LOG_TYPE) return;
  if (WRITES.has(permission)) {
    throw errors.methodNotAllowed('AuditEvent records are the append-only access log: the FHIR API never creates, updates, patches or deletes them');
  }
  const explicit = auth.grants.some((g) => g.type === ACCESS_LOG_TYPE && g.context !== 'patient' && g.permissions.has(permission));
  if (!explicit) {
    throw errors.forbidden('reading the access log needs the auditor scope (user/AuditEvent.rs or system/AuditEvent.rs); a wildcard or patient/ scope does not cover AuditEvent');
  }
}

/** Throws 403 unless the token holds an erase scope. */
export function assertEraseScope(auth: AuthContext): void {
  const scopes = auth.scope?.split(/\s+/) ?? [];
  if (!ERASE_SCOPES.some((s) => scopes.includes(s))) {
    throw errors.forbidden(`$erase needs the erase scope (${ERASE_SCOPES.join(' or ')}); Patient delete access does not cover it`);
  }
}
