/**
 * What a packet really does, as an attacker inside the sandbox or a peer would try it (issue 13):
 * ICMP errors, echo direction, address forms, DNS rebinding and rcodes, fragments, routing headers,
 * broadcast/multicast, floods, and fail-closed audit. Each case drives the real pump between a
 * MemoryTun (the sandbox) and a real WireGuard device pair over an in-memory network.
 */
import { describe, it, expect } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { MemoryNetwork } from '../../src/conn/memory.js';
import { MemoryTun } from '../../src/tun/tun.js';
import { Device } from '../../src/wg/device.js';
import { SodiumCrypto } from '../../src/wg/crypto.js';
import { Pump, type PumpOptions, type UpstreamResolver } from '../../src/dataplane/pump.js';
import { MapDirectory, buildQuery, parseResponse, DnsType, DnsDropReason, Rcode } from '../../src/dataplane/dns.js';
import { buildUdp, buildTcp, buildIcmp, buildIcmpEcho, parsePacket, internetChecksum, TcpFlag, IpProto } from '../../src/dataplane/packet.js';
import { parsePolicy, parseIp, formatIp, ipToBytes, type IpAddr } from '../../src/policy/index.js';
import type { AuditEventDraft } from '../../src/audit/events.js';
import { seededRandom } from '../support/random.js';
import { assertPublishable } from '../support/audit-schema.js';

const crypto = new SodiumCrypto();
const ip = (s: string) => parseIp(s)!;
const SANDBOX = ip('10.77.0.2');
const PEER = ip('10.77.0.10');
const DENIED = ip('10.77.0.9');
const OTHER = ip('10.77.0.11');
const RESOLVER = ip('10.77.0.1');
const SANDBOX6 = ip('fd77::2');
const PEER6 = ip('fd77::10');
const DENIED6 = ip('fd77::9');
const PUBLIC = ip('93.184.215.14');

/** Allows 10.77.0.10:443/tcp (+ extra egress rules), denies 10.77.0.9; ingress allows nothing unless given. */
const policy = (o: { mode?: string; egress?: string; ingress?: string } = {}) => `{
  "version": 1, "mode": "${o.mode ?? 'enforce'}",
  "egress": [
    { "id": "no-9", "action": "deny", "cidrs": ["10.77.0.9/32", "fd77::9/128"] },
    { "id": "web", "action": "allow", "cidrs": ["10.77.0.10/32", "fd77::10/128"], "ports": [443], "protocol": "tcp" }${o.egress ?? ''}
  ],
  "ingress": [${o.ingress ?? ''}]
}`;

type Extra = Partial<Pick<PumpOptions, 'auditReady' | 'dnsLimits' | 'flows' | 'fragments' | 'overlayCidrs'>>;

function setup(policyText = policy(), resolveUpstream?: UpstreamResolver, extra: Extra = {}) {
  const clock = new ManualClock();
  const net = new MemoryNetwork();
  const mk = (address: string) => {
    const priv = crypto.generatePrivateKey();
    const dev = new Device({ privateKey: priv, bind: net.bind(address, 51820), clock, crypto });
    return { dev, pub: crypto.publicKey(priv), ep: { address, port: 51820 } };
  };
  const a = mk('192.0.2.1');
  const b = mk('192.0.2.2');
  // The peer routes for every address the tests aim at, so only the pump stands in the way.
  a.dev.addPeer({ publicKey: b.pub, allowedIPs: ['10.77.0.0/24', 'fd77::/64', '93.184.215.14/32', '224.0.0.0/4', '255.255.255.255/32', 'ff00::/8'], endpoint: b.ep });
  b.dev.addPeer({ publicKey: a.pub, allowedIPs: ['10.77.0.2/32', 'fd77::2/128'], endpoint: a.ep });
  a.dev.up();
  b.dev.up();
  const peerSide: Uint8Array[] = [];
  b.dev.attach((p) => peerSide.push(Uint8Array.from(p)));
  const tun = new MemoryTun('sbx0');
  const events: AuditEventDraft[] = [];
  const pump = new Pump({
    tun,
    device: a.dev,
    clock,
    addresses: [SANDBOX, SANDBOX6],
    resolverAddresses: [RESOLVER],
    policy: parsePolicy(policyText),
    directory: new MapDirectory([['web.team.lattice', [PEER]]]),
    audit: (e) => (assertPublishable(e), events.push(e)),
    sandboxId: 'sbx',
    resolveUpstream,
    ...extra,
  });
  pump.start();
  const fromSandbox = (...pkts: Uint8Array[]) => {
    for (const p of pkts) tun.inject(p);
    net.flush();
  };
  const fromPeer = (...pkts: Uint8Array[]) => {
    for (const p of pkts) b.dev.sendPacket(p);
    net.flush();
  };
  const opened = () => events.filter((e) => e.type === 'flow.opened') as Array<AuditEventDraft & Record<string, unknown>>;
  return { clock, pump, tun, peerSide, events, opened, fromSandbox, fromPeer };
}

const syn = (src: IpAddr, dst: IpAddr, dport: number, sport = 40000) => buildTcp({ src, dst, srcPort: sport, dstPort: dport, seq: 1000, ack: 0, flags: TcpFlag.SYN });
const synAck = (src: IpAddr, dst: IpAddr, sport: number, dport: number) => buildTcp({ src, dst, srcPort: sport, dstPort: dport, seq: 5000, ack: 1001, flags: TcpFlag.SYN | TcpFlag.ACK });
const data = (src: IpAddr, dst: IpAddr, sport: number, dport: number) =>
  buildTcp({ src, dst, srcPort: sport, dstPort: dport, seq: 1001, ack: 5001, flags: TcpFlag.ACK | TcpFlag.PSH, payload: new Uint8Array([1, 2, 3]) });
