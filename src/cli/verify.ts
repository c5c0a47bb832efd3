/**
 * `medblock verify`: checks, and exits 1 with a report on any mismatch:
 *
 * - (default) this gateway's whole ledger (ledger/verify.ts) and every vault record against its anchor:
 *   each version is decrypted with the hospital's keys, its commitment recomputed (content + sealed salt) and
 *   compared with the vault's and with the one the ledger holds at the version's anchor location; every one
 *   this member anchored must still have its version in the vault (a deleted record is caught). Access-log
 *   records (AuditEvent) are vault records too, anchored in audit envelopes, so the same check covers them;
 *   and every resource's current state (verify-heads.ts): pointer at the newest version, head MAC, deleted
 *   flag, and index terms recomputed from the content;
 * - `--proof <file>`: a resource proof, offline, against the pinned `--consortium` (or
 *   `--consortium-fingerprint`) and `--ca` (and `--resource` to recompute the commitment with the proof's salt);
 * - `--consistency <file>`: a consistency proof, offline, likewise pinned, optionally against `--old-checkpoint`.
 */
import { readFileSync } from 'node:fs';
import type { GatewayConfig } from '../config.ts';
import { loadConsortium, openLedgerStore, openVault } from '../gateway.ts';
import { parseFhirJson } from '../fhir/json.ts';
import { genesisMembership, memberCertificateCheck } from '../identity/consortium-dir.ts';
import { versionCommitmentHex } from '../ledger/canonical-json.ts';
import { verifyConsistencyProof, verifyResourceCommitment, verifyResourceProof, type ProofOptions, type ProofReport } from '../ledger/proof.ts';
import { tombstoneDigest } from '../ledger/tombstone.ts';
import { anchorKey, verifyLedger, type VerificationProblem } from '../ledger/verify.ts';
import { HeadCheck } from './verify-heads.ts';
import type { StoredVersion } from '../vault/store.ts';
import { ErasureCheck } from '../audit/erasure.ts';

export interface VerifyOptions {
  proof?: string;
  consistency?: string;
  oldCheckpoint?: string;
  ca?: string;
  consortium?: string;
  consortiumFingerprint?: string;
  resource?: string;
  json?: boolean;
}

const out = (line: string) => process.stdout.write(`${line}\n`);

function readJson(path: string, what: string): any {
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`cannot read ${what} ${path}: ${(e as Error).message}`);
  }
}

function printReport(title: string, report: ProofReport, json: boolean): number {
  if (json) out(JSON.stringify({ ok: report.problems.length === 0, ...report }, null, 2));
  else {
    for (const warning of report.warnings) out(`warning: ${warning}`);
    for (const p of report.problems) out(`FAIL ${p.path || '/'}: ${p.problem}`);
    out(report.problems.length === 0 ? `OK: ${title} verifies` : `${title}: ${report.problems.length} problem(s)`);
  }
  return report.problems.length === 0 ? 0 : 1;
}

export async function runVerify(config: GatewayConfig, options: VerifyOptions): Promise<number> {
  const trust: ProofOptions = {
    trustedCaCertificate: options.ca ? readFileSync(options.ca, 'utf8') : undefined,
    consortium: options.consortium ? readFileSync(options.consortium) : undefined,
    consortiumFingerprint: options.consortiumFingerprint,
  };
  if (options.proof) {
    const proof = readJson(options.proof, 'proof');
    const report = verifyResourceProof(proof, trust);
    if (options.resource) {
      report.problems.push(...verifyResourceCommitment(proof?.resource, parseFhirJson(readFileSync(options.resource, 'utf8'))));
    } else {
      report.warnings.push('no --resource given: the proof shows the commitment was anchored; the type, id and version it names are bound to it only through the version\'s JSON');
    }
    return printReport('resource proof', report, options.json === true);
  }
  if (options.consistency) {
    // A $checkpoint answer, a checkpoint or a bare header; a file holding none of them is a problem, never a skipped check.
    const kept = options.oldCheckpoint ? readJson(options.oldCheckpoint, 'checkpoint') : undefined;
    const oldHeader = kept?.checkpoint?.header ?? kept?.header ?? (kept && typeof kept === 'object' && 'previousHash' in kept ? kept : undefined);
    const report = verifyConsistencyProof(readJson(options.consistency, 'consistency proof'), { ...trust, oldHeader });
    if (options.oldCheckpoint && oldHeader === undefined) {
      report.problems.push({ path: '/from', problem: `${options.oldCheckpoint} holds no block header (a $checkpoint answer, a checkpoint or a header): nothing to compare with` });
    }
    return printReport('consistency proof', report, options.json === true);
  }
  return verifyGateway(config, options.json === true);
}

