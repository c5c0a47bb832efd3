/**
 * The caller's side of the federated record (docs/federation.md, "The federated record"): link tokens of
 * the patient → the holders the caller's own ledger names → every holder asked in parallel, each within
 * MEDBLOCK_FEDERATION_TIMEOUT_MS → each entry verified against the caller's ledger (remote-check.ts) →
 * one merged Bundle (merge.ts), kept for paging (snapshots.ts). A holder that is down, slow, refusing or
 * sending nonsense costs its part of the record and a line in the OperationOutcome, never the request.
 */
import type { KeyObject } from 'node:crypto';
import { linkToken, normalizeSystem, patientLinkTokens, UnlinkableIdentifierError } from './link-token.ts';
import { checkRemoteEntries, MalformedHolderPageError, readHolderPage, type CheckResult } from './remote-check.ts';
import { mergeRecord, type HolderReport, type LocalEntry, type MergedRecord } from './merge.ts';
import { RecordSnapshots } from './snapshots.ts';
import { federationBase } from './routes.ts';
import type { FederationAccessLogPort, HolderClientPort, LedgerIndexPort, LinkedPatientsPort, Requester } from './ports.ts';
import { errors, type OutcomeIssue } from '../fhir/outcome.ts';
import { MEMBER_SYSTEM } from '../access/consent.ts';

export const DEFAULT_FEDERATION_TIMEOUT_MS = 5000;
/** Entries asked of a holder per page, and the most the caller takes from one holder. */
export const HOLDER_PAGE_SIZE = 1000;
export const MAX_ENTRIES_PER_HOLDER = 20_000;
export const HOLDER_EVERYTHING_PATH = 'Patient/$everything';

export interface FederatedRecordDeps {
  /** This member's id: never asked, its part is the local record. */
  self: string;
  /** The consortium's link-token key and linking identifier systems (consortium.json federation). */
  linkKey: KeyObject | Uint8Array;
  linkSystems: readonly string[];
  ledger: LedgerIndexPort;
  client: HolderClientPort;
  linkedPatients: LinkedPatientsPort;
  accessLog?: FederationAccessLogPort;
  timeoutMs?: number;
  maxEntriesPerHolder?: number;
  snapshots?: RecordSnapshots;
  now?: () => Date;
}

export type FederatedTarget =
  | { kind: 'patient'; patientId: string; /** The local Patient's current version (parsed). */ patient: unknown }
  | { kind: 'identifier'; system: string; value: string };

export interface FederatedEverythingRequest {
  target: FederatedTarget;
  requester: Requester;
  /** The caller's FHIR base. */
  baseUrl: string;
  /** The local record of these Patients, as the user may see it (same checks as local $everything). */
  readLocal(patientIds: string[]): Promise<LocalEntry[]>;
  /** Whether the user may read this type: remote entries of other types are left out. */
  canRead(type: string): boolean;
}

export interface FederatedResult {
  record: MergedRecord;
  /** The local Patient ids the record holds. */
  localPatients: string[];
}

/** The port the FHIR layer calls (FhirContext.federation). */
export interface FederatedRecordPort {
  everything(request: FederatedEverythingRequest): Promise<FederatedResult>;
  /** Keeps a record for paging; returns its cursor id. */
  keep(binding: string, record: MergedRecord): string;
  /** A kept record, if `binding` is the one it was kept for and it has not expired. */
  kept(id: string, binding: string): MergedRecord | undefined;
}

/** Which link tokens a holder is asked under, and its patient locators for each. */
type Holders = Map<string, Map<string, Set<string>>>;

export class FederatedRecord implements FederatedRecordPort {
  private readonly timeoutMs: number;
  private readonly snapshots: RecordSnapshots;

  constructor(private readonly deps: FederatedRecordDeps) {
    this.timeoutMs = deps.timeoutMs ?? DEFAULT_FEDERATION_TIMEOUT_MS;
    this.snapshots = deps.snapshots ?? new RecordSnapshots();
  }

  keep(binding: string, record: MergedRecord): string {
    return this.snapshots.put(binding, record);
  }

  kept(id: string, binding: string): MergedRecord | undefined {
    return this.snapshots.get(id, binding);
  }

  /** The link tokens of the target: a Patient's, or the one of an identifier (400 when it cannot link). */
  private tokensOf(target: FederatedTarget): string[] {
    if (target.kind === 'patient') return patientLinkTokens(this.deps.linkKey, target.patient, this.deps.linkSystems);
    try {
      if (!this.deps.linkSystems.includes(normalizeSystem(target.system))) {
        throw errors.badRequest('identifier: the system is not one this consortium links patients by');
      }
      return [linkToken(this.deps.linkKey, target.system, target.value)];
    } catch (e) {
      if (e instanceof UnlinkableIdentifierError) throw errors.badRequest(`identifier: ${e.message}`);
      throw e;
    }
  }