const text = (s: string) => new TextEncoder().encode(s);
const concat = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
};
/** ICMP destination unreachable (v4 type 3 code 3 / v6 type 1 code 4) carrying `quoted`. */
const unreachable = (src: IpAddr, dst: IpAddr, quoted: Uint8Array) =>
  buildIcmp({ src, dst, type: src.family === 4 ? 3 : 1, code: src.family === 4 ? 3 : 4, payload: quoted });

// ------------------------------------------------------------------------------------ 1. ICMP errors

describe('1. ICMP errors pass only between their quoted flow\'s endpoints, reversed', () => {
  it('egress: an error to a denied host quoting an allowed flow (+63 bytes of data) is dropped and audited', () => {
    const s = setup();
    s.fromSandbox(syn(SANDBOX, PEER, 443));
    expect(s.peerSide).toHaveLength(1);
    const quoted = concat(synAck(PEER, SANDBOX, 443, 40000), text(`EXFIL: ${'x'.repeat(56)}`));
    expect(quoted.length - 40).toBe(63);
    s.fromSandbox(unreachable(SANDBOX, DENIED, quoted));
    expect(s.peerSide).toHaveLength(1); // only the SYN left
    expect(s.pump.stats.dropped.denied).toBe(1);
    expect(s.opened().at(-1)).toMatchObject({ direction: 'egress', verdict: 'denied', ruleId: 'icmp-error-mismatch', proto: 'icmp', dstIp: '10.77.0.9' });
  });

  it('egress: an error whose source is not the quoted destination is dropped too (IPv6 as well)', () => {
    const s = setup();
    s.fromSandbox(syn(SANDBOX6, PEER6, 443));
    // outer destination right, quoted flow right, but the quote claims the packet came from someone else
    s.fromSandbox(unreachable(SANDBOX6, PEER6, synAck(DENIED6, SANDBOX6, 443, 40000)));
    s.fromSandbox(unreachable(SANDBOX6, DENIED6, synAck(PEER6, SANDBOX6, 443, 40000)));
    expect(s.peerSide).toHaveLength(1);
    expect(s.opened().slice(1).map((e) => e.ruleId)).toEqual(['icmp-error-mismatch', 'icmp-error-mismatch']);
  });

  it('ingress: a peer address that ingress denies cannot inject an error quoting the sandbox\'s allowed flow', () => {
    const s = setup();
    s.fromSandbox(syn(SANDBOX, PEER, 443));
    s.fromPeer(unreachable(OTHER, SANDBOX, concat(syn(SANDBOX, PEER, 443), text('INJECTED'))));
    expect(s.tun.written).toHaveLength(0);
    expect(s.opened().at(-1)).toMatchObject({ direction: 'ingress', verdict: 'denied', ruleId: 'icmp-error-mismatch', srcIp: '10.77.0.11' });
  });

  it('the real error from the flow\'s remote end reaches the sandbox (related, no new audit line)', () => {
    const s = setup();
    s.fromSandbox(syn(SANDBOX, PEER, 443));
    s.fromPeer(unreachable(PEER, SANDBOX, syn(SANDBOX, PEER, 443)));
    expect(s.tun.written).toHaveLength(1);
    expect(parsePacket(s.tun.written[0]!)!.icmpType).toBe(3);
    expect(s.opened()).toHaveLength(1);
    expect([...s.pump.flows.values()][0]!.packetsIn).toBe(1);
  });

  it('an error quoting no flow is dropped (unrelated), and repeated ones are audited once per window', () => {
    const s = setup();
    for (let i = 0; i < 5; i++) s.fromPeer(unreachable(PEER, SANDBOX, syn(SANDBOX, PEER, 443, 41000)));
    expect(s.tun.written).toHaveLength(0);
    expect(s.opened().map((e) => e.ruleId)).toEqual(['icmp-error-unrelated']);
  });

  it('audit mode lets a mismatched error through as would-deny; disabled mode passes it unrecorded', () => {
    const audit = setup(policy({ mode: 'audit' }));
    audit.fromSandbox(syn(SANDBOX, PEER, 443));
    audit.fromSandbox(unreachable(SANDBOX, DENIED, synAck(PEER, SANDBOX, 443, 40000)));
    expect(audit.peerSide).toHaveLength(2);
    expect(audit.opened().at(-1)).toMatchObject({ verdict: 'would-deny', ruleId: 'icmp-error-mismatch' });
    const off = setup(policy({ mode: 'disabled' }));
    off.fromSandbox(unreachable(SANDBOX, DENIED, synAck(PEER, SANDBOX, 443, 40000)));
    expect(off.peerSide).toHaveLength(1);
    expect(off.opened()).toHaveLength(0);
  });
});

describe('1. ICMP errors: seeded random quotes and outer addresses', () => {
  it('an error leaves only towards the quoted packet\'s source, from its destination, about a known flow', () => {
    const rnd = seededRandom();
    const s = setup();
    s.fromSandbox(syn(SANDBOX, PEER, 443));
    const hosts = [SANDBOX, PEER, DENIED, OTHER, RESOLVER, ip('10.77.0.99')];
    const pick = () => hosts[rnd.int(hosts.length)]!;
    let expected = 1; // the SYN
    for (let i = 0; i < 500; i++) {
      const [qsrc, qdst, dst] = [pick(), pick(), pick()];
      const sport = rnd.int(2) === 0 ? 443 : rnd.int(65535) + 1;
      const dport = rnd.int(2) === 0 ? 40000 : rnd.int(65535) + 1;
      const quoted = concat(buildTcp({ src: qsrc, dst: qdst, srcPort: sport, dstPort: dport, seq: 1, ack: 1, flags: TcpFlag.ACK }), rnd.bytes(rnd.int(64)));
      s.fromSandbox(unreachable(SANDBOX, dst, quoted));
      // The only legitimate error: about the peer's packet of the allowed flow, back to the peer.
      if (qsrc === PEER && qdst === SANDBOX && dst === PEER && sport === 443 && dport === 40000) expected++;
      expect(s.peerSide).toHaveLength(expected);
    }
    for (const pkt of s.peerSide.slice(1)) expect(formatIp(parsePacket(pkt)!.dst)).toBe('10.77.0.10');
  });
});

