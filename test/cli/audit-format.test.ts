import { describe, expect, it } from 'vitest';
import { formatEvent } from '../../src/cli/audit.js';
import type { StoredEvent } from '../../src/audit/store.js';

const flow = (namespace: string, agentId: string): StoredEvent =>
  ({
    v: 1, type: 'flow.opened', id: 'e1', seq: 1, launcherId: 'l1', agentId, namespace, ts: '2026-11-30T07:00:00.000Z',
    proto: 'tcp', srcIp: '10.77.0.2', srcPort: 40000, dstIp: '10.77.0.3', dstPort: 8080, flowId: 'f1', direction: 'egress', verdict: 'allowed',
  }) as unknown as StoredEvent;

describe('audit events, text form', () => {
  it('pads the NS/NAME column to the given width, so the protocol column lines up across agents', () => {
    const a = formatEvent(flow('demo', 'a1'), 'agent', 'demo/agent'.length);
    const b = formatEvent(flow('demo', 'w1'), 'web', 'demo/agent'.length);
    expect(a.indexOf(' tcp ')).toBe(b.indexOf(' tcp '));
    expect(b).toContain('demo/web    tcp 10.77.0.2:40000');
  });
});
