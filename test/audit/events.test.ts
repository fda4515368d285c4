import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { seededRandom } from '../support/random.js';
import { auditSchemaProblems, assertPublishable } from '../support/audit-schema.js';
import { validateAuditEvent, parseAuditEvent, newEventId, auditSubject, type AuditEvent } from '../../src/audit/events.js';

function without(o: Record<string, unknown>, k: string): Record<string, unknown> {
  const c = { ...o };
  delete c[k];
  return c;
}

const env = { v: 1, id: '0190c1a2-0000-7000-8000-000000000001', seq: 1, launcherId: 'l1', ts: '2024-07-30T10:00:00.000Z' };
const valid: Record<string, unknown>[] = [
  { ...env, type: 'sandbox.created', sandboxId: 'sb1', image: 'busybox' },
  { ...env, type: 'sandbox.started', sandboxId: 'sb1', pid: 42 },
  { ...env, type: 'sandbox.exited', sandboxId: 'sb1', code: -1, signal: 'SIGKILL' },
  { ...env, type: 'sandbox.stopped', sandboxId: 'sb1' },
  { ...env, agentId: 'a1', namespace: 'ns', type: 'flow.opened', flowId: 'f1', proto: 'tcp', srcIp: '10.77.0.2', srcPort: 40000, dstIp: '2001:db8::1', dstPort: 443, direction: 'egress', verdict: 'would-deny', ruleId: 'default-deny' },
  { ...env, type: 'flow.closed', flowId: 'f1', proto: 'udp', srcIp: '10.77.0.2', srcPort: 1, dstIp: '10.77.0.1', dstPort: 53, direction: 'egress', bytesOut: 10, bytesIn: 20, packetsOut: 1, packetsIn: 1, durationMs: 5 },
  { ...env, type: 'dns.answered', name: 'example.com', qtype: 'A', answers: ['93.184.216.34'] },
  { ...env, type: 'dns.refused', name: 'evil.example', qtype: 'AAAA', reason: 'not allowed' },
  { ...env, type: 'policy.applied', policyId: 'p1', policyVersion: 3, mode: 'audit', rules: 4 },
  { ...env, agentId: 'a1', namespace: 'ns', type: 'tool.span', traceId: 't1', spanId: 's1', parentSpanId: 's0', tool: 'list_peers', status: 'ok', decision: 'allow', durationMs: 3 },
  { ...env, type: 'enrollment.enrolled', enrollmentId: 'e1', overlayIp: '10.77.0.2', parentAgentId: 'a0' },
  { ...env, type: 'enrollment.revoked', enrollmentId: 'e1', reason: 'parent revoked' },
  { ...env, type: 'approval.proposed', approvalId: 'ap1', kind: 'policy', by: 'alice', summary: 'open 443' },
  { ...env, type: 'approval.decided', approvalId: 'ap1', kind: 'policy', by: 'bob', decision: 'stale' },
  { ...env, type: 'policy.applied', policyId: 'p1', policyVersion: 1, mode: 'disabled', rules: 0 },
  { ...env, agentId: 'a1', namespace: 'ns', type: 'route.changed', cidr: '10.200.0.0/24', change: 'approved', by: 'alice' },
  { ...env, namespace: 'ns', type: 'policy.set', policyHash: `sha256:${'ab'.repeat(32)}`, rules: 3, by: 'alice' },
  { ...env, namespace: 'ns', type: 'token.created', tokenId: 'tok-1', limit: 2, expiresAt: '2024-07-30T11:00:00Z', by: 'root' },
  { ...env, agentId: 'a1', namespace: 'ns', type: 'labels.changed', labels: ['role=db'], by: 'alice' },
  { ...env, type: 'user.changed', user: 'vera', change: 'added', role: 'viewer', by: 'root' },
];

