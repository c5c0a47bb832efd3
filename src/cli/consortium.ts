/** `medblock consortium …`: a new consortium's CA, member certificates and keys; membership changes as config transactions. */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { resolve } from 'node:path';
import type { GatewayConfig } from '../config.ts';
import { loadConsortium, openOrderer } from '../gateway.ts';
import { createConsortium, issueMemberCertificate, type MemberRequest } from '../identity/ca.ts';
import {
  DEFAULT_CONSENTS, federationAddressProblem, memberCertificateCheck, writeConsortiumDir, writeMemberRequestDir, type DefaultConsent,
} from '../identity/consortium-dir.ts';
import { approveConfigChange, createEnvelope, encodeEnvelope, newNonce, type ConfigApproval, type ConfigChange } from '../ledger/envelope.ts';
import { encodeChannelMessage } from '../ledger/orderer.ts';

export interface ConsortiumInitOptions {
  /** Comma-separated member ids. */
  members: string;
  out: string;
  channel?: string;
  quorum?: number;
  /** Comma-separated `<member id>=https://host:port`: the members' federation listeners at genesis. */
  federationAddresses?: string;
  /** What a holder does when no Consent applies (default opt-in). */
  defaultConsent?: string;
}

/** `--federation-addresses h1=https://h1:8443,…` as member id → address; anything unusable refused by name. */
function parseFederationAddresses(spec: string, members: readonly string[]): Record<string, string> {
  const option = '--federation-addresses';
  const addresses: Record<string, string> = {};
  for (const [i, item] of spec.split(',').entries()) {
    const at = item.indexOf('=');
    if (at < 0) throw new Error(`${option} entry ${i + 1} must be <member id>=https://host:port`);
    const [id, address] = [item.slice(0, at).trim(), item.slice(at + 1).trim()];
    if (!members.includes(id)) throw new Error(`${option} names ${JSON.stringify(id)}, which is not one of --members`);
    if (Object.hasOwn(addresses, id)) throw new Error(`${option} gives ${id} twice`);
    addresses[id] = checkedAddress(address, `${option} ${id}:`);
  }
  return addresses;
}

export async function runConsortiumInit(opts: ConsortiumInitOptions): Promise<void> {
  const out = resolve(opts.out);
  // Checked before key generation to fail fast; the non-recursive mkdir below is the real guard.
  if (existsSync(out)) throw new Error(`${out} already exists; refusing to overwrite it (choose a new --out directory)`);
  const members = opts.members.split(',').map((id) => id.trim());
  const defaultConsent = (opts.defaultConsent ?? 'opt-in') as DefaultConsent;
  if (!DEFAULT_CONSENTS.includes(defaultConsent)) throw new Error(`--default-consent must be one of ${DEFAULT_CONSENTS.join(', ')}`);
  const addresses = opts.federationAddresses === undefined ? {} : parseFederationAddresses(opts.federationAddresses, members);
  const consortium = await createConsortium({ members, channel: opts.channel, quorum: opts.quorum });
  writeConsortiumDir(out, consortium, { addresses, defaultConsent });
  const listening = Object.keys(addresses).length;
  process.stdout.write(
    `created consortium "${consortium.channel}" in ${out}: CA and ${consortium.members.length} members ` +
      `(${consortium.members.map((m) => m.id).join(', ')}), quorum ${consortium.quorum}; ` +
      `federation: ${listening} address(es), default consent ${defaultConsent}\n` +
      `each member directory holds private keys: hand it to that member only, over a secure channel\n`,
  );
}

/** `medblock consortium request`: a joining member's keys and the request to send to the CA operator. */
export async function runConsortiumRequest(opts: { member: string; out: string }): Promise<void> {
  const out = resolve(opts.out);
  await writeMemberRequestDir(out, opts.member);
  process.stdout.write(
    `member ${opts.member}'s keys and request written to ${out}\n` +
      `send ${out}/request.json to the CA operator (medblock consortium issue); the private keys never leave ${out}\n`,
  );
}

/**
 * `medblock consortium issue`, run by the CA operator: checks a member request (CSR self-signature, member
 * id, signing-key proof of possession) and writes the member certificate.
 */
export async function runConsortiumIssue(opts: { ca: string; request: string; out: string }): Promise<void> {
  const ca = { certPem: readFileSync(resolve(opts.ca, 'ca.crt'), 'utf8'), keyPem: readFileSync(resolve(opts.ca, 'ca.key'), 'utf8') };
  const { memberId, ...request } = JSON.parse(readFileSync(resolve(opts.request), 'utf8')) as MemberRequest & { memberId: string };
  if (typeof memberId !== 'string') throw new Error(`${opts.request} names no memberId`);
  const certificate = issueMemberCertificate(ca, request, memberId);
  writeFileSync(resolve(opts.out), certificate, { flag: 'wx', mode: 0o644 });
  process.stdout.write(
    `certificate for ${memberId} written to ${opts.out}; a member proposes adding it with ` +
      '`medblock consortium propose --add ' + memberId + ' --certificate <it> --signing-key <its signing.pub>`\n',
  );
}

