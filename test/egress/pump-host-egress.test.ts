import { describe, it, expect } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { MemoryTun } from '../../src/tun/tun.js';
import { Pump, type PacketDevice } from '../../src/dataplane/pump.js';
import { MapDirectory } from '../../src/dataplane/dns.js';
import { buildTcp, parsePacket, TcpFlag } from '../../src/dataplane/packet.js';
import { parseIp, parsePolicy, type IpAddr } from '../../src/policy/index.js';
import { HostServicesGuard } from '../../src/egress/hostservices.js';
import type { AuditEventDraft } from '../../src/audit/events.js';

const ip = (s: string) => parseIp(s)!;
const SANDBOX = ip('100.77.1.2');
const WEB = ip('203.0.113.10');
const HOSTADDR = ip('192.0.2.2');

const NO_PEERS: PacketDevice = { sendPacket: () => false, attach: () => undefined };

function setup(policy: object) {
  const sandboxTun = new MemoryTun('sbx0');
  const egressTun = new MemoryTun('le0');
  const events: AuditEventDraft[] = [];
  const guard = new HostServicesGuard(['192.0.2.2/24']);
  const pump = new Pump({
    tun: sandboxTun,
    device: NO_PEERS,
    clock: new ManualClock(),
    addresses: [SANDBOX],
    resolverAddresses: [ip('169.254.77.1')],
    policy: parsePolicy(JSON.stringify(policy)),
    directory: new MapDirectory([]),
    audit: (e) => events.push(e),
    hostEgress: { tun: egressTun, vet: (f, d, p, n) => guard.vet(f, d, p, n) },
  });
  pump.start();
  return { pump, sandboxTun, egressTun, events };
}

const syn = (dst: IpAddr, dport: number, sport = 40000) =>
  buildTcp({ src: SANDBOX, dst, srcPort: sport, dstPort: dport, seq: 1000, ack: 0, flags: TcpFlag.SYN, window: 65535 });
const synAck = (src: IpAddr, sport: number, dport = 40000) =>
  buildTcp({ src, dst: SANDBOX, srcPort: sport, dstPort: dport, seq: 5000, ack: 1001, flags: TcpFlag.SYN | TcpFlag.ACK, window: 65535 });

describe('Pump with host egress', () => {
  it('an allowed flow that no peer takes leaves through the egress TUN; its reply comes back to the sandbox', () => {
    const s = setup({ version: 1, egress: [{ id: 'web', action: 'allow', cidrs: ['203.0.113.10/32'], ports: [443], protocol: 'tcp' }] });
    s.sandboxTun.inject(syn(WEB, 443));
    expect(s.egressTun.written).toHaveLength(1);
    s.egressTun.inject(synAck(WEB, 443));
    expect(s.sandboxTun.written).toHaveLength(1);
    expect(s.events).toContainEqual(expect.objectContaining({ type: 'flow.opened', verdict: 'allowed', ruleId: 'web', dstIp: '203.0.113.10' }));
  });

  it('nothing new comes in from the egress TUN: an unsolicited SYN is dropped', () => {
    const s = setup({ version: 1, egress: [{ id: 'web', action: 'allow', cidrs: ['203.0.113.10/32'] }] });
    s.egressTun.inject(buildTcp({ src: WEB, dst: SANDBOX, srcPort: 443, dstPort: 22, seq: 1, ack: 0, flags: TcpFlag.SYN, window: 1 }));
    expect(s.sandboxTun.written).toHaveLength(0);
    expect(s.pump.stats.dropped.denied).toBe(1);
  });

  it('a host address under an allow-everything rule is refused with a RST and audited as host-services', () => {
    const s = setup({ version: 1, egress: [{ id: 'all', action: 'allow', cidrs: ['0.0.0.0/0'], allowAnyAddress: true }] });
    s.sandboxTun.inject(syn(HOSTADDR, 22));
    expect(s.egressTun.written).toHaveLength(0);
    expect(parsePacket(s.sandboxTun.written[0]!)!.tcpFlags & TcpFlag.RST).toBeTruthy();
    expect(s.events).toContainEqual(expect.objectContaining({ type: 'flow.opened', verdict: 'denied', ruleId: 'host-services', dstIp: '192.0.2.2' }));
    expect(s.pump.checkEgress(HOSTADDR, 6, 22)).toMatchObject({ effective: 'deny', ruleId: 'host-services' });
  });

  it('a live update that drops allowHostAccess cuts the open flow to the host, even if a broad rule remains', () => {
    const s = setup({ version: 1, egress: [{ id: 'h', action: 'allow', cidrs: ['192.0.2.2/32'], allowHostAccess: true }] });
    s.sandboxTun.inject(syn(HOSTADDR, 22));
    expect(s.egressTun.written).toHaveLength(1);
    const { cut } = s.pump.setPolicy(parsePolicy(JSON.stringify({ version: 1, egress: [{ id: 'all', action: 'allow', cidrs: ['0.0.0.0/0'], allowAnyAddress: true }] })));
    expect(cut).toBe(1);
  });
});
