/**
 * Child process for the crash test: starts a transaction of `entries` Observations and SIGKILLs itself
 * after the store has written `killAfter` version rows inside the open SQL transaction.
 * Usage: tsx crash-midway.ts <dataDir> <entries> <killAfter>
 */
import { join } from 'node:path';
import { parseScopes } from '../../src/access/scopes.ts';
import { SqliteStore } from '../../src/adapters/sqlite/sqlite-store.ts';
import { FhirRepository } from '../../src/fhir/repository.ts';
import { routeRequest } from '../../src/fhir/routes.ts';
import type { FhirContext } from '../../src/fhir/context.ts';
import { transactionOf } from './bundles.ts';

const [dataDir, entries, killAfter] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
process.env.MEDBLOCK_LOG = 'off';
// The writer runs on this thread so the fault can be injected inside its real SQL transaction.
const store = new SqliteStore(join(dataDir, 'vault.sqlite'), { inlineWriter: true });
await store.init();
const statements = store.inlineWriter!.statements as unknown as { insertVersion: { run: (...a: unknown[]) => unknown } };
const insert = statements.insertVersion.run.bind(statements.insertVersion);
let written = 0;
statements.insertVersion.run = (...args: unknown[]) => {
  const result = insert(...args);
  if (++written === killAfter) process.kill(process.pid, 'SIGKILL');
  return result;
};
const ctx: FhirContext = { repo: new FhirRepository(store), baseUrl: 'http://crash.test/fhir' };
await routeRequest(
  { method: 'POST', path: [], query: [], body: transactionOf(entries, 'crash'), auth: { subject: 'crash', grants: parseScopes('user/*.cruds') } },
  ctx,
);
process.stdout.write('completed without being killed\n');
