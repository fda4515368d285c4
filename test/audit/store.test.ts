import { describe, it, expect } from 'vitest';
import { buildTrace, parseSince, parseEventsQuery, parseTracesQuery, subjectFilter, type SpanEvent, type SpanNode } from '../../src/audit/store.js';

const sp = (spanId: string, parentSpanId: string | undefined, startTs: string, streamSeq: number): SpanEvent => ({
  v: 1, id: `id-${spanId}`, seq: streamSeq, launcherId: 'l1', ts: startTs, type: 'tool.span', agentId: 'a', namespace: 'ns',
  traceId: 't', spanId, parentSpanId, tool: 'x', status: 'ok', decision: spanId === 'c' ? 'deny' : 'allow', durationMs: 1, startTs, streamSeq,
});
const shape = (n: SpanNode): unknown => ({ [n.span.spanId]: n.children.map(shape) });

describe('trace assembly', () => {
  it('builds parent/child trees ordered by start, whatever order spans arrive in', () => {
    const t = buildTrace([sp('c', 'b', '2024-01-01T00:00:03Z', 4), sp('a', undefined, '2024-01-01T00:00:00Z', 9), sp('d', 'a', '2024-01-01T00:00:05Z', 1), sp('b', 'a', '2024-01-01T00:00:01Z', 2)]);
    expect(t.roots.map(shape)).toEqual([{ a: [{ b: [{ c: [] }] }, { d: [] }] }]);
    expect(t).toMatchObject({ traceId: 't', startTs: '2024-01-01T00:00:00Z', endTs: '2024-01-01T00:00:05Z', spanCount: 4, violations: 1 });
  });

  it('keeps orphans and hostile parent cycles as roots instead of looping or losing them', () => {
    const t = buildTrace([sp('x', 'y', '2024-01-01T00:00:01Z', 1), sp('y', 'x', '2024-01-01T00:00:02Z', 2), sp('o', 'missing', '2024-01-01T00:00:03Z', 3), sp('s', 's', '2024-01-01T00:00:04Z', 4)]);
    const count = (ns: SpanNode[]): number => ns.reduce((a, n) => a + 1 + count(n.children), 0);
    expect(count(t.roots)).toBe(4);
    expect(t.roots.map((n) => n.span.spanId)).toEqual(expect.arrayContaining(['o', 's']));
  });
});

describe('query parsing (untrusted query strings)', () => {
  const now = Date.parse('2024-07-30T12:00:00Z');
  it('parses since as a duration or ISO time', () => {
    expect(parseSince('10m', now).toISOString()).toBe('2024-07-30T11:50:00.000Z');
    expect(parseSince('2d', now).toISOString()).toBe('2024-07-28T12:00:00.000Z');
    expect(parseSince('2024-07-01T00:00:00Z', now).toISOString()).toBe('2024-07-01T00:00:00.000Z');
    expect(() => parseSince('soon', now)).toThrow(/duration/);
  });

  it('maps filters to subjects and refuses wildcard injection', () => {
    expect(subjectFilter(undefined, 'a1', 'flow')).toBe('lattice.audit.*.a1.flow.>');
    expect(subjectFilter('ns', undefined, 'flow.opened')).toBe('lattice.audit.ns.*.flow.opened');
    expect(subjectFilter()).toBe('lattice.audit.*.*.>');
    expect(parseEventsQuery(new URLSearchParams('agentId=a1&type=dns&since=1h&limit=5&after=7'), now)).toEqual({
      namespace: undefined, agentId: 'a1', type: 'dns', since: new Date(now - 3_600_000), after: 7, limit: 5,
    });
    for (const bad of ['agentId=a.>', 'agentId=*', 'type=flow.*', 'type=bogus', 'namespace=a b', 'limit=-1', 'after=x']) {
      expect(() => parseEventsQuery(new URLSearchParams(bad), now), bad).toThrow();
    }
    expect(parseTracesQuery(new URLSearchParams('traceId=abc-1&agentId=a1'), now)).toMatchObject({ traceId: 'abc-1', agentId: 'a1' });
    expect(() => parseTracesQuery(new URLSearchParams('traceId=a b'), now)).toThrow();
  });
});
