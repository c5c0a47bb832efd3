/**
 * Authenticated head state. The content of every version is sealed and bound to its record, but which
 * version is current, and whether the resource is deleted, is decided by the adapter's pointer: someone with
 * write access to the database could move a pointer back (an allergy served as its older, milder version),
 * flip a deleted flag (hide or resurrect a resource), or point it at another record. So every pointer move
 * carries a MAC over (hospital, type, id, version, deleted) under the vault's head key, and every read of
 * current state checks it (EncryptedStore), together with the adapter's answer to "is there a newer finished
 * version?" which catches a pointer moved back with the MAC it had then (a replay).
 *
 * The head key is a random key of its own (`@head` in the data-key table), wrapped under the master key like
 * the index key: every gateway of a hospital on one database shares it, a master-key rotation re-wraps it
 * without changing it, and a future index-key rotation leaves it alone.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { StoredVersion } from './store.ts';

/** The data-key id of the head key. */
export const HEAD_KEY_ID = '@head';

/**
 * The vault format marker of authenticated head state: a vault whose index key exists without a head key was
 * written by a gateway before this format, its pointers carry no MACs, and it is refused (see
 * EncryptedStore.init and docs/security.md "Head state").
 */
export const HEAD_STATE_FORMAT = 'medblock-head/1';

export class HeadMac {
  constructor(
    private readonly key: Uint8Array,
    private readonly hospitalId: string,
  ) {}

  mac(type: string, id: string, versionId: number, deleted: boolean): string {
    return createHmac('sha256', this.key)
      .update(`${HEAD_STATE_FORMAT}\0${this.hospitalId}\0${type}\0${id}\0${versionId}\0${deleted ? 1 : 0}`)
      .digest('base64url');
  }

  /**
   * Why the current state read for `type`/`id` (as the adapter returned it) is not authentic, or undefined
   * when it is. `hidden` is judged by the caller, which knows whether the data key was erased.
   */
  problem(stored: StoredVersion, type: string, id: string | undefined): string | undefined {
    if (stored.type !== type || (id !== undefined && stored.id !== id)) return 'the current pointer leads to another resource\'s version';
    const head = stored.head;
    if (!head) return 'the store returned no current pointer state';
    if (head.mac === null) return 'the current pointer carries no head MAC';
    const expected = Buffer.from(this.mac(stored.type, stored.id, stored.versionId, stored.deleted));
    const actual = Buffer.from(head.mac);
    if (expected.length !== actual.length || !timingSafeEqual(expected, actual)) {
      return 'the head MAC does not match the version and deleted flag: the pointer or the flag was altered';
    }
    if (head.superseded) return 'a newer version is committed: the pointer was moved back (a replayed head)';
    return undefined;
  }
}
