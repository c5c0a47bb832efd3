/**
 * The blind-index keys, in generations so that the index key can be rotated online (index-rotation.ts).
 *
 * Generation n is the data key `@index.<n>` (random, wrapped under the master key like any data key, so
 * every gateway sharing the database has it). The live generations are those without a tombstone: normally
 * one; two while a rotation runs. Writes blind their terms under the newest live generation, searches OR the
 * tokens of every live generation, and every resource carries a marker term (`_index`) naming the generation
 * its terms were blinded under, so a rotation can find the resources still to re-derive. A resource's terms
 * are always written as one set under one generation, so OR-ing the generations answers exactly.
 *
 * Data key ids (`k-` + token of the owner) are blinded under `@key-ids`, a key that never rotates: the ids are
 * stored with every sealed version, and an index rotation must not move any data key.
 *
 * Gateways re-read the generations before writing or searching when their last look is older than
 * REFRESH_MS (one key lookup per live generation, plus one for the next). A new generation is read at once but
 * written only once it is ACTIVATE_AFTER_MS old: by then every gateway searches it too, so no gateway misses
 * another's fresh writes. The rotation sweep starts after that (index-rotation.ts).
 */
import { BlindIndex } from './blind-index.ts';
import type { DataKeys } from './data-keys.ts';
import type { IndexTerm, ResourceStore } from './store.ts';

export const KEY_ID_KEY_ID = '@key-ids';
export const INDEX_MARKER_PARAM = '_index';
export const REFRESH_MS = 5_000;
export const ACTIVATE_AFTER_MS = 2 * REFRESH_MS;

const indexKeyId = (generation: number): string => `@index.${generation}`;

export interface IndexGeneration {
  generation: number;
  keyId: string;
  /** When the key was created (ms), by the clock of the process that created it. */
  createdAt: number;
  index: BlindIndex;
}

export class IndexKeys {
  private live: IndexGeneration[] = [];
  private checkedAt = 0;
  private loading?: Promise<void>;
  /** BlindIndex objects by key id, so their per-(type, param) subkeys are derived once. */
  private readonly indexes = new Map<string, BlindIndex>();

  constructor(
    private readonly store: ResourceStore,
    private readonly keys: DataKeys,
  ) {}

  /** The generation new terms are blinded under: the newest live one old enough that everyone reads it. */
  get writer(): IndexGeneration {
    const now = Date.now();
    for (let i = this.live.length - 1; i > 0; i--) if (now - this.live[i].createdAt >= ACTIVATE_AFTER_MS) return this.live[i];
    return this.live[0];
  }

  /** Every live generation, oldest first (searches OR their tokens). */
  get readers(): readonly IndexGeneration[] {
    return this.live;
  }

  /** The marker term of a resource of `type` blinded under `generation`. */
  marker(generation: IndexGeneration, type: string): IndexTerm {
    return { param: INDEX_MARKER_PARAM, value: generation.index.token(type, INDEX_MARKER_PARAM, String(generation.generation)) };
  }

  /** Plaintext terms blinded under `generation`, with the marker term (what replaceTerms stores). */
  blind(generation: IndexGeneration, type: string, terms: readonly IndexTerm[]): IndexTerm[] {
    const tokens = generation.index.tokens(type, terms);
    return [...terms.map((t, i) => ({ param: t.param, value: tokens[i] })), this.marker(generation, type)];
  }

  /** Re-reads the generations when the last look is older than REFRESH_MS. */
  async fresh(): Promise<void> {
    if (Date.now() - this.checkedAt < REFRESH_MS) return;
    await this.load();
  }

  /** Reads the live generations from the store; creates generation 1 in a new vault. */
  async load(): Promise<void> {
    this.loading ??= this.read().finally(() => (this.loading = undefined));
    await this.loading;
  }

  private async read(): Promise<void> {
    const startedAt = Date.now();
    // Erased generations never come back, so the scan starts at the oldest one live at the last look.
    let generation = this.live[0]?.generation ?? 1;
    const live: IndexGeneration[] = [];
    for (;; generation++) {
      const entry = await this.store.getKey(indexKeyId(generation));
      if (!entry) break;
      if (entry.erasedAt !== null) {
        this.keys.destroyed(entry.keyId, entry.erasedAt);
        continue;
      }
      live.push({ generation, keyId: entry.keyId, createdAt: Date.parse(entry.createdAt), index: await this.indexOf(entry.keyId) });
    }
    if (live.length === 0) {
      // A new vault: generation 1 is written at once (nobody can have missed it).
      const keyId = indexKeyId(generation);
      await this.keys.forWrite([keyId]);
      live.push({ generation, keyId, createdAt: 0, index: await this.indexOf(keyId) });
    }
    this.live = live;
    this.checkedAt = startedAt;
  }

  private async indexOf(keyId: string): Promise<BlindIndex> {
    let index = this.indexes.get(keyId);
    if (!index) {
      index = new BlindIndex((await this.keys.forWrite([keyId])).get(keyId)!);
      this.indexes.set(keyId, index);
    }
    return index;
  }

  /** The key that blinds data key ids; created once, never rotated. */
  async keyIdIndex(): Promise<BlindIndex> {
    return this.indexOf(KEY_ID_KEY_ID);
  }

  /**
   * Starts a rotation (creates the next generation) or finds the one under way: returns the target
   * generation (the newest) and the older live ones it replaces.
   */
  async beginRotation(): Promise<{ target: IndexGeneration; retiring: IndexGeneration[]; resumed: boolean }> {
    await this.load();
    const resumed = this.live.length > 1;
    if (!resumed) await this.keys.forWrite([indexKeyId(this.live[this.live.length - 1].generation + 1)]);
    await this.load();
    return { target: this.live[this.live.length - 1], retiring: this.live.slice(0, -1), resumed };
  }
}
