/** The `medblock` command. */
import { existsSync } from 'node:fs';
import { inspect } from 'node:util';
import { Command, Option } from 'commander';
import { loadConfig } from '../config.ts';
import {
  runConsortiumApprove,
  runConsortiumInit,
  runConsortiumIssue,
  runConsortiumPropose,
  runConsortiumRequest,
  runConsortiumSubmit,
  type ConsortiumInitOptions,
  type ProposeOptions,
} from './consortium.ts';
import { runImport } from './import.ts';
import { runKeyStatus, runRotate, runRotateIndex } from './keys.ts';
import { runStart } from './start.ts';
import { runToken } from './token.ts';
import { runVerify, type VerifyOptions } from './verify.ts';

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
  .option('--expires-in <span>', 'lifetime, e.g. 30m, 8h; at most 24h', '8h')
  .option('--create-key', 'create the data dir\'s dev issuer key if the gateway has not yet (else that is an error)')
  .action(async (opts: { sub: string; scope: string; patient?: string; expiresIn: string; createKey?: boolean }) => runToken(loadConfig(), opts));

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

const keys = program.command('keys').description('master key management (MEDBLOCK_MASTER_KEY_FILE or <data dir>/keys/master-keys.json)');

keys
  .command('rotate')
  .description('re-wrap every data key under a new master key, online; run again to resume an interrupted rotation')
  .option('--new-key-file <path>', 'the new master key (32 bytes, base64); default: generated')
  .addOption(new Option('--batch-size <n>', 'data keys per store round trip').default(500).argParser(Number))
  .addOption(new Option('--max-rate <n>', 're-wraps per second at most (0 = unlimited)').default(0).argParser(Number))
  .action(async (opts: { newKeyFile?: string; batchSize: number; maxRate: number }) => {
    process.exitCode = await runRotate(loadConfig(), opts);
  });

keys
  .command('rotate-index')
  .description('re-derive every index term under a new blind-index key, online, then destroy the old one; run again to resume')
  .addOption(new Option('--batch-size <n>', 'resources per store round trip').default(500).argParser(Number))
  .addOption(new Option('--max-rate <n>', 'resources re-indexed per second at most (0 = unlimited)').default(0).argParser(Number))
  .action(async (opts: { batchSize: number; maxRate: number }) => {
    process.exitCode = await runRotateIndex(loadConfig(), opts);
  });

keys
  .command('status')
  .description('show the master key, any unfinished rotation and data keys still wrapped under a retiring key (exit 1 if any)')
  .action(async () => {
    process.exitCode = await runKeyStatus(loadConfig());
  });

program
  .command('verify')
  .description('check the ledger chain, attestations and every vault record against its anchor; or a proof file, offline (exit 1 on any mismatch)')
  .option('--proof <file>', 'verify a resource proof ($proof) instead, offline')
  .option('--resource <file>', 'with --proof: the resource version (FHIR JSON) whose digest the proof must prove')
  .option('--consistency <file>', 'verify a consistency proof ($consistency) instead, offline')
  .option('--old-checkpoint <file>', 'with --consistency: a checkpoint you kept ($checkpoint); the proof must start at its block')
  .option('--consortium <file>', 'for proofs: the consortium.json you trust (got out of band); required unless --consortium-fingerprint is given')
  .option('--consortium-fingerprint <sha256>', 'for proofs: the SHA-256 of the consortium.json you trust (sha256sum consortium.json)')
  .option('--ca <file>', 'for proofs: the consortium CA certificate you trust; must be the one consortium.json names (default: the proof\'s, checked against that fingerprint)')
  .option('--json', 'print the report as JSON')
  .action(async (opts: VerifyOptions) => {
    process.exitCode = await runVerify(loadConfig(), opts);
  });

