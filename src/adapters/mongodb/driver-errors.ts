/** MongoDB driver errors both Mongo adapters interpret the same way. */
import { MongoBulkWriteError, MongoServerError, type WriteError } from 'mongodb';

export const DUPLICATE_KEY = 11000;

/** The write errors of a bulk write (the driver gives one or an array). */
export function writeErrorsOf(e: MongoBulkWriteError): WriteError[] {
  const errors = e.writeErrors as WriteError | WriteError[];
  return Array.isArray(errors) ? errors : [errors];
}

/** True when every error of a write is a unique-index violation (the insert found the key taken). */
export function isDuplicateKey(e: unknown): boolean {
  if (e instanceof MongoBulkWriteError) {
    const errors = writeErrorsOf(e);
    return errors.length > 0 && errors.every((w) => w.code === DUPLICATE_KEY);
  }
  return e instanceof MongoServerError && e.code === DUPLICATE_KEY;
}
