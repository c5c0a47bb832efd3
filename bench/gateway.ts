/**
 * Benchmark-only gateway entry: the same composition as `medblock start`, with the plaintext-vault switch
 * that exists only in code (never in the CLI or the gateway's own environment handling). The benchmark
 * starts every gateway through this file, encrypted or not, so the vault is the only difference.
 *
 *   BENCH_PLAINTEXT=1 node --import tsx bench/gateway.ts   # database adapter used directly
 *   node --import tsx bench/gateway.ts                     # the encrypted vault, as in production
 */
import { loadConfig } from '../src/config.ts';
import { createGateway, listen } from '../src/gateway.ts';
import { log } from '../src/log.ts';

const plaintext = process.env.BENCH_PLAINTEXT === '1';
const config = loadConfig();
const gateway = await createGateway(config, { plaintextVaultForBenchmark: plaintext });
const server = await listen(gateway);
const address = server.address();
const port = typeof address === 'object' && address ? address.port : config.port;
log('info', 'started', { fhirBase: `http://${config.host}:${port}/fhir`, vault: plaintext ? 'plaintext (benchmark)' : 'encrypted' });

const shutdown = () => {
  server.close(() => {
    void gateway.close().then(() => process.exit(0));
  });
  server.closeAllConnections();
};
process.once('SIGINT', shutdown);
process.once('SIGTERM', shutdown);