/**
 * Config transactions (docs/ledger.md, "Changing the membership"): a proposal file travels between the
 * members; each approves it with its own signing key; once it holds a quorum of approvals, any member
 * submits it to the ordering service as a config envelope it signs.
 */
export interface ConfigProposal {
  format: 'medblock-config-proposal/v1';
  channel: string;
  nonce: string;
  change: ConfigChange;
  approvals: ConfigApproval[];
}

export interface ProposeOptions {
  add?: string;
  certificate?: string;
  signingKey?: string;
  /** With --add: the new member's federation listener. */
  federationAddress?: string;
  revoke?: string;
  /** Moves this member's federation listener to --address. */
  setFederationAddress?: string;
  address?: string;
  out: string;
}

/** Refuses an address every member would refuse, before anyone signs it. */
function checkedAddress(address: string, option: string): string {
  const problem = federationAddressProblem(address);
  if (problem) throw new Error(`${option} ${problem}`);
  return address;
}

export async function runConsortiumPropose(config: GatewayConfig, opts: ProposeOptions): Promise<void> {
  const actions = [opts.add, opts.revoke, opts.setFederationAddress].filter((member) => member !== undefined);
  if (actions.length !== 1) throw new Error('give exactly one of --add <member>, --revoke <member> or --set-federation-address <member>');
  if (opts.federationAddress !== undefined && opts.add === undefined) throw new Error('--federation-address goes with --add (use --set-federation-address for a member)');
  if ((opts.address !== undefined) !== (opts.setFederationAddress !== undefined)) throw new Error('--set-federation-address <member> needs --address <https://host:port>, and --address needs it');
  const consortium = await loadConsortium(config);
  let change: ConfigChange;
  if (opts.add !== undefined) {
    if (!opts.certificate || !opts.signingKey) throw new Error('--add needs --certificate <member.crt> and --signing-key <signing.pub>');
    const certificate = readFileSync(opts.certificate, 'utf8');
    const signingKey = readFileSync(opts.signingKey, 'utf8');
    const problem = memberCertificateCheck(consortium.caCertificatePem)(certificate, opts.add, signingKey, new Date().toISOString());
    if (problem) throw new Error(`the certificate ${problem}`);
    const federationAddress = opts.federationAddress === undefined ? undefined : checkedAddress(opts.federationAddress, '--federation-address');
    change = { action: 'addMember', member: opts.add, certificate, signingKey, ...(federationAddress !== undefined && { federationAddress }) };
  } else if (opts.revoke !== undefined) {
    change = { action: 'revokeMember', member: opts.revoke };
  } else {
    change = { action: 'setFederationAddress', member: opts.setFederationAddress!, address: checkedAddress(opts.address!, '--address') };
  }
  const proposal: ConfigProposal = { format: 'medblock-config-proposal/v1', channel: consortium.channel, nonce: newNonce(), change, approvals: [] };
  writeFileSync(resolve(opts.out), `${JSON.stringify(proposal, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
  const detail = change.address ?? change.federationAddress;
  process.stdout.write(
    `proposal written to ${opts.out}: ${change.action} ${change.member}${detail ? ` (${detail})` : ''}; collect approvals with \`medblock consortium approve\`\n`,
  );
}

function readProposal(file: string): ConfigProposal {
  const proposal = JSON.parse(readFileSync(file, 'utf8')) as ConfigProposal;
  if (proposal?.format !== 'medblock-config-proposal/v1') throw new Error(`${file} is not a config proposal`);
  return proposal;
}

export async function runConsortiumApprove(config: GatewayConfig, file: string): Promise<void> {
  const consortium = await loadConsortium(config);
  const proposal = readProposal(file);
  if (proposal.channel !== consortium.channel) throw new Error(`the proposal is for channel ${proposal.channel}, not ${consortium.channel}`);
  const me = consortium.self.memberId;
  if (proposal.approvals.some((a) => a.member === me)) throw new Error(`${me} already approved this proposal`);
  proposal.approvals.push(approveConfigChange(consortium.self, proposal.channel, proposal.nonce, proposal.change));
  writeFileSync(file, `${JSON.stringify(proposal, null, 2)}\n`);
  process.stdout.write(`${me} approved: ${proposal.approvals.length} approval(s) (${proposal.approvals.map((a) => a.member).join(', ')})\n`);
}

/** Orders the config envelope; with the solo orderer, run it while the gateway is stopped (the log is then read at start). */
export async function runConsortiumSubmit(config: GatewayConfig, file: string): Promise<void> {
  const consortium = await loadConsortium(config);
  const proposal = readProposal(file);
  const envelope = createEnvelope(consortium.self, {
    channel: proposal.channel, type: 'config', nonce: proposal.nonce, payload: { ...proposal.change, approvals: proposal.approvals },
  });
  const orderer = await openOrderer(config, consortium.channel);
  try {
    const [offset] = await orderer.append([encodeChannelMessage({ kind: 'envelope', bytes: encodeEnvelope(envelope) })]);
    process.stdout.write(
      `submitted to the ${orderer.kind} orderer at offset ${offset}; every member validates the approvals (quorum of active members) ` +
        'and applies the change from the block after the one that commits it\n',
    );
  } finally {
    await orderer.close();
  }
}
