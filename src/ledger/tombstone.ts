/**
 * The digest a deletion is anchored with. A deletion has no content, but it is a version like any other
 * and must be anchored: its digest is the canonical digest of a fixed tombstone object naming the type,
 * id, version and time, so anyone can recompute it (docs/proofs.md, "Digests").
 */
import { canonicalDigestHex } from './canonical-json.ts';

export function tombstoneDigest(type: string, id: string, versionId: number, lastUpdated: string): string {
  return canonicalDigestHex({ resourceType: type, id, meta: { versionId: String(versionId), lastUpdated }, deleted: true });
}
