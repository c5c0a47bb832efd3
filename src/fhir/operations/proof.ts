/**
 * Ledger proofs over FHIR (formats in docs/proofs.md; no PHI in any of them: commitments, headers,
 * signatures and public certificates only, plus the version's commitment salt, which opens the commitment
 * to whoever also holds the resource and is given only to a caller who may read it):
 *
 *   GET [base]/[type]/[id]/_history/[vid]/$proof   the version's resource proof
 *   GET [base]/$checkpoint                          the latest checkpoint and the consortium's public material
 *   GET [base]/$consistency?from=[block]            the chain from that block up to the latest checkpoint
 *
 * $proof needs read access to the resource (the proof names its type and id); the other two only a valid
 * token. A version not yet anchored, or anchored in a block not yet final, answers 409 with Retry-After.
 */
import type { FhirResponse, Handler } from '../context.ts';
import { errors, FhirError } from '../outcome.ts';
import { anchoredDigest } from '../../ledger/anchor-publisher.ts';
import type { LedgerService, ProofResult } from '../../ledger/service.ts';
import { requireAccess, supportedParams } from './common.ts';
import { vreadAccessible } from './authorization.ts';

function ledgerOf(ledger: LedgerService | undefined): LedgerService {
  if (!ledger) throw errors.notSupported('this gateway runs without a ledger');
  return ledger;
}

function notYet(reason: string): FhirError {
  return new FhirError(409, [{ severity: 'error', code: 'conflict', diagnostics: `${reason}; retry shortly` }], { 'Retry-After': '1' });
}

function proofResponse<T>(result: ProofResult<T>): FhirResponse {
  if (!result.ok) throw notYet(result.reason);
  return { status: 200, contentType: 'application/json', body: result.proof as object };
}

export const proof: Handler = async (req, ctx, { type, id, vid }) => {
  supportedParams(req, [], '$proof');
  const ledger = ledgerOf(ctx.ledger);
  const access = requireAccess(req, type, 'r');
  const v = await vreadAccessible(ctx, access, type, id, vid);
  if (!v.anchor) throw notYet(`this ${type} version is not anchored yet`);
  const digest = anchoredDigest({ ...v, digest: v.digest ?? null });
  const salt = v.salt && Buffer.from(v.salt).toString('hex');
  return proofResponse(await ledger.resourceProof({ type, id, versionId: v.versionId, digest, ...(salt && { salt }) }, v.anchor));
};

export const checkpoint: Handler = async (req, ctx) => {
  supportedParams(req, [], '$checkpoint');
  const ledger = ledgerOf(ctx.ledger);
  const latest = await ledger.checkpoint();
  if (!latest) throw notYet('no block is final yet');
  return { status: 200, contentType: 'application/json', body: { checkpoint: latest, consortium: await ledger.consortium(latest.header.number) } };
};

export const consistency: Handler = async (req, ctx) => {
  const ledger = ledgerOf(ctx.ledger);
  const from = supportedParams(req, ['from'], '$consistency').find(([k]) => k === 'from')?.[1];
  if (from === undefined || !/^(0|[1-9]\d{0,15})$/.test(from)) throw errors.badRequest('from must be a block number');
  return proofResponse(await ledger.consistencyProof(Number(from)));
};
