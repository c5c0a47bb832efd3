/**
 * Wires the gateway-to-gateway channel (docs/federation.md, "The channel") from this member's consortium
 * directory and ledger replica: the client that asks other members, and, when a port is configured, the
 * mutual-TLS listener serving the federation route table to them. The federated record on top of it is
 * wired in federated-record.ts.
 */
import { FederationClient } from './adapters/federation/client.ts';
import { startFederationListener, type FederationListener } from './adapters/federation/listener.ts';
import { FederationGate } from './federation/gate.ts';
import type { LedgerView } from './federation/peers.ts';
import { federationRoutes, type FederationRoute } from './federation/routes.ts';
import { createFederationApp } from './http/federation-app.ts';
import type { MemberConsortium } from './identity/consortium-dir.ts';
import type { LedgerMember } from './ledger/member.ts';
import { log } from './log.ts';

export interface Federation {
  client: FederationClient;
  /** Present when the configuration names a federation port. */
  listener?: FederationListener;
  close(): Promise<void>;
}

export interface FederationOptions {
  consortium: MemberConsortium;
  ledger: LedgerView;
  /** Where to serve the federation API; unset ⇒ this gateway only asks, it serves nothing. */
  listen?: { host: string; port: number };
  /** Holder operations added to the route table (after metadata). */
  operations?: FederationRoute[];
  /** A member's federation address; default: the ledger's (consortium.json, then setFederationAddress changes). */
  addressOf?: (memberId: string) => string | undefined;
  /** Default per-call timeout of the client. */
  timeoutMs?: number;
}

/** The replica's current membership and height, read at each use. */
export function ledgerView(member: LedgerMember): LedgerView {
  return { membership: () => member.currentMembership(), height: () => member.headHeader()?.number ?? -1 };
}

export async function openFederation(opts: FederationOptions): Promise<Federation> {
  const { consortium } = opts;
  const client = new FederationClient({
    signer: consortium.self,
    tls: consortium.tls,
    caCertificatePem: consortium.caCertificatePem,
    ledger: opts.ledger,
    addressOf: opts.addressOf ?? ((memberId) => opts.ledger.membership().federationAddress(memberId)),
    defaultTimeoutMs: opts.timeoutMs,
  });
  let listener: FederationListener | undefined;
  if (opts.listen) {
    const self = consortium.self.memberId;
    const gate = new FederationGate({ self, caCertificatePem: consortium.caCertificatePem, ledger: opts.ledger });
    const app = createFederationApp({ self, gate, routes: federationRoutes(opts.operations) });
    listener = await startFederationListener({ ...opts.listen, tls: consortium.tls, caCertificatePem: consortium.caCertificatePem, app }).catch(async (e) => {
      await client.close();
      throw new Error(`federation listener (MEDBLOCK_FEDERATION_PORT=${opts.listen!.port}): ${(e as Error).message}`, { cause: e });
    });
    log('info', 'federation_listening', { member: self, host: opts.listen.host, port: listener.port });
  }
  return {
    client,
    listener,
    close: async () => {
      await listener?.close();
      await client.close();
    },
  };
}