async function verifyGateway(config: GatewayConfig, json: boolean): Promise<number> {
  const consortium = await loadConsortium(config);
  const ledgerStore = openLedgerStore(config);
  const vault = openVault(config, () => consortium);
  await ledgerStore.init();
  await vault.init();
  try {
    const ledger = await verifyLedger(ledgerStore, {
      channel: consortium.channel,
      memberId: consortium.self.memberId,
      genesis: genesisMembership(consortium),
      quorum: consortium.quorum,
      maxEnvelopeBytes: consortium.ledger.maxEnvelopeBytes,
      maxClockSkewMs: consortium.ledger.maxClockSkewMs,
      checkMemberCertificate: memberCertificateCheck(consortium.caCertificatePem),
    });
    const problems: VerificationProblem[] = [...ledger.problems];
    const seenAnchors = new Set<string>();
    const vaultDigests = new Set<string>();
    const counts = { versions: 0, anchored: 0, pending: 0, erased: 0 };
    const erasures = new ErasureCheck();
    const heads = new HeadCheck();
    // Raw rows first (no decryption), then each version opened on its own, so one bad record is one problem.
    for (let beforeSeq: number | undefined; ; ) {
      const page = await vault.inner.history({ beforeSeq, limit: 1000 });
      if (page.length === 0) break;
      beforeSeq = page[page.length - 1].seq;
      for (const row of page) {
        counts.versions++;
        heads.note(row);
        const where = `${row.type}/${row.id} v${row.versionId}`;
        if (row.anchor) seenAnchors.add(anchorKey(row.anchor.blockNumber, row.anchor.envelopeIndex, row.anchor.entryIndex));
        let version: StoredVersion;
        try {
          version = await vault.unseal(row);
        } catch (e) {
          problems.push({ where, problem: `cannot be opened: ${(e as Error).message}` });
          continue;
        }
        if (version.erased) {
          counts.erased++;
          erasures.erased(version, where);
          continue;
        }
        // A version that is neither deleted nor erased must have content: a blanked record is a problem, not a crash.
        if (!version.deleted && (!version.content || !version.salt)) {
          problems.push({ where, problem: 'has no content or salt, yet is neither deleted nor erased: the record was blanked' });
          continue;
        }
        let digest: string;
        try {
          digest = version.deleted
            ? tombstoneDigest(version.type, version.id, version.versionId, version.lastUpdated)
            : versionCommitmentHex(version.salt!, parseFhirJson(Buffer.from(version.content!).toString('utf8')));
        } catch {
          // The error text is not printed: it could quote the record's content.
          problems.push({ where, problem: 'its content is not a JSON document with a canonical form' });
          continue;
        }
        vaultDigests.add(digest);
        if (!version.deleted && version.digest !== digest) problems.push({ where, problem: 'its content and salt do not give the commitment the vault records' });
        if (!version.anchor) {
          counts.pending++;
          continue;
        }
        counts.anchored++;
        const anchored = ledger.anchoredByMember.get(anchorKey(version.anchor.blockNumber, version.anchor.envelopeIndex, version.anchor.entryIndex));
        if (!anchored) problems.push({ where, problem: `its anchor (block ${version.anchor.blockNumber}) holds no digest of this member` });
        else if (anchored.digest !== digest) problems.push({ where, problem: `differs from what was anchored in block ${anchored.blockNumber}: altered after anchoring` });
        else {
          erasures.anchored(version);
          heads.note(version, true);
        }
      }
    }
    problems.push(...erasures.problems());
    problems.push(...(await heads.problems(vault)));
    for (const [key, entry] of ledger.anchoredByMember) {
      if (!seenAnchors.has(key) && !vaultDigests.has(entry.digest)) {
        problems.push({ where: `block ${entry.blockNumber} envelope ${entry.envelopeIndex} entry ${entry.entryIndex}`, problem: `this member anchored a ${entry.kind === 'audit' ? 'access-log record' : 'version'} the vault no longer holds` });
      }
    }
    const summary = {
      ok: problems.length === 0,
      channel: consortium.channel,
      member: consortium.self.memberId,
      blocks: ledger.blocks,
      envelopes: ledger.envelopes,
      attestations: ledger.attestations,
      checkpointBlock: ledger.checkpointBlock ?? null,
      ...counts,
      problems,
    };
    if (json) out(JSON.stringify(summary, null, 2));
    else {
      for (const p of problems) out(`FAIL ${p.where}: ${p.problem}`);
      out(
        `${problems.length === 0 ? 'OK' : `${problems.length} problem(s)`}: ${ledger.blocks} blocks, ${ledger.envelopes} envelopes, ` +
          `${ledger.attestations} attestations, checkpoint at block ${ledger.checkpointBlock ?? 'none'}; ` +
          `${counts.versions} vault versions (${counts.anchored} anchored, ${counts.pending} pending, ${counts.erased} erased)`,
      );
    }
    return problems.length === 0 ? 0 : 1;
  } finally {
    await vault.close();
    await ledgerStore.close();
  }
}
