import { describe, it, expect } from 'vitest';
import { seededRandom } from '../support/random.js';
import { ManualClock } from '../../src/clock.js';
import { MemoryNetwork } from '../../src/conn/memory.js';
import { MemoryTun } from '../../src/tun/tun.js';
import { Device } from '../../src/wg/device.js';
import { SodiumCrypto } from '../../src/wg/crypto.js';
import { Pump, type UpstreamResolver } from '../../src/dataplane/pump.js';
import { MapDirectory } from '../../src/dataplane/dns.js';
import { decodeDns, dnsQuery } from '../support/dns-oracle.js';
import { buildUdp, buildTcp, parsePacket, TcpFlag, IpProto } from '../../src/dataplane/packet.js';
import { parsePolicy, parseIp, type IpAddr } from '../../src/policy/index.js';
import type { AuditEventDraft } from '../../src/audit/events.js';
import { assertPublishable } from '../support/audit-schema.js';

const crypto = new SodiumCrypto();
const ip = (s: string) => parseIp(s)!;
const SANDBOX = ip('10.77.0.2');
const PEER = ip('10.77.0.10');
const OTHER = ip('10.77.0.11');
const RESOLVER = ip('10.77.0.1');
/** A globally reachable address (upstream answers in private ranges are DNS rebinding: see hostile.test.ts). */
const PUBLIC = ip('93.184.215.14');

const policyText = (mode = 'enforce', extra = '') => `{
  "version": 1, "mode": "${mode}",
  "egress": [
    { "id": "web", "action": "allow", "cidrs": ["10.77.0.10/32"], "ports": [80], "protocol": "tcp" }${extra}
  ],
  "ingress": [ { "id": "ssh", "action": "allow", "cidrs": ["10.77.0.10/32"], "ports": [22], "protocol": "tcp" } ]
}`;

/** The sandbox (pump + device A) and a peer (device B whose TUN is a MemoryTun the test reads). */
/** ManualClock whose wall clock can also step on its own (NTP), as a real one does. */
class SteppingClock extends ManualClock {
  private step = 0;
  override now(): number {
    return super.now() + this.step;
  }
  stepWall(ms: number): void {
    this.step += ms;
  }
}

function setup(policy = policyText(), resolveUpstream?: UpstreamResolver) {
  const clock = new SteppingClock();
  const net = new MemoryNetwork();
  const mk = (address: string) => {
    const priv = crypto.generatePrivateKey();
    const dev = new Device({ privateKey: priv, bind: net.bind(address, 51820), clock, crypto });
    return { dev, pub: crypto.publicKey(priv), ep: { address, port: 51820 } };
  };
  const a = mk('192.0.2.1');
  const b = mk('192.0.2.2');
  a.dev.addPeer({ publicKey: b.pub, allowedIPs: ['10.77.0.10/32', '10.77.0.11/32', '93.184.215.14/32'], endpoint: b.ep });
  b.dev.addPeer({ publicKey: a.pub, allowedIPs: ['10.77.0.2/32'], endpoint: a.ep });
  a.dev.up();
  b.dev.up();
  const peerSide: Uint8Array[] = [];
  b.dev.attach((p) => peerSide.push(Uint8Array.from(p)));
  const sandboxTun = new MemoryTun('sbx0');
  const events: AuditEventDraft[] = [];
  const pump = new Pump({
    tun: sandboxTun,
    device: a.dev,
    clock,
    addresses: [SANDBOX],
    resolverAddresses: [RESOLVER],
    policy: parsePolicy(policy),
    directory: new MapDirectory([['web.team.lattice', [PEER]]]),
    audit: (e) => (assertPublishable(e), events.push(e)),
    sandboxId: 'sbx',
    resolveUpstream,
  });
  pump.start();
  /** The sandbox sends a packet; the network delivers everything (handshake included). */
  const fromSandbox = (pkt: Uint8Array) => {
    sandboxTun.inject(pkt);
    net.flush();
  };
  const fromPeer = (pkt: Uint8Array) => {
    b.dev.sendPacket(pkt);
    net.flush();
  };
  return { clock, pump, sandboxTun, peerSide, events, fromSandbox, fromPeer };
}

