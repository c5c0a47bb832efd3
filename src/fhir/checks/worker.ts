/** Worker thread: answers check requests from pool.ts. */
import { parentPort } from 'node:worker_threads';
import { initValidation } from '../validation/index.ts';
import { checkVersion } from './check.ts';

initValidation();
parentPort!.on('message', ({ id, jsons }: { id: number; jsons: string[] }) => {
  try {
    parentPort!.postMessage({ id, checks: jsons.map(checkVersion) });
  } catch (e) {
    parentPort!.postMessage({ id, error: (e as Error).name });
  }
});
