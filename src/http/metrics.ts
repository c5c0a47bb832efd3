/** Prometheus metrics. Labels are interaction names and status codes only: never ids, values or PHI. */
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

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

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'medblock_' });
  }
}
