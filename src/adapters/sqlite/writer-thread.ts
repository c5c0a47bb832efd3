/**
 * The vault's writer thread: applies commit batches strictly in the order they were posted, so the fsync of
 * one batch overlaps the main thread's work on the next request. After a failed batch it aborts every batch
 * already queued behind it (they may depend on the failed one) until the main thread posts `resume`; key and
 * anchor writes depend on no batch and are always applied.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { KeyErasedError } from '../../vault/data-keys.ts';
import { VersionConflictError } from '../../vault/store.ts';
import { openDatabase } from './schema.ts';
import { SqliteWriter } from './sqlite-writer.ts';
import type { WriterReply, WriterRequest } from './writer-protocol.ts';

const db = openDatabase((workerData as { file: string }).file);
const writer = new SqliteWriter(db);
let poisoned = false;

parentPort!.on('message', (message: WriterRequest) => {
  if (message.kind === 'close') {
    db.close();
    parentPort!.close();
    return;
  }
  if (message.kind === 'resume') {
    poisoned = false;
    return;
  }
  let reply: WriterReply;
  if (message.kind === 'key' || message.kind === 'anchor') {
    try {
      if (message.kind === 'key') {
        reply = { id: message.id, result: writer.applyKeyOperation(message.operation) };
      } else {
        writer.markAnchored(message.marks);
        reply = { id: message.id };
      }
    } catch (e) {
      reply = { id: message.id, error: { message: (e as Error).name } };
    }
  } else if (poisoned) {
    reply = { id: message.id, error: { aborted: true } };
  } else {
    try {
      writer.apply(message.writes);
      reply = { id: message.id };
    } catch (e) {
      poisoned = true;
      reply = {
        id: message.id,
        error:
          e instanceof VersionConflictError ? { conflict: { type: e.type, id: e.id } }
          : e instanceof KeyErasedError ? { erased: { keyId: e.keyId, erasedAt: e.erasedAt } }
          : { message: (e as Error).name },
      };
    }
  }
  parentPort!.postMessage(reply);
});
