/** Denials of a peer's address explain themselves (issue 22, item 2): the IPv4-only policy case. */
import { describe, it, expect } from 'vitest';
import { explainDenial } from '../../src/sandbox/explain.js';
import { compilePolicy, evaluate, parseIp, type IpAddr } from '../../src/policy/index.js';
import type { AuditEventDraft } from '../../src/audit/events.js';

const ipv4Only = compilePolicy({
  version: 1,
  egress: [{ id: 'demo-http', action: 'allow', cidrs: ['10.77.0.0/16'], ports: [8080], protocol: 'tcp' }],
});
const check = (remote: IpAddr, protocol: number, dstPort: number) => evaluate(ipv4Only, { direction: 'egress', protocol, remote, dstPort }, 0);
const peers = [{ name: 'web.demo.lattice', addresses: [parseIp('10.77.0.1')!, parseIp('fd77::1')!] }];
const denied = (dstIp: string, dstPort = 8080): AuditEventDraft =>
  ({ type: 'flow.opened', flowId: 'f1', proto: 'tcp', srcIp: 'fd77::2', srcPort: 40000, dstIp, dstPort, direction: 'egress', verdict: 'denied', ruleId: 'default-deny' }) as AuditEventDraft;

describe('explainDenial', () => {
  it('names the peer and the rule that allows its other family, and what to add', () => {
    const e = explainDenial(denied('fd77::1'), peers, check) as { note?: string };
    expect(e.note).toBe("fd77::1 is peer web.demo.lattice's IPv6 address; its IPv4 address 10.77.0.1 is allowed (rule demo-http) but no rule covers IPv6: add fd77::/48 (or the /128) to that rule");
  });
  it('says when neither family is allowed', () => {
    const e = explainDenial(denied('fd77::1', 9090), peers, check) as { note?: string };
    expect(e.note).toBe("fd77::1 is peer web.demo.lattice's IPv6 address; no rule allows port 9090/tcp to it in either family");
  });
  it('leaves allowed flows and non-peer addresses alone', () => {
    const allowed = { ...denied('10.77.0.1'), verdict: 'allowed' } as AuditEventDraft;
    expect(explainDenial(allowed, peers, check)).toBe(allowed);
    const stranger = denied('203.0.113.9');
    expect(explainDenial(stranger, peers, check)).toBe(stranger);
  });
});
