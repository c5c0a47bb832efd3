/** Messages between SqliteStore (main thread) and its writer thread. */
import type { VersionWrite } from '../../vault/store.ts';

export type WriterRequest =
  | { kind: 'commit'; id: number; writes: VersionWrite[] }
  /** Every batch posted before this one has been answered as failed or aborted: accept new batches again. */
  | { kind: 'resume' }
  | { kind: 'close' };

export interface WriterReply {
  id: number;
  error?: { conflict?: { type: string; id: string }; aborted?: true; message?: string };
}