const syn = (src: IpAddr, dst: IpAddr, dport: number, sport = 40000) =>
  buildTcp({ src, dst, srcPort: sport, dstPort: dport, seq: 1000, ack: 0, flags: TcpFlag.SYN, window: 65535 });
const ackData = (src: IpAddr, dst: IpAddr, sport: number, dport: number) =>
  buildTcp({ src, dst, srcPort: sport, dstPort: dport, seq: 1001, ack: 5001, flags: TcpFlag.ACK | TcpFlag.PSH, window: 65535, payload: new Uint8Array([1, 2, 3]) });

describe('Pump: egress', () => {
  it('an allowed flow reaches the peer and its replies reach the sandbox', () => {
    const s = setup();
    s.fromSandbox(syn(SANDBOX, PEER, 80));
    expect(s.peerSide).toHaveLength(1);
    s.fromPeer(buildTcp({ src: PEER, dst: SANDBOX, srcPort: 80, dstPort: 40000, seq: 5000, ack: 1001, flags: TcpFlag.SYN | TcpFlag.ACK, window: 65535 }));
    expect(s.sandboxTun.written).toHaveLength(1);
    expect(s.events).toContainEqual(expect.objectContaining({ type: 'flow.opened', verdict: 'allowed', ruleId: 'web', dstIp: '10.77.0.10', dstPort: 80 }));
  });

  it('a denied port and a denied address never leave; the agent gets a RST; the audit names the deny', () => {
    const s = setup();
    s.fromSandbox(syn(SANDBOX, PEER, 81));
    s.fromSandbox(syn(SANDBOX, OTHER, 80, 40001));
    expect(s.peerSide).toHaveLength(0);
    expect(s.pump.stats.dropped.denied).toBe(2);
    const rst = parsePacket(s.sandboxTun.written[0]!)!;
    expect(rst.protocol).toBe(IpProto.tcp);
    expect(rst.tcpFlags & TcpFlag.RST).toBeTruthy();
    const opened = s.events.filter((e) => e.type === 'flow.opened');
    expect(opened).toEqual([
      expect.objectContaining({ verdict: 'denied', ruleId: 'default-deny', dstPort: 81 }),
      expect.objectContaining({ verdict: 'denied', ruleId: 'default-deny', dstIp: '10.77.0.11' }),
    ]);
  });

  it('audit mode lets the same flow through and records would-deny', () => {
    const s = setup(policyText('audit'));
    s.fromSandbox(syn(SANDBOX, PEER, 81));
    expect(s.peerSide).toHaveLength(1);
    expect(s.events).toContainEqual(expect.objectContaining({ type: 'flow.opened', verdict: 'would-deny' }));
  });

  it('drops packets with a forged source address (anti-spoofing), and counts them', () => {
    const s = setup(policyText('disabled'));
    s.fromSandbox(syn(ip('10.77.0.99'), PEER, 80));
    s.fromSandbox(syn(PEER, PEER, 80));
    expect(s.peerSide).toHaveLength(0);
    expect(s.pump.stats.dropped.spoofed).toBe(2);
  });

  it('drops garbage from the TUN without throwing', () => {
    const s = setup();
    const rnd = seededRandom();
    for (const junk of [new Uint8Array(0), new Uint8Array([0x45]), new Uint8Array(20).fill(0xff), rnd.bytes(100)]) {
      expect(() => s.fromSandbox(junk)).not.toThrow();
    }
    expect(s.peerSide).toHaveLength(0);
    expect(s.pump.stats.dropped.malformed).toBeGreaterThanOrEqual(3);
  });

  it('a rule with expiresAt allows until that instant and denies after', () => {
    const expires = new Date(new ManualClock().now() + 60_000).toISOString();
    const s = setup(policyText('enforce', `, { "id": "temp", "action": "allow", "cidrs": ["10.77.0.11/32"], "protocol": "tcp", "expiresAt": "${expires}" }`));
    s.fromSandbox(syn(SANDBOX, OTHER, 443));
    expect(s.peerSide).toHaveLength(1);
    s.clock.advance(61_000);
    s.pump.tick();
    s.fromSandbox(syn(SANDBOX, OTHER, 443, 40002));
    s.fromSandbox(ackData(SANDBOX, OTHER, 40000, 443)); // the old flow was cut at expiry
    expect(s.peerSide).toHaveLength(1);
    expect(s.events.filter((e) => e.type === 'flow.opened').map((e) => (e as { verdict: string }).verdict)).toEqual(['allowed', 'denied', 'denied']);
  });
});