// ------------------------------------------------------------------------------------ 7. echo direction

describe('7. only echo replies match an outgoing ping', () => {
  const withPing = policy({ egress: ', { "id": "ping", "action": "allow", "cidrs": ["10.77.0.10/32"], "protocol": "icmp" }' });

  it('after the sandbox pings with id 7, the peer\'s own request with id 7 is not delivered; its reply is', () => {
    const s = setup(withPing);
    s.fromSandbox(buildIcmpEcho({ src: SANDBOX, dst: PEER, id: 7, seq: 1 }));
    expect(s.peerSide).toHaveLength(1);
    s.fromPeer(buildIcmpEcho({ src: PEER, dst: SANDBOX, id: 7, seq: 1 }));
    expect(s.tun.written).toHaveLength(0);
    expect(s.opened().at(-1)).toMatchObject({ direction: 'ingress', verdict: 'denied', ruleId: 'default-deny', proto: 'icmp' });
    s.fromPeer(buildIcmpEcho({ src: PEER, dst: SANDBOX, id: 7, seq: 1, reply: true }));
    expect(s.tun.written).toHaveLength(1);
    expect(parsePacket(s.tun.written[0]!)!.icmpType).toBe(0);
  });

  it('an unsolicited reply opens nothing, in either direction', () => {
    const s = setup(withPing);
    s.fromPeer(buildIcmpEcho({ src: PEER, dst: SANDBOX, id: 8, seq: 1, reply: true }));
    s.fromSandbox(buildIcmpEcho({ src: SANDBOX, dst: PEER, id: 9, seq: 1, reply: true })); // egress allows ICMP to PEER, yet no request was seen
    expect(s.tun.written).toHaveLength(0);
    expect(s.peerSide).toHaveLength(0);
    expect(s.opened().map((e) => e.ruleId)).toEqual(['icmp-unsolicited-reply', 'icmp-unsolicited-reply']);
  });

  it('a ping the peer may send (ingress rule) is answered; the sandbox\'s reply matches it', () => {
    const s = setup(policy({ ingress: '{ "id": "pinged", "action": "allow", "cidrs": ["10.77.0.10/32"], "protocol": "icmp" }' }));
    s.fromPeer(buildIcmpEcho({ src: PEER, dst: SANDBOX, id: 7, seq: 1 }));
    s.fromSandbox(buildIcmpEcho({ src: SANDBOX, dst: PEER, id: 7, seq: 1, reply: true }));
    expect(s.tun.written).toHaveLength(1);
    expect(s.peerSide).toHaveLength(1);
    // the sandbox's own request with the peer's id is its own flow, which egress decides (denied here)
    s.fromSandbox(buildIcmpEcho({ src: SANDBOX, dst: PEER, id: 7, seq: 2 }));
    expect(s.peerSide).toHaveLength(1);
  });
});

// ------------------------------------------------------------------------------------ 4. address forms

describe('4. one canonical form per address', () => {
  it('a deny for ::ffff:10.77.0.9 denies the IPv4 flow to 10.77.0.9 that an allow for 10.77.0.0/24 would let through', () => {
    const s = setup(`{ "version": 1, "egress": [
      { "id": "lan", "action": "allow", "cidrs": ["10.77.0.0/24"] },
      { "id": "not-9", "action": "deny", "cidrs": ["::ffff:10.77.0.9"] } ] }`);
    s.fromSandbox(syn(SANDBOX, DENIED, 443), syn(SANDBOX, PEER, 443));
    expect(s.peerSide.map((p) => formatIp(parsePacket(p)!.dst))).toEqual(['10.77.0.10']);
    expect(s.opened()[0]).toMatchObject({ verdict: 'denied', ruleId: 'not-9' });
  });

  it('an IPv6 packet to or from an IPv4-mapped address never passes, even with mode disabled', () => {
    const s = setup(policy({ mode: 'disabled' }));
    s.fromSandbox(buildUdp({ src: SANDBOX6, dst: ip('::ffff:10.77.0.9'), srcPort: 1, dstPort: 2, payload: new Uint8Array(1) }));
    s.fromPeer(buildUdp({ src: PEER6, dst: SANDBOX6, srcPort: 1, dstPort: 2, payload: new Uint8Array(1) }));
    expect(s.peerSide).toHaveLength(0);
    expect(s.pump.stats.dropped.nonCanonical).toBe(1);
    expect(s.tun.written).toHaveLength(1);
  });
});

// ------------------------------------------------------------------------------------ 5, 6. DNS

const dnsQuery = (name: string, type: number = DnsType.A, id = 9) => buildUdp({ src: SANDBOX, dst: RESOLVER, srcPort: 5353, dstPort: 53, payload: buildQuery(id, name, type) });
const dnsAnswers = (tun: MemoryTun) =>
  tun.written.map((pkt) => {
    const p = parsePacket(pkt)!;
    return parseResponse(pkt.subarray(p.payloadOffset, p.length))!;
  });
const settle = () => new Promise((r) => setImmediate(r));
const wildcard = (extra = '') => policy({ egress: `, { "id": "ex", "action": "allow", "domains": ["*.example.com"], "ports": [443], "protocol": "tcp" }${extra}` });

