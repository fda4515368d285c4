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
