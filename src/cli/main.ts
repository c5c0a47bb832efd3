/** The `medblock` command. */
import { Command, Option } from 'commander';
import { loadConfig } from '../config.ts';
import { runImport } from './import.ts';
import { runStart } from './start.ts';
import { runToken } from './token.ts';

const program = new Command()
  .name('medblock')
  .description('MedBlock Gateway: a hospital FHIR R4 gateway with an encrypted vault and a consortium ledger')
  .showHelpAfterError();

program
  .command('start')
  .description('run the gateway (HOST, PORT, MEDBLOCK_DATA_DIR from the environment)')
  .action(async () => runStart(loadConfig()));

program
  .command('token')
  .description('mint a development bearer token signed by the data dir\'s dev issuer; prints the JWT alone')
  .requiredOption('--sub <user>', 'subject (user id)')
  .requiredOption('--scope <scopes>', 'space-separated SMART scopes, e.g. "user/*.cruds" or "user/Observation.read"')
  .option('--patient <id>', 'patient the token is bound to (for patient/ scopes)')
  .option('--expires-in <span>', 'lifetime, e.g. 30m, 8h, 7d', '8h')
  .action(async (opts: { sub: string; scope: string; patient?: string; expiresIn: string }) => runToken(loadConfig(), opts));

program
  .command('import')
  .description('load FHIR Bundles (.json) and NDJSON (.ndjson) files or directories, with a progress bar')
  .argument('<paths...>', 'files or directories')
  .option('--url <fhirBase>', 'send to a running gateway (e.g. http://localhost:8080/fhir) instead of writing the data dir directly')
  .option('--token <jwt>', 'bearer token for --url (default: minted from the data dir\'s dev issuer)')
  .addOption(new Option('--batch-size <n>', 'NDJSON resources per batch').default(500).argParser(Number))
  .action(async (paths: string[], opts: { url?: string; token?: string; batchSize: number }) => {
    process.exitCode = await runImport(loadConfig(), paths, opts);
  });

program.parseAsync().catch((e: unknown) => {
  process.stderr.write(`medblock: ${(e as Error).message}\n`);
  process.exitCode = 1;
});
