/** What both Mongo adapters ask of the driver and the engine the same way: errors, engine kind, server clock. */
import { MongoBulkWriteError, MongoServerError, type Db, type WriteError } from 'mongodb';

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

/** True on FerretDB (its buildInfo names its version), whose behaviour the adapters work around (docs/engines.md). */
export async function isFerretDb(db: Db): Promise<boolean> {
  const info = await db.admin().command({ buildInfo: 1 });
  return 'ferretdbVersion' in info;
}

/** The server's clock in ms (staleness is judged on it, never on a gateway's), or this host's if it does not say. */
export async function serverNow(db: Db): Promise<number> {
  const hello = await db.admin().command({ hello: 1 });
  return hello.localTime instanceof Date ? hello.localTime.getTime() : Date.now();
}
