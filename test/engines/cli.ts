// Usage: npx tsx test/engines/cli.ts start|stop|status|provision [--keep-logs]
//   eval "$(npx tsx test/engines/cli.ts start)"   # prints the export lines on stdout (engines' addresses, single-broker replication)
// `start` leaves the engines running after it exits; `stop` stops them. See docs/engines.md.
import { existsSync, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import {
  cacheDir, EnginesError, isAlive, launchEngines, provisionEngines, removeRunDir, stopProcesses,
} from './index.ts';

interface State {
  runDir: string;
  logDir: string;
  mongodbUri: string;
  kafkaBrokers: string;
  pids: { kafka?: number; ferretdb?: number };
}

const stateFile = path.join(cacheDir, 'cli-state.json');
const say = (line: string): void => void process.stderr.write(`${line}\n`);

function readState(): State | undefined {
  return existsSync(stateFile) ? (JSON.parse(readFileSync(stateFile, 'utf8')) as State) : undefined;
}

/** Live pids of `state`, checking each still runs an engine of that run (pids get reused). */
function livePids(state: State): number[] {
  return Object.values(state.pids).filter((pid): pid is number => {
    if (pid === undefined || !isAlive(pid)) return false;
    try {
      return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(state.runDir);
    } catch {
      return false;
    }
  });
}

/** Everything a gateway needs to run on these engines: the Kafka is a single broker, so its topics get one replica. */
function printExports(state: State): void {
  process.stdout.write(`export MEDBLOCK_MONGODB_URI=${state.mongodbUri}\n`);
  process.stdout.write(`export MEDBLOCK_KAFKA_BROKERS=${state.kafkaBrokers}\n`);
  process.stdout.write('export MEDBLOCK_KAFKA_REPLICATION_FACTOR=1\n');
  process.stdout.write('export MEDBLOCK_KAFKA_MIN_INSYNC_REPLICAS=1\n');
}

async function stop(keepLogs: boolean): Promise<void> {
  const state = readState();
  if (!state) return say('engines: not running');
  const clean = await stopProcesses(livePids(state));
  await removeRunDir(state.runDir, keepLogs);
  await fs.rm(stateFile, { force: true });
  say(`engines: stopped${clean ? '' : ' (some had already exited)'}`);
}

async function main(): Promise<void> {
  const [command, ...flags] = process.argv.slice(2);
  const keepLogs = flags.includes('--keep-logs');
  switch (command) {
    case 'provision':
      await provisionEngines({ onProgress: say });
      return;
    case 'start': {
      const old = readState();
      if (old && livePids(old).length === Object.keys(old.pids).length) {
        say(`engines: already running (logs in ${old.logDir})`);
        return printExports(old);
      }
      if (old) await stop(true);
      const { engines, pids, runDir } = await launchEngines({ detached: true, onProgress: say });
      const state: State = { runDir, logDir: engines.logDir, mongodbUri: engines.mongodbUri,
        kafkaBrokers: engines.kafkaBrokers, pids };
      await fs.mkdir(cacheDir, { recursive: true });
      await fs.writeFile(stateFile, `${JSON.stringify(state, null, 2)}\n`);
      say(`engines: started (logs in ${engines.logDir}); stop with: npx tsx test/engines/cli.ts stop`);
      return printExports(state);
    }
    case 'stop':
      return stop(keepLogs);
    case 'status': {
      const state = readState();
      if (!state) return say('engines: not running');
      const live = livePids(state);
      for (const [name, pid] of Object.entries(state.pids)) {
        say(`${name}: pid ${pid} ${pid !== undefined && live.includes(pid) ? 'running' : 'NOT running'}`);
      }
      say(`logs: ${state.logDir}`);
      return printExports(state);
    }
    default:
      say('usage: npx tsx test/engines/cli.ts start|stop|status|provision [--keep-logs]');
      process.exitCode = 2;
  }
}

main().catch((err: unknown) => {
  say(err instanceof EnginesError ? `engines: ${err.message}` : String((err as Error)?.stack ?? err));
  process.exitCode = 1;
});