program
  .command('bench')
  .description('run the benchmarks, as `npm run bench` (knobs: BENCH_* variables, listed in bench/run.ts): prints a table, writes bench/results.json')
  .action(async () => {
    const bench = new URL('../../bench/run.ts', import.meta.url);
    if (!existsSync(bench)) throw new Error('the benchmarks are not in this installation: run them from a checkout of the repository');
    await import(bench.href);
  });

const consortium = program.command('consortium').description('consortium identity: CA, member certificates and keys (docs/identity.md)');

consortium
  .command('init')
  .description('create a consortium CA and every member\'s certificate and keys in a new directory')
  .requiredOption('--members <ids>', 'comma-separated member (hospital) ids, e.g. h1,h2,h3')
  .requiredOption('--out <dir>', 'directory to create; an existing one is never overwritten')
  .option('--channel <name>', 'ledger channel name', 'consortium')
  .addOption(new Option('--quorum <n>', 'attestations that make a block final (default: a majority of members)').argParser(Number))
  .option('--federation-addresses <list>', 'each member\'s federation listener, comma-separated <id>=https://host:port (docs/federation.md)')
  .addOption(new Option('--default-consent <policy>', 'what a holder does when no Consent of the patient applies').choices(['opt-in', 'opt-out']).default('opt-in'))
  .action(async (opts: ConsortiumInitOptions) => runConsortiumInit(opts));

consortium
  .command('request')
  .description('a joining member: create its keys and the certificate request for the CA operator')
  .requiredOption('--member <id>', 'the joining member\'s id')
  .requiredOption('--out <dir>', 'a new directory for its keys and request.json')
  .action(async (opts: { member: string; out: string }) => runConsortiumRequest(opts));

consortium
  .command('issue')
  .description('the CA operator: check a member request and issue its certificate')
  .requiredOption('--ca <dir>', 'the CA directory (ca.crt and ca.key)')
  .requiredOption('--request <file>', 'the joining member\'s request.json')
  .requiredOption('--out <file>', 'the certificate file to create')
  .action(async (opts: { ca: string; request: string; out: string }) => runConsortiumIssue(opts));

consortium
  .command('propose')
  .description('start a membership or federation-address change (a config transaction) in a new proposal file')
  .option('--add <member>', 'add this member (with --certificate and --signing-key from its CSR, issued by the consortium CA)')
  .option('--certificate <file>', 'the new member\'s certificate (member.crt)')
  .option('--signing-key <file>', 'the new member\'s envelope-signing public key (signing.pub)')
  .option('--federation-address <url>', 'with --add: the new member\'s federation listener (https://host:port)')
  .option('--revoke <member>', 'revoke this member from the block after the change commits')
  .option('--set-federation-address <member>', 'move this member\'s federation listener to --address')
  .option('--address <url>', 'with --set-federation-address: the new https://host:port')
  .requiredOption('--out <file>', 'the proposal file to create')
  .action(async (opts: ProposeOptions) => runConsortiumPropose(loadConfig(), opts));

consortium
  .command('approve')
  .description('add this member\'s signed approval (MEDBLOCK_HOSPITAL_ID\'s signing key) to a proposal file')
  .argument('<proposal>', 'proposal file')
  .action(async (file: string) => runConsortiumApprove(loadConfig(), file));

consortium
  .command('submit')
  .description('order the proposal as a config envelope once it holds a quorum of approvals')
  .argument('<proposal>', 'proposal file')
  .action(async (file: string) => runConsortiumSubmit(loadConfig(), file));

// A command that fails exits at once: whatever it still holds open (a broker connection's retry timer, a
// worker thread) must not keep a failed `medblock start` alive for its supervisor. One line, no stack:
// MEDBLOCK_LOG=debug adds the stack and causes.
program.parseAsync().catch((e: unknown) => {
  const message = e instanceof Error ? e.message : String(e);
  process.stderr.write(`medblock: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
  if (process.env.MEDBLOCK_LOG === 'debug') process.stderr.write(`${inspect(e)}\n`);
  process.exit(1);
});
