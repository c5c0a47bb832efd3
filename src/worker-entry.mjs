// Entry of every worker thread (startWorker in worker.ts): the worker needs tsx's loader for TypeScript
// whether or not the parent was started with it, then runs the module named in its workerData.
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
await import(workerData.module);
