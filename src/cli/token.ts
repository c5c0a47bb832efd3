import { existsSync } from 'node:fs';
import { devIssuerKeyFile, loadDevIssuer, mintToken } from '../access/tokens.ts';
import type { GatewayConfig } from '../config.ts';

export async function runToken(
  config: GatewayConfig,
  opts: { sub: string; scope: string; patient?: string; expiresIn: string; createKey?: boolean },
): Promise<void> {
  const keyFile = devIssuerKeyFile(config.dataDir);
  // A key created here is one no running gateway knows: its tokens would all be refused with a 401.
  if (!opts.createKey && !existsSync(keyFile)) {
    throw new Error(
      `MEDBLOCK_DATA_DIR ${config.dataDir} has no gateway key (${keyFile}), so no gateway would accept a token ` +
        'minted now. Set MEDBLOCK_DATA_DIR to the data dir of the gateway, or start the gateway once to create ' +
        'its key, or pass --create-key to create it here for a gateway started later on this data dir',
    );
  }
  const issuer = await loadDevIssuer(config.dataDir);
  const jwt = await mintToken(issuer, { subject: opts.sub, scope: opts.scope, patient: opts.patient, expiresIn: opts.expiresIn });
  process.stdout.write(`${jwt}\n`);
}