describe('5. DNS rebinding through domain rules', () => {
  const hostile = ['127.0.0.1', '169.254.169.254', '192.168.1.1', '10.77.0.11', '0.0.0.0', '100.64.0.1', '224.0.0.1', '240.0.0.1'];
  const resolver: UpstreamResolver = async (_name, family) => ({
    addresses: family === 4 ? [...hostile.map(ip), PUBLIC] : ['::1', '::ffff:127.0.0.1', 'fe80::1', 'fd77::11', '64:ff9b::a9fe:a9fe', '2002:7f00:1::1'].map(ip),
    ttlSec: 60,
  });

  it('answers in special ranges create no allowance and are left out; each refusal names the name and the address', async () => {
    const s = setup(wildcard(), resolver);
    s.fromSandbox(dnsQuery('rebind.example.com'), dnsQuery('rebind.example.com', DnsType.AAAA, 10));
    await settle();
    const [a, aaaa] = dnsAnswers(s.tun);
    expect(a!.rcode).toBe(Rcode.noError);
    expect(a!.answers.map((r) => formatIp(r.addr!))).toEqual(['93.184.215.14']);
    expect(aaaa!.answers.map((r) => formatIp(r.addr!))).toEqual([]);
    const refused = s.events.filter((e) => e.type === 'dns.refused') as Array<{ name: string; reason: string }>;
    expect(refused).toHaveLength(hostile.length + 6);
    for (const addr of hostile) expect(refused.some((e) => e.name === 'rebind.example.com' && e.reason.includes(`answer ${addr} `))).toBe(true);
    expect(refused.find((e) => e.reason.includes('169.254.169.254'))!.reason).toMatch(/link-local/);
    expect(refused.find((e) => e.reason.includes('::ffff:7f00:1'))!.reason).toMatch(/loopback/);
    s.tun.written.length = 0;
    for (const [i, addr] of hostile.entries()) s.fromSandbox(syn(SANDBOX, ip(addr), 443, 41000 + i));
    s.fromSandbox(syn(SANDBOX, PUBLIC, 443));
    expect(s.peerSide.map((p) => formatIp(parsePacket(p)!.dst))).toEqual(['93.184.215.14']);
  });

  it('a CIDR rule that allows the address lets its answer through (and only that one)', async () => {
    const s = setup(wildcard(', { "id": "lan", "action": "allow", "cidrs": ["192.168.1.0/24"], "ports": [443], "protocol": "tcp" }'), resolver);
    s.fromSandbox(dnsQuery('rebind.example.com'));
    await settle();
    expect(dnsAnswers(s.tun)[0]!.answers.map((r) => formatIp(r.addr!))).toEqual(['192.168.1.1', '93.184.215.14']);
  });

  it('the overlay given as overlayCidrs counts as special even outside private ranges', async () => {
    const s = setup(wildcard(), async () => ({ addresses: [PUBLIC], ttlSec: 60 }), { overlayCidrs: [{ addr: ip('93.184.215.0'), bits: 24 }] });
    s.fromSandbox(dnsQuery('x.example.com'));
    await settle();
    expect(dnsAnswers(s.tun)[0]!.answers).toEqual([]);
    expect(s.events).toContainEqual(expect.objectContaining({ type: 'dns.refused', name: 'x.example.com', reason: expect.stringMatching(/93\.184\.215\.14 is overlay/) }));
  });
});

describe('6. DNS answers and rcodes', () => {
  const failing =
    (code: string): UpstreamResolver =>
    async (_name, family) => {
      if (family === 6) throw Object.assign(new Error(code), { code });
      return { addresses: [PUBLIC], ttlSec: 60 };
    };

  it.each([
    ['ENODATA', Rcode.noError, 'dns.answered'],
    ['ENOTFOUND', Rcode.nxDomain, 'dns.refused'],
    ['ESERVFAIL', Rcode.servFail, 'dns.refused'],
    ['ETIMEOUT', Rcode.servFail, 'dns.refused'],
  ])('AAAA upstream %s -> rcode %i', async (code, rcode, event) => {
    const s = setup(wildcard(), failing(code));
    s.fromSandbox(dnsQuery('v4only.example.com', DnsType.AAAA));
    await settle();
    const [r] = dnsAnswers(s.tun);
    expect(r).toMatchObject({ rcode, answers: [] });
    expect(s.events.at(-1)).toMatchObject({ type: event, name: 'v4only.example.com', qtype: 'AAAA' });
  });

  it('DNS over TCP to the resolver is reset at once (the client fails fast instead of hanging); other UDP ports get an unreachable', () => {
    const s = setup();
    s.fromSandbox(syn(SANDBOX, RESOLVER, 53, 45000));
    s.fromSandbox(buildUdp({ src: SANDBOX, dst: RESOLVER, srcPort: 5000, dstPort: 123, payload: new Uint8Array(4) }));
    const [rst, unreach] = s.tun.written.map((p) => parsePacket(p)!);
    expect(rst).toMatchObject({ protocol: IpProto.tcp, srcPort: 53, dstPort: 45000 });
    expect(rst!.tcpFlags & TcpFlag.RST).toBeTruthy();
    expect(rst!.tcpAck).toBe(1001);
    expect(unreach).toMatchObject({ protocol: IpProto.icmp, icmpType: 3 });
    expect(s.pump.stats.dropped.toResolver).toBe(2);
  });

  it('a query whose question is malformed gets FORMERR with its id', () => {
    const s = setup();
    const q = buildQuery(0x4242, 'x.example.com', DnsType.A);
    q[5] = 2; // qdcount 2
    s.fromSandbox(buildUdp({ src: SANDBOX, dst: RESOLVER, srcPort: 5353, dstPort: 53, payload: q }));
    expect(dnsAnswers(s.tun)[0]).toMatchObject({ id: 0x4242, rcode: Rcode.formErr });
    // Counted as a DNS drop, with its reason; not as a malformed packet (the packet itself parsed).
    expect(s.pump.stats.dropped).toMatchObject({ dnsMalformed: 1, malformed: 0 });
    expect(s.pump.dnsStats.count(DnsDropReason.badCounts)).toBe(1);
  });
});

