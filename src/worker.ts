/** Worker threads that run TypeScript modules, one entry file for all of them. */
import { Worker } from 'node:worker_threads';

/** Starts a thread running `module` (a URL of a .ts file); `data` reaches it as workerData. */
export function startWorker(module: URL, data: Record<string, unknown> = {}): Worker {
  return new Worker(new URL('./worker-entry.mjs', import.meta.url), { workerData: { ...data, module: module.href } });
}