describe('audit event schema v1', () => {
  it.each(valid.map((e) => [e.type as string, e]))('accepts a valid %s', (_t, e) => {
    expect(validateAuditEvent(e)).toEqual({ ok: true, event: e });
  });

  const span = valid[9];
  const bad: Array<[string, Record<string, unknown> | unknown, string]> = [
    ['not an object', 'x', 'not an object'],
    ['array', [], 'not an object'],
    ['other version', { ...span, v: 2 }, 'unsupported version'],
    ['unknown type', { ...span, type: 'tool.other' }, 'unknown type'],
    ['unknown field', { ...span, extra: 1 }, 'unknown field extra'],
    ['dotted namespace (subject injection)', { ...span, namespace: 'a.b' }, 'bad field namespace'],
    ['wildcard agent', { ...span, agentId: '>' }, 'bad field agentId'],
    ['span without agentId', without(span, 'agentId'), 'missing field agentId'],
    ['bad decision', { ...span, decision: 'maybe' }, 'bad field decision'],
    ['negative duration', { ...span, durationMs: -1 }, 'bad field durationMs'],
    ['seq 0', { ...span, seq: 0 }, 'bad field seq'],
    ['float seq', { ...span, seq: 1.5 }, 'bad field seq'],
    ['bad ts', { ...span, ts: 'yesterday' }, 'bad field ts'],
    ['port out of range', { ...valid[4], dstPort: 70000 }, 'bad field dstPort'],
    ['bad ip', { ...valid[4], dstIp: '300.1.1.1' }, 'bad field dstIp'],
    ['missing code', without(valid[2], 'code'), 'missing field code'],
    ['huge string', { ...valid[7], reason: 'x'.repeat(10_000) }, 'bad field reason'],
    ['answers not strings', { ...valid[6], answers: [1] }, 'bad field answers'],
  ];
  it.each(bad)('rejects %s', (_name, e, reason) => {
    const r = validateAuditEvent(e);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toContain(reason);
  });

  it('parses payload bytes and turns garbage into a reason, never an exception', () => {
    expect(parseAuditEvent(Buffer.from(JSON.stringify(valid[0]))).ok).toBe(true);
    expect(parseAuditEvent(Buffer.from('{"v":1,'))).toEqual({ ok: false, reason: 'not JSON' });
    expect(parseAuditEvent(new Uint8Array([0xff, 0xfe])).ok).toBe(false);
  });

  it('makes unique, time-ordered UUIDv7 ids', () => {
    const ids = Array.from({ length: 10_000 }, (_, i) => newEventId(1_700_000_000_000 + Math.floor(i / 100)));
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect([...ids].sort()).toEqual(ids.slice().sort((a, b) => a.slice(0, 13).localeCompare(b.slice(0, 13)) || a.localeCompare(b)));
    expect(ids[0].slice(0, 13).replace('-', '')).toBe((1_700_000_000_000).toString(16).padStart(12, '0'));
  });

  it('publishes on lattice.audit.<namespace>.<agent>.<type>', () => {
    expect(auditSubject(span as unknown as AuditEvent)).toBe('lattice.audit.ns.a1.tool.span');
    expect(auditSubject(valid[0] as unknown as AuditEvent)).toBe('lattice.audit._._.sandbox.created');
  });
});

describe('schema/audit-event.schema.json: the stream\'s contract', () => {
  it.each(valid.map((e) => [e.type as string, e]))('accepts a valid %s', (_t, e) => {
    expect(auditSchemaProblems(e)).toEqual([]);
  });

  it('covers every event type, and nothing else', async () => {
    const { AuditEventType } = await import('../../src/audit/events.js');
    const schema = JSON.parse(readFileSync(new URL('../../schema/audit-event.schema.json', import.meta.url), 'utf8')) as { oneOf: Array<{ title: string }> };
    expect(schema.oneOf.map((b) => b.title).sort()).toEqual(Object.values(AuditEventType).sort());
  });

  it('a producer\'s nonconforming draft fails its test', () => {
    expect(() => assertPublishable({ type: 'flow.opened' } as never)).toThrow(/violates schema/);
  });

  // Values that sit on either side of each field kind's rules (ASCII only: the schema's maxLength
  // counts code points, the runtime check UTF-16 units).
  const pool: unknown[] = [
    '', 'x', 'a.b', '>', 'a b', 'ab_-9', 'x'.repeat(64), 'x'.repeat(65), 'x'.repeat(128), 'x'.repeat(129), 'x'.repeat(512), 'x'.repeat(513),
    '10.77.0.2', '010.0.0.1', '256.1.1.1', '1.2.3', '2001:db8::1', '::ffff:1.2.3.4', 'fd77::2%eth0', 'g::1',
    '2024-07-30T10:00:00Z', '2024-07-30T10:00:00.123+02:00', '2024-07-30 10:00:00Z', 'yesterday',
    'tcp', 'icmpv6', 'egress', 'allowed', 'would-deny', 'ok', 'allow', 'enforce', 'disabled', 'approved', 'sandbox.created',
    0, 1, -1, 1.5, 65535, 65536, 2 ** 53 - 1, 2 ** 53, -(2 ** 53), true, null, [], ['a'], [1], Array(65).fill('a'), {},
  ];

  it('agrees with the runtime validator on seeded mutations of valid events', () => {
    const rnd = seededRandom();
    let rejected = 0;
    for (let i = 0; i < 5000; i++) {
      const e: Record<string, unknown> = { ...valid[rnd.int(valid.length)] };
      for (let m = 1 + rnd.int(2); m > 0; m--) {
        const keys = Object.keys(e);
        const op = rnd.int(10);
        if (op === 0) delete e[keys[rnd.int(keys.length)]];
        else if (op === 1) e[`extra${rnd.int(3)}`] = 1;
        else e[keys[rnd.int(keys.length)]] = pool[rnd.int(pool.length)];
      }
      const runtime = validateAuditEvent(e).ok;
      const schema = auditSchemaProblems(e).length === 0;
      if (!runtime) rejected++;
      expect({ event: e, schema }).toEqual({ event: e, schema: runtime });
    }
    expect(rejected).toBeGreaterThan(1000); // the mutations reach both sides
  });
});