// ------------------------------------------------------------------------------------ 2. fragments

/** Split an IPv4 packet into fragments of at most `mtu` bytes (RFC 791), with id `id`. */
function fragment4(pkt: Uint8Array, mtu: number, id: number): Uint8Array[] {
  const hl = (pkt[0] & 0x0f) * 4;
  const body = pkt.subarray(hl);
  const step = Math.floor((mtu - hl) / 8) * 8;
  const out: Uint8Array[] = [];
  for (let off = 0; off < body.length; off += step) {
    const part = body.subarray(off, Math.min(body.length, off + step));
    const f = new Uint8Array(hl + part.length);
    f.set(pkt.subarray(0, hl));
    f.set(part, hl);
    const more = off + step < body.length;
    f[2] = f.length >> 8;
    f[3] = f.length & 0xff;
    f[4] = id >> 8;
    f[5] = id & 0xff;
    const fo = (off / 8) | (more ? 0x2000 : 0);
    f[6] = fo >> 8;
    f[7] = fo & 0xff;
    f[10] = f[11] = 0;
    const c = internetChecksum(f, 0, hl);
    f[10] = c >> 8;
    f[11] = c & 0xff;
    out.push(f);
  }
  return out;
}

describe('2. later fragments follow the first fragment\'s decision', () => {
  const withUdp = policy({ egress: ', { "id": "trace", "action": "allow", "cidrs": ["10.77.0.10/32"], "protocol": "udp" }' });
  const big = (src: IpAddr, dst: IpAddr, sport: number, dport: number) => buildUdp({ src, dst, srcPort: sport, dstPort: dport, payload: new Uint8Array(3000 - 28).fill(0x5a) });

  it('a 3000-byte UDP datagram to an allowed destination leaves as 3 fragments, all delivered, and so does the reply', () => {
    const s = setup(withUdp);
    const frags = fragment4(big(SANDBOX, PEER, 33434, 33434), 1400, 0x1234);
    expect(frags).toHaveLength(3);
    s.fromSandbox(...frags);
    expect(s.peerSide).toHaveLength(3);
    s.fromPeer(...fragment4(big(PEER, SANDBOX, 33434, 33434), 1400, 0x99));
    expect(s.tun.written).toHaveLength(3);
    const flow = [...s.pump.flows.values()][0]!;
    expect(flow).toMatchObject({ packetsOut: 3, packetsIn: 3 });
  });

  it('fragments of a denied datagram, orphans and overlapping fragments are dropped and counted', () => {
    const s = setup(withUdp);
    s.fromSandbox(...fragment4(big(SANDBOX, DENIED, 1, 2), 1400, 1));
    expect(s.peerSide).toHaveLength(0);
    const allowed = fragment4(big(SANDBOX, PEER, 3, 4), 1400, 2);
    s.fromSandbox(allowed[2]!); // arrives without its first fragment
    expect(s.pump.stats.dropped.fragmentOrphan).toBe(1);
    // an overlapping later fragment (offset 8) would rewrite the ports the policy judged
    const overlap = Uint8Array.from(allowed[1]!);
    overlap[6] = 0x20;
    overlap[7] = 0x01;
    s.fromSandbox(allowed[0]!, overlap, allowed[1]!);
    expect(s.peerSide).toHaveLength(1); // the first only: overlap poisons the datagram
    expect(s.pump.stats.dropped.fragmentOverlap).toBe(2);
    expect(s.pump.stats.dropped.denied).toBe(3);
  });

  it('a decision holds for the fragment timeout only', () => {
    const s = setup(withUdp, undefined, { fragments: { timeoutMs: 1000 } });
    const frags = fragment4(big(SANDBOX, PEER, 5, 6), 1400, 3);
    s.fromSandbox(frags[0]!);
    s.clock.advance(1000);
    s.fromSandbox(frags[1]!);
    expect(s.peerSide).toHaveLength(1);
    expect(s.pump.stats.dropped.fragmentOrphan).toBe(1);
  });

  it('mode disabled passes every fragment, orphans included', () => {
    const s = setup(policy({ mode: 'disabled' }));
    const frags = fragment4(big(SANDBOX, DENIED, 1, 2), 1400, 7);
    s.fromSandbox(frags[2]!, frags[0]!, frags[1]!);
    expect(s.peerSide).toHaveLength(3);
  });
});

/** Rewrite an IPv4 fragment's total length and header checksum after its data was cut. */
function fixIpv4(f: Uint8Array): Uint8Array {
  f[2] = f.length >> 8;
  f[3] = f.length & 0xff;
  f[10] = f[11] = 0;
  const c = internetChecksum(f, 0, 20);
  f[10] = c >> 8;
  f[11] = c & 0xff;
  return f;
}

/**
 * Split an IPv6 packet (no extension headers) into fragments of at most `mtu` bytes, each with the
 * extension headers `pre` (hop-by-hop / destination options, 8 bytes each, next-header filled in)
 * before its fragment header, as RFC 8200 4.5 places the per-fragment headers.
 */
