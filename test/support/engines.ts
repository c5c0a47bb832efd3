/**
 * Access to the real engines the test runner (test/run.ts) started or was given. A test that needs one
 * gets its address here; when it is missing the test fails under MEDBLOCK_REQUIRE_SERVICES=1 and is
 * skipped (with a message saying why) otherwise. Never a mock in its place.
 */
import { describe } from 'node:test';

// Gateways on these engines, in process or spawned with this environment, are development deployments:
// their keys sit in temporary data dirs, which production mode refuses (docs/security.md, "Key placement").
process.env.MEDBLOCK_MODE ??= 'dev';

const VARIABLES = { mongodb: 'MEDBLOCK_MONGODB_URI', kafka: 'MEDBLOCK_KAFKA_BROKERS' } as const;
export type Engine = keyof typeof VARIABLES;

export function engineAddress(engine: Engine): string | undefined {
  return process.env[VARIABLES[engine]] || undefined;
}

/** `describe` that runs only when the engine is available (see the module comment). */
export function describeWithEngine(engine: Engine, name: string, fn: (address: string) => void): void {
  const address = engineAddress(engine);
  if (address) {
    describe(name, () => fn(address));
  } else if (process.env.MEDBLOCK_REQUIRE_SERVICES === '1') {
    describe(name, () => {
      throw new Error(`${VARIABLES[engine]} is not set and MEDBLOCK_REQUIRE_SERVICES=1: ${engine} is required`);
    });
  } else {
    describe.skip(`${name} — SKIPPED: no ${engine} (${VARIABLES[engine]} unset; run via npm test to start one)`, () => {});
  }
}
