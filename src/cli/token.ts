import { existsSync } from 'node:fs';
import { devIssuerKeyFile, loadDevIssuer, mintToken, type DevIssuer } from '../access/tokens.ts';
import type { GatewayConfig } from '../config.ts';

export async function runToken(
  config: GatewayConfig,
  opts: { sub: string; scope: string; patient?: string; expiresIn: string; createKey?: boolean },
): Promise<void> {
  const issuer = opts.createKey ? await loadDevIssuer(config.dataDir) : await gatewayDevIssuer(config);
  const jwt = await mintToken(issuer, { subject: opts.sub, scope: opts.scope, patient: opts.patient, expiresIn: opts.expiresIn });
  process.stdout.write(`${jwt}\n`);
}

/**
 * The dev issuer key a gateway on this data dir created, for minting tokens it accepts. Without one this is
 * an error rather than a new key: no running gateway knows a key created here, so its tokens would all get 401.
 */
export async function gatewayDevIssuer(
  config: GatewayConfig,
  lastResort = 'pass --create-key to create it here for a gateway started later on this data dir',
): Promise<DevIssuer> {
  const keyFile = devIssuerKeyFile(config.dataDir);
  if (!existsSync(keyFile)) {
    throw new Error(
      `MEDBLOCK_DATA_DIR ${config.dataDir} has no gateway key (${keyFile}), so no gateway would accept a token ` +
        'minted now. Set MEDBLOCK_DATA_DIR to the data dir of the gateway, or start the gateway once to create ' +
        `its key, or ${lastResort}`,
    );
  }
  return loadDevIssuer(config.dataDir);
}