function fragment6(pkt: Uint8Array, mtu: number, id: number, pre: number[] = []): Uint8Array[] {
  const body = pkt.subarray(40);
  const hdrs = 40 + 8 * pre.length + 8;
  const step = Math.floor((mtu - hdrs) / 8) * 8;
  const out: Uint8Array[] = [];
  for (let off = 0; off < body.length; off += step) {
    const part = body.subarray(off, Math.min(body.length, off + step));
    const f = new Uint8Array(hdrs + part.length);
    f.set(pkt.subarray(0, 40));
    const chain = [...pre, IpProto.fragment];
    f[6] = chain[0]!;
    let o = 40;
    for (let i = 0; i < pre.length; i++, o += 8) f[o] = chain[i + 1]!; // length byte 0: 8 bytes, PadN-free zeros
    f[o] = pkt[6]!;
    const more = off + step < body.length;
    const fo = off | (more ? 1 : 0);
    f[o + 2] = fo >> 8;
    f[o + 3] = fo & 0xff;
    f.set([id >>> 24, (id >> 16) & 0xff, (id >> 8) & 0xff, id & 0xff], o + 4);
    f.set(part, hdrs);
    const plen = f.length - 40;
    f[4] = plen >> 8;
    f[5] = plen & 0xff;
    out.push(f);
  }
  return out;
}

describe('2. fragment neighbours: tiny first fragments, overlaps, IPv6 header chains, bounds', () => {
  const withUdp = policy({ egress: ', { "id": "trace", "action": "allow", "cidrs": ["10.77.0.10/32", "fd77::10/128"], "protocol": "udp" }, { "id": "web-udp", "action": "allow", "cidrs": ["10.77.0.10/32"], "ports": [443], "protocol": "tcp" }' });
  const big = (src: IpAddr, dst: IpAddr, sport = 33434, dport = 33434) => buildUdp({ src, dst, srcPort: sport, dstPort: dport, payload: new Uint8Array(3000 - 28).fill(0x5a) });

  it('a first fragment too short to carry the ports (4 bytes of UDP, 16 of TCP) is dropped as malformed; the rest of its datagram are orphans', () => {
    const s = setup(withUdp);
    const frags = fragment4(big(SANDBOX, PEER), 1400, 0x51);
    const tinyUdp = fixIpv4(Uint8Array.from(frags[0]!.subarray(0, 24)));
    s.fromSandbox(tinyUdp, frags[1]!, frags[2]!);
    // RFC 3128's tiny fragment: TCP flags (byte 13) would come in the next fragment.
    const tcp = buildTcp({ src: SANDBOX, dst: PEER, srcPort: 40000, dstPort: 443, seq: 1, ack: 0, flags: TcpFlag.SYN, payload: new Uint8Array(2000) });
    const tcpFrags = fragment4(tcp, 1400, 0x52);
    const tinyTcp = fixIpv4(Uint8Array.from(tcpFrags[0]!.subarray(0, 36)));
    s.fromSandbox(tinyTcp, tcpFrags[1]!);
    expect(s.peerSide).toHaveLength(0);
    expect(s.pump.packetStats.count('short-transport-header')).toBe(2);
    expect(s.pump.stats.dropped).toMatchObject({ malformed: 2, fragmentOrphan: 3 });
    expect(s.opened()).toHaveLength(0);
  });

  it('a later fragment starting exactly where the first one ends follows; one 8 bytes earlier overlaps and poisons the datagram', () => {
    const s = setup(withUdp);
    const frags = fragment4(big(SANDBOX, PEER), 1400, 0x61);
    const firstEnd = frags[0]!.length - 20; // 1376 bytes of data
    const early = Uint8Array.from(frags[1]!);
    const fo = (firstEnd - 8) / 8 | 0x2000;
    early[6] = fo >> 8;
    early[7] = fo & 0xff;
    s.fromSandbox(frags[0]!, frags[1]!); // offset == firstEnd: follows
    expect(s.peerSide).toHaveLength(2);
    s.fromSandbox(fixIpv4(early), frags[2]!);
    expect(s.peerSide).toHaveLength(2);
    expect(s.pump.stats.dropped.fragmentOverlap).toBe(2);
  });

  it('a second first fragment of the same datagram, rewriting the ports to a denied service, is judged on its own and poisons the rest', () => {
    const s = setup(withUdp);
    const toDenied = fragment4(big(SANDBOX, DENIED, 1, 2), 1400, 0x71);
    const first = fragment4(big(SANDBOX, PEER), 1400, 0x72);
    s.fromSandbox(first[0]!);
    expect(s.peerSide).toHaveLength(1);
    // Same id, source, destination and protocol: a duplicate first fragment with other ports.
    const again = fragment4(big(SANDBOX, PEER, 9, 9), 1400, 0x72);
    s.fromSandbox(again[0]!, first[1]!, first[2]!, ...toDenied);
    expect(s.peerSide).toHaveLength(2); // the duplicate's own flow (udp to PEER is allowed); nothing after it
    expect(s.pump.stats.dropped.fragmentOverlap).toBe(2);
    expect(s.pump.stats.dropped.denied).toBe(3);
  });

  it('IPv6: a fragment header after hop-by-hop and destination options; all fragments follow to an allowed peer, none to a denied one', () => {
    const s = setup(withUdp);
    const chain = [IpProto.hopByHop, IpProto.destOpts];
    const ok = fragment6(big(SANDBOX6, PEER6), 1280, 0xa1b2c3d4, chain);
    expect(ok.length).toBe(3);
    expect(parsePacket(ok[0]!)).toMatchObject({ fragment: 1, dstPort: 33434 });
    s.fromSandbox(...ok);
    expect(s.peerSide).toHaveLength(3);
    s.fromSandbox(...fragment6(big(SANDBOX6, DENIED6), 1280, 0xa1b2c3d5, chain));
    expect(s.peerSide).toHaveLength(3);
    expect(s.pump.stats.dropped.denied).toBe(3);
  });

  it('IPv6: two fragment headers in one packet, and a first fragment whose header chain stops short of UDP, are dropped as malformed', () => {
    const s = setup(withUdp);
    const [first] = fragment6(big(SANDBOX6, PEER6), 1280, 0xb1, []);
    // Nested: a fragment header whose next header is another fragment header (offset 1000).
    const nested = new Uint8Array(first!.length + 8);
    nested.set(first!.subarray(0, 48));
    nested.set(first!.subarray(40, 48), 48);
    nested[40] = IpProto.fragment;
    nested[50] = (1000 >> 8) & 0xff;
    nested[51] = 1000 & 0xf8;
    nested.set(first!.subarray(48), 56);
    const plen = nested.length - 40;
    nested[4] = plen >> 8;
    nested[5] = plen & 0xff;
    // RFC 7112: the first fragment must hold the whole header chain; this one ends inside it.
    const short = fragment6(big(SANDBOX6, PEER6), 1280, 0xb2, [IpProto.destOpts])[0]!.subarray(0, 52);
    const shortFixed = Uint8Array.from(short);
    shortFixed[4] = 0;
    shortFixed[5] = 12;
    s.fromSandbox(nested, shortFixed);
    expect(s.peerSide).toHaveLength(0);
    expect(s.pump.stats.dropped.malformed).toBe(2);
    expect(s.pump.packetStats.count('bad-extension-header') + s.pump.packetStats.count('short-transport-header')).toBe(2);
  });

  it('bounded: a seeded flood of first fragments and orphans keeps the tracker within maxEntries; orphans are counted; a real datagram still passes', () => {
    const r = seededRandom();
    const s = setup(withUdp, undefined, { fragments: { maxEntries: 64, timeoutMs: 1000 } });
    let orphans = 0;
    for (let i = 0; i < 2000; i++) {
      const frags = fragment4(big(SANDBOX, PEER), 1400, r.int(65536));
      if (r.int(2) === 0) s.fromSandbox(frags[0]!);
      else {
        s.fromSandbox(frags[1 + r.int(2)]!);
        orphans++;
      }
      expect(s.pump.fragments.size).toBeLessThanOrEqual(64);
      if (i % 100 === 0) s.clock.advance(100);
    }
    expect(s.pump.stats.dropped.fragmentOrphan).toBeGreaterThan(orphans * 0.9); // a few found a first fragment with the same id
    const before = s.peerSide.length;
    s.fromSandbox(...fragment4(big(SANDBOX, PEER, 7, 7), 1400, 0x7777));
    expect(s.peerSide.length).toBe(before + 3);
  });
});

