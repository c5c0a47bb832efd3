/**
 * The federation listener: HTTPS with mutual TLS 1.3. The server presents this member's certificate and
 * accepts only clients whose certificate chains to the consortium CA (requestCert + rejectUnauthorized):
 * anyone else is refused during the handshake, before HTTP. Which member the client is, and whether the
 * ledger still counts it, is checked per request by the app (federation/gate.ts).
 */
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { RequestListener } from 'node:http';

export interface FederationListenerOptions {
  host: string;
  /** 0 picks a free port (tests). */
  port: number;
  /** This member's certificate and private key (member.crt, member.key). */
  tls: { certificatePem: string; keyPem: string };
  caCertificatePem: string;
  app: RequestListener;
}

export interface FederationListener {
  server: Server;
  /** The port listened on (the chosen one when 0 was asked). */
  port: number;
  close(): Promise<void>;
}

/** How long a connection may take to send a request's headers, and stay idle between requests. */
const HEADERS_TIMEOUT_MS = 10_000;
const KEEP_ALIVE_TIMEOUT_MS = 30_000;

export async function startFederationListener(opts: FederationListenerOptions): Promise<FederationListener> {
  const server = createServer(
    {
      cert: opts.tls.certificatePem,
      key: opts.tls.keyPem,
      ca: opts.caCertificatePem,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: 'TLSv1.3',
      headersTimeout: HEADERS_TIMEOUT_MS,
      requestTimeout: 60_000,
      keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS,
    },
    opts.app,
  );
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(opts.port, opts.host, () => {
    server.off('error', reject);
    resolve();
  }));
  return {
    server,
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
