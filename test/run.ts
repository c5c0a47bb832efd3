/**
 * `npm test`: runs every test file under test/ with node's test runner (through tsx).
 *
 * Tests that need MongoDB or Kafka use MEDBLOCK_MONGODB_URI / MEDBLOCK_KAFKA_BROKERS when set; otherwise
 * this runner starts local engines (test/engines, provisioned and cached on first use) and stops them at
 * the end. With MEDBLOCK_REQUIRE_SERVICES=1 (CI) an engine that cannot be had fails the run; without it,
 * the tests that need it are skipped, loudly. Engine logs are kept when the run fails.
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join, relative } from 'node:path';
import { startEngines, type RunningEngines } from './engines/index.ts';

const root = join(import.meta.dirname, '..');
const required = process.env.MEDBLOCK_REQUIRE_SERVICES === '1';

function testFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? testFiles(join(dir, e.name)) : e.name.endsWith('.test.ts') ? [join(dir, e.name)] : [],
  );
}

async function engines(env: NodeJS.ProcessEnv): Promise<RunningEngines | undefined> {
  const mongodb = !env.MEDBLOCK_MONGODB_URI;
  const kafka = !env.MEDBLOCK_KAFKA_BROKERS;
  if (!mongodb && !kafka) return undefined;
  const wanted = [mongodb && 'MongoDB-wire (FerretDB)', kafka && 'Kafka'].filter(Boolean).join(' and ');
  process.stderr.write(`test engines: starting ${wanted} (first run provisions and caches them; see docs/engines.md)\n`);
  try {
    const started = await startEngines({ mongodb, kafka, keepLogs: true, onProgress: (line) => process.stderr.write(`  ${line}\n`) });
    if (mongodb) env.MEDBLOCK_MONGODB_URI = started.mongodbUri;
    if (kafka) env.MEDBLOCK_KAFKA_BROKERS = started.kafkaBrokers;
    return started;
  } catch (e) {
    const reason = (e as Error).message;
    if (required) {
      process.stderr.write(`test engines: FAILED to start ${wanted}: ${reason}\nMEDBLOCK_REQUIRE_SERVICES=1: a missing engine fails the run.\n`);
      process.exit(1);
    }
    process.stderr.write(
      `\n*** SKIPPING every test that needs ${wanted}: ${reason}\n` +
        '*** Install java + mvn and go, or set MEDBLOCK_MONGODB_URI / MEDBLOCK_KAFKA_BROKERS; ' +
        'MEDBLOCK_REQUIRE_SERVICES=1 makes this a failure.\n\n',
    );
    return undefined;
  }
}

const files = testFiles(join(root, 'test')).map((f) => relative(root, f)).sort();
const filter = process.argv.slice(2);
const selected = filter.length ? files.filter((f) => filter.some((x) => f.includes(x))) : files;
const env: NodeJS.ProcessEnv = { MEDBLOCK_LOG: 'off', ...process.env };
const running = await engines(env);
const result = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=spec', ...selected], {
  cwd: root,
  stdio: 'inherit',
  env,
});
const status = result.status ?? 1;
// Engine logs are kept (and their place printed) only when the run failed.
await running?.stop(status !== 0);
process.exit(status);
