import type { GatewayConfig } from '../config.ts';
import { createGateway, listen } from '../gateway.ts';
import { log } from '../http/log.ts';

export async function runStart(config: GatewayConfig): Promise<void> {
  const gateway = await createGateway(config);
  const server = await listen(gateway);
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : config.port;
  log('info', 'started', { fhirBase: `http://${config.host}:${port}/fhir`, dataDir: config.dataDir });
  const shutdown = (signal: string) => {
    log('info', 'stopping', { signal });
    server.close(() => {
      void gateway.close().then(() => process.exit(0));
    });
    server.closeAllConnections();
  };
  process.once('SIGINT', () => shutdown('SIGINT'));
  process.once('SIGTERM', () => shutdown('SIGTERM'));
}
