/**
 * Child process for the crash test: starts a transaction of `entries` Observations and SIGKILLs itself
 * after the store has written `killAfter` version rows inside the open SQL transaction.
 * Usage: tsx crash-midway.ts <dataDir> <entries> <killAfter>
 */
import { parseScopes } from '../../src/access/scopes.ts';
import { createGateway } from '../../src/gateway.ts';
import { routeRequest } from '../../src/fhir/routes.ts';
import type { FhirContext } from '../../src/fhir/context.ts';
import { transactionOf } from './bundles.ts';

const [dataDir, entries, killAfter] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
process.env.MEDBLOCK_LOG = 'off';
const gateway = await createGateway({ host: '127.0.0.1', port: 0, dataDir, maxBodyBytes: 1 << 26 });
// Fault injection inside the adapter's real SQL transaction.
const statements = (gateway.store as unknown as { statements: { insertVersion: { run: (...a: unknown[]) => unknown } } }).statements;
const insert = statements.insertVersion.run.bind(statements.insertVersion);
let written = 0;
statements.insertVersion.run = (...args: unknown[]) => {
  const result = insert(...args);
  if (++written === killAfter) process.kill(process.pid, 'SIGKILL');
  return result;
};
const ctx: FhirContext = { repo: gateway.repo, baseUrl: 'http://crash.test/fhir' };
await routeRequest(
  { method: 'POST', path: [], query: [], body: transactionOf(entries, 'crash'), auth: { subject: 'crash', grants: parseScopes('user/*.cruds') } },
  ctx,
);
process.stdout.write('completed without being killed\n');
