import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createGateway } from '/work/main/src/gateway.ts';
import { keySource } from '/work/main/src/vault/keyring.ts';
import { routeRequest } from '/work/main/src/fhir/routes.ts';
import { parseScopes } from '/work/main/src/access/scopes.ts';
import { parseFhirJson } from '/work/main/src/fhir/json.ts';
process.env.MEDBLOCK_LOG = 'off';
const dir = '/work/shared/fhir-data/synthea/smart-2019';
const files = readdirSync(dir).filter((f) => !/Information/.test(f)).map((f) => readFileSync(join(dir, f), 'utf8'));
async function run(plain: boolean) {
  const dataDir = mkdtempSync(join(tmpdir(), 'tax-'));
  const g = await createGateway({ host: '127.0.0.1', port: 0, dataDir, maxBodyBytes: 1e8, hospitalId: 'h', masterKey: keySource(dataDir, {}) } as any, { plaintextVaultForBenchmark: plain });
  const ctx: any = { repo: g.repo, baseUrl: 'urn:x' }; ctx.dispatch = (r: any) => routeRequest(r, ctx);
  const auth = { subject: 's', grants: parseScopes('system/*.cruds') };
  const cpu0 = process.cpuUsage(); const t0 = performance.now(); let n = 0;
  for (let round = 0; round < 2; round++) for (const text of files) {
    const body = parseFhirJson(text) as any; n += body.entry.length;
    const r = await routeRequest({ method: 'POST', path: [], query: [], body, auth } as any, ctx);
    if (r.status !== 200) throw new Error('status ' + r.status);
  }
  const ms = performance.now() - t0; const cpu = process.cpuUsage(cpu0);
  await g.close();
  return { plain, n, perSec: Math.round(n / ms * 1000), cpuUsPerRes: Math.round((cpu.user + cpu.system) / n) };
}
console.log(await run(false));
