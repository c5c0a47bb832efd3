/** Prometheus metrics. Labels are interaction names and status codes only: never ids, values or PHI. */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { LedgerStatus } from '../ledger/member.ts';

export class Metrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'medblock_http_requests_total',
    help: 'FHIR requests by interaction and status',
    labelNames: ['interaction', 'status'] as const,
    registers: [this.registry],
  });
  readonly duration = new Histogram({
    name: 'medblock_http_request_duration_seconds',
    help: 'FHIR request latency by interaction',
    labelNames: ['interaction'] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  /**
   * Break-the-glass accesses: a compliance alert. `holder`: this gateway disclosed over a Consent deny (a
   * local request counts here too); `requester`: one of its users broke the glass at another member.
   */
  readonly breakGlass = new Counter({
    name: 'medblock_break_glass_total',
    help: 'Accesses that broke the glass (purpose ETREAT with a reason) over a consent deny, by side',
    labelNames: ['side'] as const,
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'medblock_' });
  }

  /** Ledger gauges, read from the member at scrape time (block numbers and counts only). */
  observeLedger(status: () => LedgerStatus, counters: () => { published: number; anchored: number; inFlight: number }): void {
    const gauge = (name: string, help: string, value: () => number) =>
      new Gauge({ name, help, registers: [this.registry], collect() { this.set(value()); } });
    gauge('medblock_ledger_height', 'Highest block this member committed (-1 before block 0)', () => status().height);
    gauge('medblock_ledger_final_height', 'Highest block attested by a quorum (-1 before the first)', () => status().finalHeight);
    gauge('medblock_ledger_divergences', 'Blocks on which attestations disagree; anything above 0 is an alarm and stops anchoring', () => status().divergences.length);
    gauge('medblock_ledger_catching_up', '1 while the member replays the ordered log after a start', () => (status().catchingUp ? 1 : 0));
    gauge('medblock_ledger_active_member', '1 while this gateway is an active member of its channel (0: joining, or revoked)', () => (status().activeMember ? 1 : 0));
    gauge('medblock_ledger_failed', '1 when the ledger member stopped on a store or orderer failure', () => (status().failure ? 1 : 0));
    gauge('medblock_anchor_published_total', 'Resource versions this gateway submitted for anchoring', () => counters().published);
    gauge('medblock_anchor_anchored_total', 'Resource versions marked anchored in the vault', () => counters().anchored);
    gauge('medblock_anchor_in_flight', 'Digests ordered and not yet committed in a block', () => counters().inFlight);
  }
}