// ------------------------------------------------------------------------------------ 3. routing headers

/** Insert an IPv6 routing header (type, segments left, final destination) after the fixed header. */
function withRoutingHeader(pkt: Uint8Array, type: number, segmentsLeft: number, finalDst: IpAddr): Uint8Array {
  const rh = new Uint8Array(24);
  rh[0] = pkt[6]; // next header: what followed the fixed header
  rh[1] = 2; // (2 + 1) * 8 = 24 bytes
  rh[2] = type;
  rh[3] = segmentsLeft;
  rh.set(ipToBytes(finalDst), 8);
  const out = concat(pkt.subarray(0, 40), rh, pkt.subarray(40));
  out[6] = IpProto.routing;
  const plen = out.length - 40;
  out[4] = plen >> 8;
  out[5] = plen & 0xff;
  return out;
}

describe('3. source-routed packets are dropped and counted', () => {
  it.each([
    ['type 0 (RFC 5095)', 0],
    ['type 2 (mobile IPv6)', 2],
    ['segment routing (type 4)', 4],
  ])('IPv6 %s to an allowed first hop, final destination denied', (_n, type) => {
    const s = setup();
    s.fromSandbox(withRoutingHeader(syn(SANDBOX6, PEER6, 443), type, 1, DENIED6));
    expect(s.peerSide).toHaveLength(0);
    expect(s.pump.stats.dropped.sourceRouted).toBe(1);
    expect(s.opened()).toHaveLength(0);
  });

  it('a routing header with no segments left is an ordinary packet', () => {
    const s = setup();
    s.fromSandbox(withRoutingHeader(syn(SANDBOX6, PEER6, 443), 4, 0, DENIED6));
    expect(s.peerSide).toHaveLength(1);
  });

  it('IPv4 loose source route option, both directions', () => {
    const s = setup(policy({ ingress: '{ "id": "any-in", "action": "allow", "cidrs": ["10.77.0.10/32"] }' }));
    const lsrr = (pkt: Uint8Array) => {
      // 8 bytes of options: LSRR (131), length 7, pointer 4, one address (10.77.0.9), then end of list
      const opt = Uint8Array.of(0x83, 7, 4, 10, 77, 0, 9, 0);
      const out = concat(pkt.subarray(0, 20), opt, pkt.subarray(20));
      out[0] = 0x47;
      out[2] = out.length >> 8;
      out[3] = out.length & 0xff;
      return out;
    };
    s.fromSandbox(lsrr(syn(SANDBOX, PEER, 443)));
    s.fromPeer(lsrr(syn(PEER, SANDBOX, 22)));
    expect(s.peerSide).toHaveLength(0);
    expect(s.tun.written).toHaveLength(0);
    expect(s.pump.stats.dropped.sourceRouted).toBe(2);
  });
});

// ------------------------------------------------------------------------------------ 8. broadcast, multicast

