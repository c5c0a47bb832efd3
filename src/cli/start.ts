import type { Server } from 'node:http';
import type { GatewayConfig } from '../config.ts';
import { createGateway, listen } from '../gateway.ts';
import { log } from '../log.ts';

/**
 * Runs the gateway until SIGINT or SIGTERM. A failure before it serves rejects, with what it had opened
 * closed again, so that `medblock start` exits non-zero at once and a supervisor sees it. Failures after
 * that (a lost database or broker) do not stop it: /readyz reports them.
 */
export async function runStart(config: GatewayConfig): Promise<void> {
  const gateway = await createGateway(config).catch((e: unknown) => {
    throw new Error(`start-up failed: ${(e as Error).message}`, { cause: e });
  });
  let server: Server;
  try {
    server = await listen(gateway);
  } catch (e) {
    await gateway.close().catch(() => {});
    throw new Error(`start-up failed: cannot listen on ${config.host}:${config.port} (HOST, PORT): ${(e as Error).message}`, { cause: e });
  }
  const shutdown = (signal: string) => {
    log('info', 'stopping', { signal });
    server.close(() => {
      void gateway.close().then(() => process.exit(0));
    });
    server.closeAllConnections();
  };
  // Before "started": a supervisor that stops the gateway as soon as it says so gets a clean shutdown.
  process.once('SIGINT', () => shutdown('SIGINT'));
  process.once('SIGTERM', () => shutdown('SIGTERM'));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  log('info', 'started', { fhirBase: `http://${config.host}:${port}/fhir`, dataDir: config.dataDir });
}
