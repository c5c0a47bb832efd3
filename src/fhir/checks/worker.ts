/** Worker thread: answers check requests from pool.ts. */
import { parentPort } from 'node:worker_threads';
import { initValidation } from '../validation/index.ts';
import { checkVersion, type VersionToCheck } from './check.ts';

initValidation();
parentPort!.on('message', ({ id, versions }: { id: number; versions: VersionToCheck[] }) => {
  try {
    parentPort!.postMessage({ id, checks: versions.map(checkVersion) });
  } catch (e) {
    parentPort!.postMessage({ id, error: (e as Error).name });
  }
});
