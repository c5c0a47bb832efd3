import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after } from 'node:test';
import { SoloOrderer } from '../../src/adapters/solo/solo-orderer.ts';
import { ordererContract } from './orderer.contract.ts';

const dir = mkdtempSync(join(tmpdir(), 'medblock-solo-'));
after(() => rmSync(dir, { recursive: true, force: true }));
ordererContract('solo', async () => SoloOrderer.open(join(dir, 'orderer', 'channel.sqlite')));