describe('8. broadcast and multicast are dropped before the policy, counted, never audited', () => {
  it('in both directions, whatever the policy allows', () => {
    const s = setup(policy({ egress: ', { "id": "all", "action": "allow", "cidrs": ["0.0.0.0/0", "::/0"], "allowAnyAddress": true }' }));
    for (const dst of ['255.255.255.255', '224.0.0.251', '239.1.2.3', 'ff02::1', 'ff05::2', 'fe80::1']) {
      const src = dst.includes(':') ? SANDBOX6 : SANDBOX;
      s.fromSandbox(buildUdp({ src, dst: ip(dst), srcPort: 5353, dstPort: 5353, payload: new Uint8Array(4) }));
    }
    s.fromSandbox(buildIcmp({ src: SANDBOX6, dst: PEER6, type: 135, code: 0, payload: new Uint8Array(16) })); // neighbour solicitation
    expect(s.peerSide).toHaveLength(0);
    expect(s.pump.stats.dropped.localOnly).toBe(7);
    expect(s.opened()).toHaveLength(0);
  });
});

// ------------------------------------------------------------------------------------ 9. floods

describe('9. floods are bounded', () => {
  it('DNS: lookups in flight are bounded; the excess gets SERVFAIL and is counted', async () => {
    let asked = 0;
    const pending: Array<() => void> = [];
    const slow: UpstreamResolver = (_name) =>
      new Promise((resolve) => {
        asked++;
        pending.push(() => resolve({ addresses: [PUBLIC], ttlSec: 60 }));
      });
    const s = setup(wildcard(), slow, { dnsLimits: { maxInFlight: 16, perSecond: 1e6, burst: 1e6 } });
    for (let i = 0; i < 1000; i++) s.fromSandbox(dnsQuery(`n${i}.example.com`, DnsType.A, i));
    expect(asked).toBe(16);
    expect(s.pump.stats.dropped.dnsThrottled).toBe(984);
    expect(dnsAnswers(s.tun).every((r) => r.rcode === Rcode.servFail)).toBe(true);
    for (const done of pending.splice(0)) done();
    await settle();
    await settle();
    s.fromSandbox(dnsQuery('later.example.com'));
    expect(asked).toBe(17); // the bound frees as lookups settle
  });

  it('DNS: the per-sandbox rate refuses a burst beyond the bucket, refilling with time', () => {
    let asked = 0;
    const s = setup(wildcard(), async () => {
      asked++;
      return { addresses: [PUBLIC], ttlSec: 60 };
    }, { dnsLimits: { maxInFlight: 1e6, perSecond: 10, burst: 20 } });
    for (let i = 0; i < 100; i++) s.fromSandbox(dnsQuery(`n${i}.example.com`, DnsType.A, i));
    expect(asked).toBe(20);
    s.clock.advance(1000);
    for (let i = 0; i < 100; i++) s.fromSandbox(dnsQuery(`m${i}.example.com`, DnsType.A, i));
    expect(asked).toBe(30);
    expect(s.pump.stats.dropped.dnsThrottled).toBe(170);
  });

  it('a denied ingress flood never evicts established allowed flows', () => {
    const s = setup(undefined, undefined, { flows: { maxFlows: 64 } });
    for (let i = 0; i < 40; i++) {
      s.fromSandbox(syn(SANDBOX, PEER, 443, 42000 + i));
      s.fromPeer(synAck(PEER, SANDBOX, 443, 42000 + i));
    }
    for (let i = 0; i < 5000; i++) s.fromPeer(syn(OTHER, SANDBOX, 1 + (i % 60000), 50000 + (i % 10000)));
    s.peerSide.length = 0;
    s.tun.written.length = 0;
    for (let i = 0; i < 40; i++) {
      s.fromSandbox(data(SANDBOX, PEER, 42000 + i, 443));
      s.fromPeer(data(PEER, SANDBOX, 443, 42000 + i));
    }
    expect(s.peerSide).toHaveLength(40);
    expect(s.tun.written).toHaveLength(40);
    expect(s.pump.flows.counters.evicted).toBeGreaterThan(4000);
  });

  it('a table full of established allowed flows refuses a new flow rather than evicting one', () => {
    const s = setup(undefined, undefined, { flows: { maxFlows: 4 } });
    for (let i = 0; i < 4; i++) {
      s.fromSandbox(syn(SANDBOX, PEER, 443, 43000 + i));
      s.fromPeer(synAck(PEER, SANDBOX, 443, 43000 + i));
    }
    s.fromPeer(syn(OTHER, SANDBOX, 22));
    s.fromSandbox(syn(SANDBOX, PEER, 443, 43999));
    expect(s.pump.stats.dropped.flowTableFull).toBe(2);
    expect(s.pump.flows.size).toBe(4);
  });
});

// ------------------------------------------------------------------------------------ 10. audit fail-closed

describe('10. enforce mode fails closed while the audit cannot record', () => {
  it('no new allowed flow opens while auditReady() is false; the retry after it drains passes; denials stay denials', () => {
    let ready = false;
    const s = setup(policy(), undefined, { auditReady: () => ready });
    s.fromSandbox(syn(SANDBOX, PEER, 443));
    s.fromSandbox(syn(SANDBOX, DENIED, 443, 40001));
    expect(s.peerSide).toHaveLength(0);
    expect(s.pump.stats.dropped.auditUnavailable).toBe(1);
    expect(s.opened().map((e) => e.verdict)).toEqual(['denied']);
    ready = true;
    s.fromSandbox(syn(SANDBOX, PEER, 443)); // the agent's SYN retry
    expect(s.peerSide).toHaveLength(1);
    expect(s.opened().map((e) => e.verdict)).toEqual(['denied', 'allowed']);
    ready = false;
    s.fromSandbox(data(SANDBOX, PEER, 40000, 443)); // an open flow keeps going
    expect(s.peerSide).toHaveLength(2);
  });

  it('audit mode stays open (it observes, it never blocks)', () => {
    const s = setup(policy({ mode: 'audit' }), undefined, { auditReady: () => false });
    s.fromSandbox(syn(SANDBOX, PEER, 443), syn(SANDBOX, DENIED, 443, 40001));
    expect(s.peerSide).toHaveLength(2);
  });
});
