/**
 * Runs version checks (validation + commitment) on worker threads, one fewer than the machine's cores, so
 * ingest uses every core; with no spare core (or `workers: 0`) they run inline on the calling thread.
 */
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { startWorker } from '../../worker.ts';
import { checkVersion, type VersionCheck, type VersionToCheck } from './check.ts';

export interface VersionChecker {
  check(versions: VersionToCheck[]): Promise<VersionCheck[]>;
  close(): Promise<void>;
}

interface Job {
  resolve: (checks: VersionCheck[]) => void;
  reject: (e: Error) => void;
}

class WorkerChecker implements VersionChecker {
  private readonly workers: Worker[];
  private readonly jobs = new Map<number, Job>();
  private nextId = 1;
  private turn = 0;

  constructor(count: number) {
    this.workers = Array.from({ length: count }, () => {
      const worker = startWorker(new URL('./worker.ts', import.meta.url));
      worker.on('message', ({ id, checks, error }: { id: number; checks?: VersionCheck[]; error?: string }) => {
        const job = this.jobs.get(id);
        if (!job) return;
        this.jobs.delete(id);
        if (this.jobs.size === 0) for (const w of this.workers) w.unref();
        if (checks) job.resolve(checks);
        else job.reject(new Error(`version check failed (${error})`));
      });
      worker.on('error', (e) => {
        for (const job of this.jobs.values()) job.reject(e);
        this.jobs.clear();
      });
      worker.unref();
      return worker;
    });
  }

  /** Splits the batch across the workers and keeps the results in order. */
  async check(versions: VersionToCheck[]): Promise<VersionCheck[]> {
    if (versions.length === 0) return [];
    const parts = Math.min(this.workers.length, Math.ceil(versions.length / 64));
    const size = Math.ceil(versions.length / parts);
    const chunks = await Promise.all(
      Array.from({ length: parts }, (_, i) => this.run(versions.slice(i * size, (i + 1) * size))),
    );
    return chunks.flat();
  }

  private run(versions: VersionToCheck[]): Promise<VersionCheck[]> {
    const id = this.nextId++;
    const worker = this.workers[this.turn++ % this.workers.length];
    return new Promise((resolve, reject) => {
      this.jobs.set(id, { resolve, reject });
      worker.ref();
      worker.postMessage({ id, versions });
    });
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}

const inlineChecker: VersionChecker = {
  check: async (versions) => versions.map(checkVersion),
  close: async () => {},
};

/** `workers` defaults to one per core beyond the first. */
export function createVersionChecker(workers = availableParallelism() - 1): VersionChecker {
  return workers > 0 ? new WorkerChecker(workers) : inlineChecker;
}
