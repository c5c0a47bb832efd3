/**
 * The hospital master keys: they wrap every data key and never touch the database. Loaded from
 * `MEDBLOCK_MASTER_KEY` (base64, 32 bytes), or a key file (`MEDBLOCK_MASTER_KEY_FILE`, e.g. a Docker/K8s
 * secret; default `<data dir>/keys/master-keys.json`, created mode 0600 at first start).
 *
 * A key file holds a ring so that rotation can be online and resumable: `current` wraps new data keys,
 * `retiring` keys still unwrap the data keys not re-wrapped yet and are dropped when rotation completes.
 * A file may also hold one bare base64 key (a mounted secret), which then is the only key.
 */
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { KEY_BYTES, newKey } from './seal.ts';

interface RingFile {
  format: 'medblock-master-keys/1';
  current: string;
  retiring: string[];
  keys: Record<string, string>;
}

export class KeyringError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KeyringError';
  }
}

/** A master key's id: a short fingerprint, so the same key always has the same id wherever it comes from. */
export function masterKeyId(key: Uint8Array): string {
  return `mk-${createHash('sha256').update('medblock master key id\0').update(key).digest('hex').slice(0, 16)}`;
}

function decodeKey(base64: string, where: string): Buffer {
  const key = Buffer.from(base64.trim(), 'base64');
  if (key.length !== KEY_BYTES) throw new KeyringError(`${where} must be ${KEY_BYTES} bytes of base64 (got ${key.length} bytes)`);
  return key;
}

export interface KeySource {
  /** The key file the ring lives in (absent when the key comes from the environment). */
  file?: string;
  envKey?: string;
}

export function keySource(dataDir: string, env: NodeJS.ProcessEnv = process.env): KeySource {
  if (env.MEDBLOCK_MASTER_KEY) return { envKey: env.MEDBLOCK_MASTER_KEY };
  return { file: env.MEDBLOCK_MASTER_KEY_FILE || join(dataDir, 'keys', 'master-keys.json') };
}

export class MasterKeyring {
  private keys = new Map<string, Buffer>();
  private currentId = '';
  private retiring: string[] = [];
  private loadedMtime = 0;

  private constructor(private readonly source: KeySource) {}

  /** Loads the ring, creating a key file with one fresh key when none exists yet. */
  static open(source: KeySource): MasterKeyring {
    const ring = new MasterKeyring(source);
    if (source.file && !source.envKey && !existsSync(source.file)) {
      const key = newKey();
      ring.write({ format: 'medblock-master-keys/1', current: masterKeyId(key), retiring: [], keys: { [masterKeyId(key)]: key.toString('base64') } }, true);
    }
    ring.load();
    return ring;
  }

  private load(): void {
    if (this.source.envKey) {
      const key = decodeKey(this.source.envKey, 'MEDBLOCK_MASTER_KEY');
      this.currentId = masterKeyId(key);
      this.keys = new Map([[this.currentId, key]]);
      return;
    }
    const file = this.source.file!;
    const text = readFileSync(file, 'utf8');
    this.loadedMtime = statSync(file).mtimeMs;
    if (!text.trim().startsWith('{')) {
      const key = decodeKey(text, `the master key file ${file}`);
      this.currentId = masterKeyId(key);
      this.keys = new Map([[this.currentId, key]]);
      this.retiring = [];
      return;
    }
    const ring = JSON.parse(text) as RingFile;
    if (ring.format !== 'medblock-master-keys/1' || !ring.keys?.[ring.current]) {
      throw new KeyringError(`${file} is not a MedBlock master key file`);
    }
    const keys = new Map<string, Buffer>();
    for (const [id, b64] of Object.entries(ring.keys)) {
      const key = decodeKey(b64, `key ${id} in ${file}`);
      if (masterKeyId(key) !== id) throw new KeyringError(`key ${id} in ${file} does not match its id`);
      keys.set(id, key);
    }
    this.keys = keys;
    this.currentId = ring.current;
    this.retiring = ring.retiring ?? [];
  }

  /** Re-reads the key file if it changed (a rotation started or finished in another process). */
  refresh(): void {
    if (!this.source.file || this.source.envKey) return;
    if (statSync(this.source.file).mtimeMs !== this.loadedMtime) this.load();
  }

  /** Atomic replace (write + rename), mode 0600 in a 0700 directory. */
  private write(ring: RingFile, exclusive = false): void {
    const file = this.source.file!;
    mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
    if (exclusive) {
      writeFileSync(file, `${JSON.stringify(ring, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
    } else {
      const tmp = `${file}.${process.pid}.tmp`;
      writeFileSync(tmp, `${JSON.stringify(ring, null, 2)}\n`, { mode: 0o600 });
      renameSync(tmp, file);
    }
    chmodSync(file, 0o600);
  }

  get file(): string | undefined {
    return this.source.envKey ? undefined : this.source.file;
  }

  get current(): { id: string; key: Buffer } {
    return { id: this.currentId, key: this.keys.get(this.currentId)! };
  }

  /** Master keys being retired by an unfinished rotation. */
  get retiringIds(): string[] {
    return [...this.retiring];
  }

  key(id: string): Buffer | undefined {
    if (!this.keys.has(id)) this.refresh();
    return this.keys.get(id);
  }

  private requireFileRing(action: string): RingFile {
    if (!this.file) throw new KeyringError(`${action} needs the master key in a key file (MEDBLOCK_MASTER_KEY_FILE), not in MEDBLOCK_MASTER_KEY`);
    this.load();
    const keys: Record<string, string> = {};
    for (const [id, key] of this.keys) keys[id] = key.toString('base64');
    return { format: 'medblock-master-keys/1', current: this.currentId, retiring: this.retiring, keys };
  }

  /**
   * Starts a rotation: a new current key, the previous ones retiring. Idempotent while a rotation is
   * unfinished (resuming does not add another key). `next` lets an operator supply the new key.
   */
  beginRotation(next?: Buffer): { id: string; resumed: boolean } {
    const ring = this.requireFileRing('key rotation');
    if (ring.retiring.length > 0) return { id: ring.current, resumed: true };
    const key = next ?? newKey();
    const id = masterKeyId(key);
    if (ring.keys[id]) throw new KeyringError('the new master key is already in the ring');
    ring.keys[id] = key.toString('base64');
    ring.retiring = Object.keys(ring.keys).filter((k) => k !== id);
    ring.current = id;
    this.write(ring);
    this.load();
    return { id, resumed: false };
  }

  /** Ends a rotation: the retiring keys are deleted from the file. */
  finishRotation(): string[] {
    const ring = this.requireFileRing('key rotation');
    const dropped = ring.retiring;
    for (const id of dropped) delete ring.keys[id];
    ring.retiring = [];
    this.write(ring);
    this.load();
    return dropped;
  }
}
