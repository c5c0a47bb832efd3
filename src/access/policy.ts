/** Decides whether a token may perform an interaction on a resource type, and within which patient. */
import { errors } from '../fhir/outcome.ts';
import { assertReservedAccess } from './reserved.ts';
import { grantsFor, type Permission } from './scopes.ts';
import type { AuthContext } from './tokens.ts';

/** Everything of the type, or only what lies in one patient's compartment. */
export type Access = { kind: 'all' } | { kind: 'patient'; patientId: string };

const PERMISSION_NAMES: Record<Permission, string> = { c: 'create', r: 'read', u: 'update', d: 'delete', s: 'search' };

export function authorize(auth: AuthContext, type: string, permission: Permission): Access {
  assertReservedAccess(auth, type, permission);
  const grants = grantsFor(auth.grants, type, permission);
  if (grants.length === 0) {
    throw errors.forbidden(`the token's scopes do not allow ${PERMISSION_NAMES[permission]} on ${type}`);
  }
  if (grants.some((g) => g.context !== 'patient')) return { kind: 'all' };
  if (!auth.patient) throw errors.forbidden('a patient/ scope needs a token bound to a patient');
  return { kind: 'patient', patientId: auth.patient };
}
