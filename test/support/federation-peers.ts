/**
 * What a consortium member can do by hand, for federation tests: a raw mutual-TLS request with chosen
 * credentials and headers (what the federation client would never send), and a config change approved by
 * a quorum of members.
 */
import { Agent } from 'undici';
import type { MemberConsortium } from '../../src/identity/consortium-dir.ts';
import { approveConfigChange, createEnvelope, encodeEnvelope, newNonce, type ConfigChange } from '../../src/ledger/envelope.ts';

/** A GET over mutual TLS with these credentials; the server's identity is not checked. */
export function rawMtlsFetch(url: string, tls: { cert?: string; key?: string; ca: string }, headers: Record<string, string> = {}): Promise<Response> {
  const dispatcher = new Agent({ connect: { ...tls, minVersion: 'TLSv1.3', maxCachedSessions: 0, checkServerIdentity: () => undefined } });
  return fetch(url, { headers, dispatcher } as RequestInit).finally(() => dispatcher.close());
}

/** The wire bytes of a config envelope carrying `change`, approved by `approvers` and created by the first of them. */
export function quorumConfigEnvelope(approvers: MemberConsortium[], change: ConfigChange): Uint8Array {
  const channel = approvers[0].channel;
  const nonce = newNonce();
  const approvals = approvers.map((m) => approveConfigChange(m.self, channel, nonce, change));
  return encodeEnvelope(createEnvelope(approvers[0].self, { channel, type: 'config', nonce, payload: { ...change, approvals } }));
}
