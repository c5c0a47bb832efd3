/**
 * A ledger store's writer thread: its own connection to the ledger file, applying appends, attestations
 * and checkpoints strictly in the order they were posted, so the block's index inserts and the fsync run
 * off the gateway's main thread. A failed append is answered as failed and nothing more: a later block
 * cannot follow a missing one anyway (it fails its own head check).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { LedgerAppendError } from '../../ledger/ledger-store.ts';
import { LedgerWriter, openLedgerConnection, WRITER_CACHE_KIB, type LedgerWriterReply, type LedgerWriterRequest } from './ledger-writer.ts';

const port = parentPort!;
let db: ReturnType<typeof openLedgerConnection>;
let writer: LedgerWriter;
try {
  db = openLedgerConnection((workerData as { file: string }).file, WRITER_CACHE_KIB);
  writer = new LedgerWriter(db);
  port.postMessage({ ready: true } satisfies LedgerWriterReply);
} catch (e) {
  port.postMessage({ ready: false, message: (e as Error).message } satisfies LedgerWriterReply);
  port.close();
}

port.on('message', (message: LedgerWriterRequest) => {
  if (message.kind === 'close') {
    db.close();
    port.close();
    return;
  }
  let reply: LedgerWriterReply;
  try {
    if (message.kind === 'append') writer.append(message);
    else if (message.kind === 'attestations') writer.saveAttestations(message.rows);
    else writer.saveCheckpoint(message.channel, message.block, message.checkpoint);
    reply = { id: message.id };
  } catch (e) {
    const error = e as Error & { code?: string };
    reply = {
      id: message.id,
      error: e instanceof LedgerAppendError ? { append: error.message } : { name: error.name, message: error.message, code: error.code },
    };
  }
  port.postMessage(reply);
});