  async everything(request: FederatedEverythingRequest): Promise<FederatedResult> {
    const recorded = (this.deps.now?.() ?? new Date()).toISOString();
    const tokens = this.tokensOf(request.target);
    const localPatients =
      request.target.kind === 'patient'
        ? [request.target.patientId]
        : [...new Set((await Promise.all(tokens.map((t) => this.deps.linkedPatients.patientsWithLinkToken(t)))).flat())].sort();
    const notes: OutcomeIssue[] = [];
    const holders = await this.holdersOf(tokens);
    if (tokens.length === 0) {
      notes.push({
        severity: 'information',
        code: 'informational',
        diagnostics: 'the patient carries no identifier in a system this consortium links patients by: the record holds this gateway\'s part only',
      });
    } else if (holders.size === 0) {
      notes.push({ severity: 'information', code: 'informational', diagnostics: 'no other member holds records linked to this patient' });
    }
    const [local, reports] = await Promise.all([
      localPatients.length ? request.readLocal(localPatients) : Promise.resolve([]),
      Promise.all([...holders].map(([member, byToken]) => this.askHolder(member, byToken, request))),
    ]);
    await this.deps.accessLog?.recordFederatedRequest({
      user: request.requester.sub,
      purpose: request.requester.pou,
      breakTheGlass: request.requester.btg !== undefined,
      holders: reports.map((r) => ({ member: r.member, result: r.result })),
    }).catch(() => {
      throw errors.accessLogUnavailable();
    });
    const record = mergeRecord({ baseUrl: request.baseUrl, local, localPatients, holders: reports, notes, recorded });
    return { record, localPatients };
  }

  /** Other members listing any of the tokens, with their patient locators per token (sorted by member). */
  private async holdersOf(tokens: string[]): Promise<Holders> {
    const holders: Holders = new Map();
    const lists = await Promise.all(tokens.map((t) => this.deps.ledger.holdersOfLink(t)));
    tokens.forEach((token, i) => {
      for (const { hospital, locator } of lists[i]) {
        if (hospital === this.deps.self) continue;
        const byToken = holders.get(hospital) ?? holders.set(hospital, new Map()).get(hospital)!;
        (byToken.get(token) ?? byToken.set(token, new Set()).get(token)!).add(locator);
      }
    });
    return new Map([...holders].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  }

  /**
   * One holder's part, within the timeout (all its pages together): refused, unreachable, malformed and
   * timed-out holders give an empty part and say so. A client that ignores the abort still loses the race.
   */
  private async askHolder(member: string, byToken: Map<string, Set<string>>, request: FederatedEverythingRequest): Promise<HolderReport> {
    const address = this.deps.client.addressOf(member);
    const report: HolderReport = {
      member,
      base: address ? federationBase(address) : `${MEMBER_SYSTEM}:${member}`,
      result: 'ok',
      accepted: [],
      rejected: {},
      notYetAnchored: 0,
    };
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => {
        controller.abort();
        resolve('timeout');
      }, this.timeoutMs);
    });
    try {
      const outcome = await Promise.race([this.fetchHolder(member, byToken, request, controller.signal, report), timedOut]);
      if (outcome === 'timeout') return { ...report, result: 'timeout', timeoutMs: this.timeoutMs, accepted: [], rejected: {}, notYetAnchored: 0 };
      return report;
    } catch (e) {
      if (controller.signal.aborted) return { ...report, result: 'timeout', timeoutMs: this.timeoutMs, accepted: [], rejected: {}, notYetAnchored: 0 };
      const result = e instanceof MalformedHolderPageError ? 'malformed' : e instanceof HolderRefusal ? 'refused' : 'unreachable';
      return { ...report, result, status: e instanceof HolderRefusal ? e.status : undefined, accepted: [], rejected: {}, notYetAnchored: 0 };
    } finally {
      clearTimeout(timer);
      controller.abort();
    }
  }

  /** Every page of the holder under each token, verified page by page; fills `report`. */
  private async fetchHolder(
    member: string,
    byToken: Map<string, Set<string>>,
    request: FederatedEverythingRequest,
    signal: AbortSignal,
    report: HolderReport,
  ): Promise<'done'> {
    const max = this.deps.maxEntriesPerHolder ?? MAX_ENTRIES_PER_HOLDER;
    let received = 0;
    for (const [token, locators] of byToken) {
      let cursor: string | undefined;
      do {
        const query: Array<[string, string]> = [['_count', String(Math.min(HOLDER_PAGE_SIZE, max - received))]];
        if (cursor) query.push(['_cursor', cursor]);
        const response = await this.deps.client.request(member, HOLDER_EVERYTHING_PATH, query, { ...request.requester, link: token }, { timeoutMs: this.timeoutMs, signal });
        if (signal.aborted) return 'done';
        if (response.status !== 200) throw new HolderRefusal(response.status);
        const page = readHolderPage(response.text);
        received += page.candidates.length;
        const commitments = page.candidates.flatMap((c) => (c.ok ? [c.commitment] : []));
        const facts = commitments.length ? await this.deps.ledger.anchorFacts(commitments) : new Map();
        const checked = checkRemoteEntries(member, locators, page.candidates, facts);
        report.accepted.push(...checked.accepted.filter((e) => request.canRead(e.type)));
        addCounts(report.rejected, checked.rejected);
        report.notYetAnchored += page.notYetAnchored;
        cursor = page.nextCursor;
        if (cursor && received >= max) {
          report.truncatedAt = max;
          cursor = undefined;
        }
      } while (cursor);
    }
    return 'done';
  }
}

/** A holder answered with another status than 200. */
class HolderRefusal extends Error {
  constructor(readonly status: number) {
    super(`the holder answered HTTP ${status}`);
    this.name = 'HolderRefusal';
  }
}

function addCounts(into: CheckResult['rejected'], from: CheckResult['rejected']): void {
  for (const [reason, n] of Object.entries(from) as Array<[keyof CheckResult['rejected'], number]>) into[reason] = (into[reason] ?? 0) + n;
}

