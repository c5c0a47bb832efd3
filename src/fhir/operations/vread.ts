import type { Handler } from '../context.ts';
import { unknownVersion } from '../repository.ts';
import { assertAnchorIntact, assertVersionAccessible, requireAccess, versionHeaders } from './common.ts';

/** GET [base]/[type]/[id]/_history/[vid] */
export const vread: Handler = async (req, ctx, { type, id, vid }) => {
  const access = requireAccess(req, type, 'r');
  const v = await ctx.repo.vread(type, id, vid);
  assertVersionAccessible(access, v, unknownVersion);
  await assertAnchorIntact(v, ctx);
  return { status: 200, headers: versionHeaders(v, ctx), body: v.json };
};
