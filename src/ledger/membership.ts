/**
 * The consortium's members as envelope validation sees them: member id → P-256 public key and the
 * block from which the member is revoked.
 *
 * Today the keys are given directly (KeyObject or SPKI PEM). Once the consortium CA exists, the caller
 * builds the same entries from member certificates (public key of a certificate that chains to the CA);
 * nothing here changes. Every member of a channel must build the same membership for a given block,
 * or the members fork.
 */
import { createPublicKey, type KeyObject } from 'node:crypto';
import type { ConfigChange } from './envelope.ts';

/** A member id: what a certificate's subject names and what envelopes carry as `creator`. */
export const MEMBER_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export interface MemberEntry {
  /** An EC P-256 public key: a KeyObject, or an SPKI PEM (`-----BEGIN PUBLIC KEY-----`). */
  publicKey: KeyObject | string;
  /**
   * The member is revoked for every envelope validated for this block number or a later one. A
   * revocation committed in block R takes effect at block R + 1, so every envelope in a block is
   * validated against the same membership.
   */
  revokedAtBlock?: number;
  /** Where the member's federation listener is (`https://host:port`): consortium.json, then config changes. */
  federationAddress?: string;
}

export interface Member {
  readonly id: string;
  readonly publicKey: KeyObject;
  readonly revokedAtBlock: number | undefined;
  readonly federationAddress: string | undefined;
}

/**
 * Why `address` cannot be a federation address (an https URL of at most 256 characters, written as its
 * origin: no path, query or credentials), if it cannot. Pure: envelope validation uses it, so every member
 * judges a config change alike.
 */
export function federationAddressProblem(address: unknown): string | undefined {
  if (typeof address !== 'string' || address.length > 256) return 'must be an https URL of at most 256 characters';
  let url: URL;
  try {
    url = new URL(address);
  } catch {
    return 'is not a URL';
  }
  if (url.protocol !== 'https:') return 'must use https';
  if (url.username || url.password || url.search || url.hash || (url.pathname !== '/' && url.pathname !== '')) return 'must be only https://host:port';
  if (address !== url.origin) return `must be written as ${url.origin}`;
  return undefined;
}

/** The membership given is unusable: a bad id, a key that is not P-256, a bad revocation block. */
export class MembershipError extends TypeError {
  constructor(message: string) {
    super(message);
    this.name = 'MembershipError';
  }
}

/** True for an EC public key on P-256, the only curve envelopes are signed with. */
export function isP256Key(key: KeyObject, type: 'public' | 'private'): boolean {
  return key.type === type && key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1';
}

function toPublicKey(id: string, key: KeyObject | string): KeyObject {
  let keyObject: KeyObject;
  try {
    keyObject = typeof key === 'string' ? createPublicKey({ key, format: 'pem' }) : key;
  } catch (e) {
    throw new MembershipError(`member ${id}: unreadable public key (${(e as Error).message})`);
  }
  if (!isP256Key(keyObject, 'public')) throw new MembershipError(`member ${id}: the key must be an EC P-256 public key`);
  return keyObject;
}

/**
 * Members checked once, up front, so that validating an envelope never meets a bad key. Immutable:
 * a config transaction produces a new Membership for the blocks after it.
 */
export class Membership {
  readonly #members: ReadonlyMap<string, Member>;

  constructor(entries: ReadonlyMap<string, MemberEntry> | Readonly<Record<string, MemberEntry>>) {
    const members = new Map<string, Member>();
    const list = entries instanceof Map ? [...entries] : Object.entries(entries);
    for (const [id, entry] of list) {
      if (!MEMBER_ID_PATTERN.test(id)) throw new MembershipError(`member id ${JSON.stringify(id)} does not match ${MEMBER_ID_PATTERN}`);
      const { revokedAtBlock } = entry;
      if (revokedAtBlock !== undefined && !(Number.isSafeInteger(revokedAtBlock) && revokedAtBlock >= 0)) {
        throw new MembershipError(`member ${id}: revokedAtBlock must be a non-negative integer`);
      }
      const { federationAddress } = entry;
      if (federationAddress !== undefined) {
        const problem = federationAddressProblem(federationAddress);
        if (problem !== undefined) throw new MembershipError(`member ${id}: the federation address ${problem}`);
      }
      members.set(id, { id, publicKey: toPublicKey(id, entry.publicKey), revokedAtBlock, federationAddress });
    }
    this.#members = members;
  }

  /** The member with this id, revoked or not. Ids of revoked members stay taken. */
  get(id: string): Member | undefined {
    return this.#members.get(id);
  }

  /** The member's federation listener (the latest change wins), or undefined when none was ever given. */
  federationAddress(id: string): string | undefined {
    return this.#members.get(id)?.federationAddress;
  }

  isActiveAt(id: string, blockNumber: number): boolean {
    const member = this.#members.get(id);
    return member !== undefined && (member.revokedAtBlock === undefined || blockNumber < member.revokedAtBlock);
  }

  activeCountAt(blockNumber: number): number {
    let count = 0;
    for (const id of this.#members.keys()) if (this.isActiveAt(id, blockNumber)) count++;
    return count;
  }

  /** Every member, revoked ones included, in id order. */
  entries(): Member[] {
    return [...this.#members.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  /** Approvals a config transaction needs at this block: a strict majority of the active members. */
  quorumAt(blockNumber: number): number {
    return Math.floor(this.activeCountAt(blockNumber) / 2) + 1;
  }
}

/**
 * The membership after a config change committed in block `effectiveBlock - 1`: a revoked member is revoked
 * from `effectiveBlock` on; an added member signs with the P-256 key its change carries; a member's federation
 * address is the one its latest change gave. Validation (envelope.ts) has already checked the change fits the
 * membership, so this only applies it.
 */
export function applyConfigChange(members: Membership, change: ConfigChange, effectiveBlock: number): Membership {
  const entries = new Map<string, MemberEntry>(
    members.entries().map((m) => [m.id, { publicKey: m.publicKey, revokedAtBlock: m.revokedAtBlock, federationAddress: m.federationAddress }]),
  );
  const entry = entries.get(change.member);
  if (change.action === 'revokeMember') {
    if (entry && entry.revokedAtBlock === undefined) entry.revokedAtBlock = effectiveBlock;
  } else if (change.action === 'setFederationAddress') {
    if (entry) entry.federationAddress = change.address;
  } else if (change.signingKey !== undefined && !entry) {
    entries.set(change.member, { publicKey: change.signingKey, federationAddress: change.federationAddress });
  }
  return new Membership(entries);
}
