import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { MemoryTun } from '../../src/tun/tun.js';
import { Pump, type PacketDevice } from '../../src/dataplane/pump.js';
import { MapDirectory } from '../../src/dataplane/dns.js';
import { buildTcp, parsePacket, TcpFlag } from '../../src/dataplane/packet.js';
import { parsePolicy, parseIp, type IpAddr } from '../../src/policy/index.js';
import { cidrHas, parseCidr, type Cidr } from '../../src/net/addr.js';

const ip = (s: string) => parseIp(s)!;
const SANDBOX = ip('10.77.0.2');
const BEHIND_ROUTER = ip('10.200.0.1');
const ROUTE = (parseCidr('10.200.0.0/24') as { ok: true; cidr: Cidr }).cidr;

/** A device that routes by a set of prefixes the test edits (the WireGuard AllowedIPs, as routes change). */
function fakeDevice(routes: Cidr[], sent: Uint8Array[]): PacketDevice {
  return {
    sendPacket(pkt) {
      const p = parsePacket(pkt)!;
      if (!routes.some((c) => cidrHas(c, p.dst))) return false;
      sent.push(pkt);
      return true;
    },
    attach: () => undefined,
  };
}

const seg = (dst: IpAddr, flags: number, seq: number) => buildTcp({ src: SANDBOX, dst, srcPort: 40000, dstPort: 80, seq, ack: seq === 1000 ? 0 : 5001, flags, window: 65535 });

describe('Pump.cutRoutes: a withdrawn route cuts the open flows through it', () => {
  it('the flow to an address behind a withdrawn route is forgotten; the agent\'s next segment is refused with a RST', () => {
    const routes = [ROUTE];
    const sent: Uint8Array[] = [];
    const tun = new MemoryTun('sbx0');
    const pump = new Pump({
      tun,
      device: fakeDevice(routes, sent),
      clock: new ManualClock(),
      addresses: [SANDBOX],
      resolverAddresses: [ip('10.77.0.1')],
      policy: parsePolicy('{"version": 1, "mode": "enforce", "egress": [{"id": "lan", "action": "allow", "cidrs": ["10.200.0.0/24"], "ports": [80], "protocol": "tcp"}]}'),
      directory: new MapDirectory([]),
      audit: () => undefined,
    });
    pump.start();
    tun.inject(seg(BEHIND_ROUTER, TcpFlag.SYN, 1000));
    expect(sent).toHaveLength(1);
    expect(pump.cutRoutes(() => false)).toBe(0); // nothing gone: nothing cut
    routes.length = 0; // the route is withdrawn: the device no longer holds it
    expect(pump.cutRoutes((a) => cidrHas(ROUTE, a))).toBe(1);
    expect([...pump.flows.values()]).toHaveLength(0);
    tun.inject(seg(BEHIND_ROUTER, TcpFlag.ACK | TcpFlag.PSH, 1001));
    expect(sent).toHaveLength(1);
    const rst = parsePacket(tun.written.at(-1)!)!;
    expect(rst.tcpFlags & TcpFlag.RST).toBeTruthy();
    expect(pump.stats.dropped.noPeer).toBe(1);
  });
});