describe('Pump: ingress', () => {
  it('the peer cannot open a connection unless an ingress rule allows it', () => {
    const s = setup();
    s.fromPeer(syn(PEER, SANDBOX, 8080));
    expect(s.sandboxTun.written).toHaveLength(0);
    s.fromPeer(syn(PEER, SANDBOX, 22));
    expect(s.sandboxTun.written).toHaveLength(1);
    expect(s.events.filter((e) => e.type === 'flow.opened')).toEqual([
      expect.objectContaining({ direction: 'ingress', verdict: 'denied', srcIp: '10.77.0.10', dstPort: 8080 }),
      expect.objectContaining({ direction: 'ingress', verdict: 'allowed', ruleId: 'ssh' }),
    ]);
  });
});

describe('Pump: live policy update', () => {
  it('tightening the policy cuts an open flow it no longer allows', () => {
    const s = setup();
    s.fromSandbox(syn(SANDBOX, PEER, 80));
    s.fromSandbox(ackData(SANDBOX, PEER, 40000, 80));
    expect(s.peerSide).toHaveLength(2);
    const { cut } = s.pump.setPolicy(parsePolicy('{ "version": 1, "mode": "enforce" }'));
    expect(cut).toBe(1);
    s.fromSandbox(ackData(SANDBOX, PEER, 40000, 80));
    expect(s.peerSide).toHaveLength(2);
    const rst = parsePacket(s.sandboxTun.written.at(-1)!)!;
    expect(rst.tcpFlags & TcpFlag.RST).toBeTruthy();
    expect(rst.tcpSeq).toBe(5001); // built from the agent's own segment, so its stack accepts it
    expect(s.events.filter((e) => e.type === 'policy.applied')).toHaveLength(2);
    s.pump.tick();
    expect(s.events).toContainEqual(expect.objectContaining({ type: 'flow.closed', dstPort: 80, packetsOut: 2 }));
  });
});

describe('Pump: time', () => {
  it('flows live on monotonic time: a wall-clock step back neither expires them nor makes durations negative', () => {
    const s = setup();
    s.fromSandbox(syn(SANDBOX, PEER, 80));
    s.clock.stepWall(-3_600_000); // NTP steps the wall clock back an hour
    s.clock.advance(1000);
    s.fromSandbox(ackData(SANDBOX, PEER, 40000, 80));
    s.clock.stepWall(7_200_000); // and forward two: no idle timeout passed on the monotonic clock
    s.pump.tick();
    expect(s.events.filter((e) => e.type === 'flow.closed')).toHaveLength(0);
    s.pump.tick(Number.MAX_SAFE_INTEGER);
    // Schema-valid (durationMs is a uint; the audit sink checks), and the time that really passed.
    expect(s.events).toContainEqual(expect.objectContaining({ type: 'flow.closed', dstPort: 80, durationMs: 1000, packetsOut: 2 }));
  });
  it('a flow.closed from a fractional monotonic clock (performance.now()) carries whole ms and is publishable', () => {
    const s = setup();
    s.clock.advance(0.731);
    s.fromSandbox(syn(SANDBOX, PEER, 80));
    s.clock.advance(1000.482);
    s.fromSandbox(ackData(SANDBOX, PEER, 40000, 80));
    s.pump.tick(Number.MAX_SAFE_INTEGER);
    // assertPublishable (the audit sink) throws on a non-integer durationMs, as the outbox refuses it.
    expect(s.events).toContainEqual(expect.objectContaining({ type: 'flow.closed', dstPort: 80, durationMs: 1000 }));
  });
});

