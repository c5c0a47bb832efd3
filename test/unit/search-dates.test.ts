import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  ancestors, cover, dateInterval, datePrefixMatches, DATE_PREFIXES, intervalQuery, intervalTerms, prefixInterval, utcMs, valueInterval,
  type Interval,
} from '../../src/fhir/search/dates.ts';

const DAY = 86_400_000;

/** A small deterministic PRNG, so a failure can be replayed. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function randomInterval(r: () => number): Interval {
  const kind = r();
  const year = 1900 + Math.floor(r() * 250);
  const start = utcMs(year, Math.floor(r() * 12), 1 + Math.floor(r() * 28)) + Math.floor(r() * DAY);
  const lengths = [1, 1000, 60_000, DAY, 40 * DAY, 400 * DAY, 4000 * DAY, 40000 * DAY];
  const end = start + 1 + Math.floor(r() * lengths[Math.floor(r() * lengths.length)]);
  if (kind < 0.1) return { start, end: Infinity };
  if (kind < 0.2) return { start: -Infinity, end };
  if (kind < 0.22) return { start: -Infinity, end: Infinity };
  return { start, end };
}

const intersects = (a: Interval, b: Interval) => a.start < b.end && b.start < a.end;

describe('date bucket tree', () => {
  it('covers an interval with the minimal aligned nodes and names them by level', () => {
    assert.deepEqual(cover(dateInterval('2012-03-05')!), ['2012-03-05']);
    assert.deepEqual(cover(dateInterval('2012-03')!), ['2012-03']);
    assert.deepEqual(cover(dateInterval('2012')!), ['2012']);
    assert.deepEqual(cover({ start: utcMs(2010, 0, 1), end: utcMs(2020, 0, 1) }), ['201x']);
    assert.deepEqual(cover({ start: utcMs(2000, 0, 1), end: utcMs(2100, 0, 1) }), ['20xx']);
    assert.deepEqual(cover({ start: utcMs(2011, 11, 30), end: utcMs(2012, 2, 2) }), ['2011-12-30', '2011-12-31', '2012-01', '2012-02', '2012-03-01']);
    assert.deepEqual(cover(dateInterval('2012-03-05T10:00:00Z')!), ['2012-03-05']);
    assert.deepEqual(ancestors('2012-03-05'), ['2012-03', '2012', '201x', '20xx']);
    assert.deepEqual(ancestors('201x'), ['20xx']);
    assert.deepEqual(ancestors('20xx'), []);
    assert.deepEqual(cover({ start: 5, end: 5 }), []);
    assert.equal(cover({ start: -Infinity, end: Infinity }).length, 100);
  });

  it('indexes a point with 5 terms and an open period with 5 or 1', () => {
    const terms = (i: Interval) => {
      const out = new Set<string>();
      intervalTerms(i, out);
      return [...out].sort();
    };
    assert.deepEqual(terms(dateInterval('2012-03-05T10:00:00Z')!), ['a:2012', 'a:2012-03', 'a:201x', 'a:20xx', 'c:2012-03-05']);
    assert.deepEqual(terms({ start: utcMs(2012, 2, 5), end: Infinity }), ['ra:2012', 'ra:2012-03', 'ra:201x', 'ra:20xx', 'rc:2012-03-05']);
    assert.deepEqual(terms({ start: -Infinity, end: utcMs(2012, 2, 5) }), ['la:2012', 'la:2012-03', 'la:201x', 'la:20xx', 'lc:2012-03-04']);
    assert.deepEqual(terms({ start: -Infinity, end: Infinity }), ['all']);
    // A long closed interval is coarsened, never more than a handful of cover nodes.
    const long = terms({ start: utcMs(2010, 2, 5), end: utcMs(2015, 6, 20) });
    assert.ok(long.filter((t) => t.startsWith('c:')).length <= 8, long.join());
  });

  it('is sound: every value interval that intersects a query interval is selected (randomized)', () => {
    const r = rng(20240605);
    let intersecting = 0;
    let selectedDisjoint = 0;
    for (let n = 0; n < 4000; n++) {
      const v = randomInterval(r);
      const q = randomInterval(r);
      const terms = new Set<string>();
      intervalTerms(v, terms);
      const selected = intervalQuery(q).some((t) => terms.has(t));
      if (intersects(v, q)) {
        intersecting++;
        assert.ok(selected, `value ${JSON.stringify(v)} meets query ${JSON.stringify(q)} but is not selected`);
      } else if (selected) selectedDisjoint++;
    }
    assert.ok(intersecting > 1000, `${intersecting}`);
    // Not a requirement, but the pre-selection should mostly be exact (false positives come from day rounding and coarsening).
    assert.ok(selectedDisjoint < 1000, `${selectedDisjoint} false positives`);
  });

  it('is sound for every prefix: a value matching the prefix intersects the prefix interval (randomized)', () => {
    const r = rng(7);
    for (let n = 0; n < 4000; n++) {
      const v = randomInterval(r);
      const s = randomInterval(r);
      if (!Number.isFinite(s.start) || !Number.isFinite(s.end)) continue;
      for (const p of DATE_PREFIXES) {
        if (!datePrefixMatches(p, v, s)) continue;
        assert.ok(intersects(v, prefixInterval(p, s)), `${p} ${JSON.stringify(v)} ${JSON.stringify(s)}`);
        const terms = new Set<string>();
        intervalTerms(v, terms);
        assert.ok(intervalQuery(prefixInterval(p, s)).some((t) => terms.has(t)), `${p} not selected`);
      }
    }
  });

  it('applies the R4 prefix semantics to ranges', () => {
    const s = dateInterval('2013-01-14')!;
    const day = (d: string) => dateInterval(d)!;
    assert.ok(datePrefixMatches('eq', day('2013-01-14T10:00:00Z'), s));
    assert.ok(!datePrefixMatches('eq', day('2013-01'), s), 'a month is not contained in a day');
    assert.ok(datePrefixMatches('gt', day('2013-01'), s), 'the month reaches above the day');
    assert.ok(datePrefixMatches('lt', day('2013-01'), s));
    assert.ok(!datePrefixMatches('gt', day('2013-01-14T23:59:59Z'), s));
    assert.ok(datePrefixMatches('ge', day('2013-01-14T23:59:59Z'), s));
    assert.ok(datePrefixMatches('le', day('2013-01-14'), s));
    assert.ok(datePrefixMatches('sa', day('2013-01-15'), s));
    assert.ok(!datePrefixMatches('sa', day('2013-01'), s));
    assert.ok(datePrefixMatches('eb', day('2013-01-13'), s));
    assert.ok(!datePrefixMatches('eb', day('2013-01-14'), s));
    const open = valueInterval({ start: '2013-01-10' }, 'Period')!;
    assert.equal(open.end, Infinity);
    assert.ok(datePrefixMatches('gt', open, s) && !datePrefixMatches('eq', open, s));
  });

  it('parses dates at every precision, with time zones and years before 100', () => {
    assert.equal(dateInterval('0050')!.start, utcMs(50, 0, 1));
    assert.equal(new Date(dateInterval('2024-01-01T10:00+02:00')!.start).toISOString(), '2024-01-01T08:00:00.000Z');
    assert.equal(dateInterval('2023-02-29'), undefined);
    const timing = valueInterval({ event: ['2020-01-05', '2020-03-01T10:00:00Z'] }, 'Timing')!;
    assert.equal(timing.start, utcMs(2020, 0, 5));
    assert.equal(timing.end, utcMs(2020, 2, 1) + 10 * 3_600_000 + 1000);
  });
});
