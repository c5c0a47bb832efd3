/**
 * SMART on FHIR scopes (v1 `user/Observation.read|write|*`, v2 `user/Observation.cruds`) checked per
 * interaction and resource type.
 */

/** What an interaction needs, as a SMART v2 permission letter. */
export type Permission = 'c' | 'r' | 'u' | 'd' | 's';

export type ScopeContext = 'patient' | 'user' | 'system';

export interface Grant {
  context: ScopeContext;
  /** Resource type, or `*`. */
  type: string;
  permissions: Set<Permission>;
}

const V1: Record<string, Permission[]> = {
  read: ['r', 's'],
  write: ['c', 'u', 'd'],
  '*': ['c', 'r', 'u', 'd', 's'],
};

const SCOPE = /^(patient|user|system)\/([A-Za-z]+|\*)\.([a-z*]+)(\?.*)?$/;

/** A scope the gateway cannot honour as granted: the token is refused rather than read more widely. */
export class UnsupportedScopeError extends Error {}

/**
 * Parses the resource scopes of a space-separated scope string; other scopes (openid, launch…) are ignored.
 * A SMART v2 scope with a query restriction (`patient/Observation.rs?category=…`) throws
 * UnsupportedScopeError: the restriction is not enforced, and dropping it would widen the grant.
 */
export function parseScopes(scope: string): Grant[] {
  const grants: Grant[] = [];
  for (const token of scope.split(/\s+/)) {
    const m = SCOPE.exec(token);
    if (!m) continue;
    const [, context, type, access, restriction] = m;
    if (restriction !== undefined) {
      // The restriction's value is left out of the message: it may name clinical content.
      throw new UnsupportedScopeError(
        `the scope ${context}/${type}.${access}?… has a query restriction, which this gateway does not enforce; ask for ${context}/${type}.${access} without it, or for narrower resource types`,
      );
    }
    let permissions: Permission[] | undefined = V1[access];
    if (!permissions && /^c?r?u?d?s?$/.test(access)) permissions = [...access] as Permission[];
    if (!permissions || permissions.length === 0) continue;
    grants.push({ context: context as ScopeContext, type, permissions: new Set(permissions) });
  }
  return grants;
}

/** The grants allowing `permission` on `type`, or an empty list. */
export function grantsFor(grants: Grant[], type: string, permission: Permission): Grant[] {
  return grants.filter((g) => (g.type === '*' || g.type === type) && g.permissions.has(permission));
}
