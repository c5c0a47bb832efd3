/** Messages between SqliteStore (main thread) and its writer thread. */
import type { AnchorMark, VersionWrite } from '../../vault/store.ts';
import type { KeyOperation } from './sqlite-writer.ts';

export type WriterRequest =
  | { kind: 'commit'; id: number; writes: VersionWrite[] }
  /** A data-key write or index rewrite, queued behind the batches posted before it; never aborted by a failed batch. */
  | { kind: 'key'; id: number; operation: KeyOperation }
  /** Anchor locations of committed versions, queued behind the batches posted before it; never aborted either. */
  | { kind: 'anchor'; id: number; marks: AnchorMark[] }
  /** Every batch posted before this one has been answered as failed or aborted: accept new batches again. */
  | { kind: 'resume' }
  | { kind: 'close' };

export interface WriterReply {
  id: number;
  /** A key operation's result. */
  result?: number | boolean;
  error?: { conflict?: { type: string; id: string }; erased?: { keyId: string; erasedAt: string }; aborted?: true; message?: string };
}
