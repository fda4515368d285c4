import { describe, expect, it } from 'vitest';
import { newEventId, validateAuditEvent } from '../../src/audit/events.js';
import { enrollmentAuditEvent } from '../../src/controlplane/enrollaudit.js';
import type { ControlPlaneEvent } from '../../src/controlplane/types.js';

const NOW = Date.UTC(2026, 10, 30);
const base = { agentId: 'agent-1', namespace: 'team', name: 'web' };
const cases: ControlPlaneEvent[] = [
  { ...base, type: 'enrollment.enrolled', ipv4: '10.77.0.2', ipv6: 'fd77::2', tokenId: 't1', expiresAt: NOW + 3_600_000, parentAgentId: 'agent-0' },
  { ...base, type: 'enrollment.reenrolled', tokenId: 't1' },
  { ...base, type: 'enrollment.revoked', reason: 'admin' },
];

describe('enrollment events as audit events', () => {
  it.each(cases)('$type validates against the audit schema, in the agent\'s name, from the control plane', (e) => {
    const ev = enrollmentAuditEvent(e, NOW, 7, newEventId(NOW));
    expect(validateAuditEvent(ev)).toMatchObject({ ok: true });
    expect(ev).toMatchObject({ launcherId: 'control-plane', agentId: 'agent-1', namespace: 'team', enrollmentId: 'agent-1', seq: 7 });
    expect(ev.type).toBe(e.type === 'enrollment.revoked' ? 'enrollment.revoked' : 'enrollment.enrolled');
  });
});

describe('operators\' changes as audit events', () => {
  const changes: ControlPlaneEvent[] = [
    { type: 'policy.set', namespace: 'team', policyHash: `sha256:${'0f'.repeat(32)}`, rules: 2, by: 'alice' },
    { type: 'token.created', namespace: 'team', tokenId: 'tok-1', limit: 3, expiresAt: NOW + 60_000, by: 'root' },
    { type: 'token.created', namespace: 'team', tokenId: 'tok-2', limit: 1, expiresAt: NOW + 60_000, by: 'agent:web', agentId: 'agent-1' },
    { type: 'labels.changed', agentId: 'agent-1', namespace: 'team', name: 'web', labels: { role: 'db', tier: 'a' }, by: 'alice' },
    { type: 'user.changed', user: 'vera', change: 'added', role: 'viewer', by: 'root' },
    { type: 'user.changed', user: 'vera', change: 'removed', by: 'root' },
    { type: 'namespace.exit-node', namespace: 'team', exitNode: 'exit', allowOptOut: true, by: 'alice' },
  ];
  it.each(changes)('$type by $by validates, names who, and carries no agent unless one is involved', (e) => {
    const ev = enrollmentAuditEvent(e, NOW, 1, newEventId(NOW));
    expect(validateAuditEvent(ev)).toMatchObject({ ok: true });
    expect(ev).toMatchObject({ launcherId: 'control-plane', type: e.type, by: (e as { by: string }).by });
    expect(ev.agentId).toBe('agentId' in e ? e.agentId : undefined);
    expect(ev.namespace).toBe('namespace' in e ? e.namespace : undefined);
  });

  it('labels are key=value, and a token event holds its expiry as ISO time', () => {
    expect(enrollmentAuditEvent(changes[3], NOW, 1, newEventId(NOW))).toMatchObject({ labels: ['role=db', 'tier=a'] });
    expect(enrollmentAuditEvent(changes[1], NOW, 1, newEventId(NOW))).toMatchObject({ expiresAt: new Date(NOW + 60_000).toISOString() });
  });
});