describe('Pump: policy.applied', () => {
  it('records every mode, "disabled" included (turning enforcement off is in the audit trail)', () => {
    const s = setup(policyText('disabled'));
    expect(s.events).toContainEqual(expect.objectContaining({ type: 'policy.applied', mode: 'disabled', rules: 2 }));
    s.pump.setPolicy(parsePolicy(policyText('enforce')));
    expect(s.events.filter((e) => e.type === 'policy.applied').map((e) => (e as { mode: string }).mode)).toEqual(['disabled', 'enforce']);
  });
});

describe('Pump: DNS', () => {
  const query = (name: string) =>
    buildUdp({ src: SANDBOX, dst: RESOLVER, srcPort: 5353, dstPort: 53, payload: dnsQuery(7, name, 'A') });

  it('answers overlay names and refuses others; nothing goes to the peer', () => {
    const s = setup();
    s.fromSandbox(query('web.team.lattice'));
    s.fromSandbox(query('example.com'));
    expect(s.peerSide).toHaveLength(0);
    const answers = s.sandboxTun.written.map((pkt) => {
      const p = parsePacket(pkt)!;
      return decodeDns(pkt.subarray(p.payloadOffset, p.length));
    });
    expect(answers[0]!.rcode).toBe(0);
    expect(answers[0]!.answers.map((a) => a.data)).toEqual(['10.77.0.10']);
    expect(answers[1]!.rcode).toBe(3);
    expect(s.events).toContainEqual(expect.objectContaining({ type: 'dns.refused', name: 'example.com' }));
  });
});

describe('Pump: domain rules', () => {
  it('resolves an allowed name upstream and allows exactly its addresses for the record\'s TTL', async () => {
    const asked: string[] = [];
    const resolver: UpstreamResolver = async (name, family) => {
      asked.push(`${name}/${family}`);
      return { addresses: family === 4 ? [PUBLIC] : [], ttlSec: 30 };
    };
    const s = setup(policyText('enforce', ', { "id": "api", "action": "allow", "domains": ["api.example.com"], "ports": [443], "protocol": "tcp" }'), resolver);
    const query = (name: string) => buildUdp({ src: SANDBOX, dst: RESOLVER, srcPort: 5353, dstPort: 53, payload: dnsQuery(9, name, 'A') });
    s.fromSandbox(query('api.example.com'));
    s.fromSandbox(query('other.example.com'));
    await new Promise((r) => setImmediate(r));
    expect(asked).toEqual(['api.example.com/4']); // a name no rule allows never leaves
    const answers = s.sandboxTun.written.map((pkt) => {
      const p = parsePacket(pkt)!;
      return decodeDns(pkt.subarray(p.payloadOffset, p.length));
    });
    expect(answers.map((a) => a.rcode).sort()).toEqual([0, 3]);
    expect(answers.find((a) => a.rcode === 0)!.answers.map((a) => a.data)).toEqual(['93.184.215.14']);

    s.fromSandbox(syn(SANDBOX, PUBLIC, 443));
    expect(s.peerSide).toHaveLength(1);
    s.fromSandbox(syn(SANDBOX, PUBLIC, 444, 40001)); // the rule's ports still apply
    expect(s.peerSide).toHaveLength(1);
    s.clock.advance(31_000);
    s.fromSandbox(syn(SANDBOX, PUBLIC, 443, 40002)); // the answer's TTL has passed: a new flow is denied
    expect(s.peerSide).toHaveLength(1);
    const verdicts = s.events.filter((e) => e.type === 'flow.opened').map((e) => `${(e as { verdict: string }).verdict}:${(e as { ruleId: string }).ruleId}`);
    expect(verdicts).toEqual(['allowed:api', 'denied:default-deny', 'denied:default-deny']);
  });
});
