import { describe, expect, it } from 'vitest';
import { CloseReason, FlowState, FlowTable } from '../../src/dataplane/flows.js';
import { TcpFlag, buildAdminProhibited, buildIcmpEcho, buildTcp, buildUdp, parsePacket } from '../../src/dataplane/packet.js';
import { compilePolicy, evaluate, parseIp, reevaluateFlows } from '../../src/policy/index.js';

const ip = (s: string) => parseIp(s)!;
const SB = ip('10.77.0.2'); // the sandbox
const PEER = ip('10.77.0.1');
const T0 = 1_000_000;

const tcp = (out: boolean, flags: number, extra: { sp?: number; dp?: number; payload?: number } = {}) => {
  const sp = extra.sp ?? 40000;
  const dp = extra.dp ?? 443;
  const pkt = out
    ? buildTcp({ src: SB, dst: PEER, srcPort: sp, dstPort: dp, seq: 1, ack: 1, flags, payload: new Uint8Array(extra.payload ?? 0) })
    : buildTcp({ src: PEER, dst: SB, srcPort: dp, dstPort: sp, seq: 1, ack: 1, flags, payload: new Uint8Array(extra.payload ?? 0) });
  return parsePacket(pkt)!;
};
const udp = (out: boolean, sp = 5000, dp = 53) =>
  parsePacket(out ? buildUdp({ src: SB, dst: PEER, srcPort: sp, dstPort: dp, payload: new Uint8Array(10) }) : buildUdp({ src: PEER, dst: SB, srcPort: dp, dstPort: sp, payload: new Uint8Array(10) }))!;

const policy = compilePolicy({ version: 1, egress: [{ id: 'web', action: 'allow', cidrs: ['10.77.0.1/32'], ports: [443] }, { id: 'dns', action: 'allow', cidrs: ['10.77.0.1/32'], ports: [53], protocol: 'udp' }] });

describe('FlowTable: TCP', () => {
  it('opens on SYN, matches the reply, tracks bytes and closes on FIN both ways', () => {
    const t = new FlowTable();
    const syn = t.observe(tcp(true, TcpFlag.SYN), 'egress', T0);
    expect(syn.kind).toBe('new');
    const flow = syn.flow!;
    expect(flow).toMatchObject({ direction: 'egress', dstPort: 443, localPort: 40000, remotePort: 443, state: FlowState.new, decision: undefined });
    t.decide(flow, evaluate(policy, flow, T0));
    expect(flow.decision?.ruleId).toBe('web');

    const synack = t.observe(tcp(false, TcpFlag.SYN | TcpFlag.ACK), 'ingress', T0 + 1);
    expect(synack).toEqual({ kind: 'existing', flow });
    expect(flow.state).toBe(FlowState.established);
    t.observe(tcp(true, TcpFlag.ACK | TcpFlag.PSH, { payload: 100 }), 'egress', T0 + 2);
    t.observe(tcp(false, TcpFlag.ACK, { payload: 1000 }), 'ingress', T0 + 3);
    expect(flow).toMatchObject({ packetsOut: 2, packetsIn: 2, bytesOut: 40 + 40 + 100, bytesIn: 40 + 40 + 1000 });

    t.observe(tcp(true, TcpFlag.FIN | TcpFlag.ACK), 'egress', T0 + 4);
    expect(flow.state).toBe(FlowState.closing);
    t.observe(tcp(false, TcpFlag.FIN | TcpFlag.ACK), 'ingress', T0 + 5);
    expect(flow.state).toBe(FlowState.closed);
    expect(t.expire(T0 + 5 + t.timeouts.tcpClosed - 1)).toEqual([]);
    const closed = t.expire(T0 + 5 + t.timeouts.tcpClosed);
    expect(closed).toEqual([{ flow, reason: CloseReason.fin, durationMs: 5 }]);
    expect(t.size).toBe(0);
  });

  it('RST closes; a new SYN on a closed flow is a new connection', () => {
    const t = new FlowTable();
    const first = t.observe(tcp(true, TcpFlag.SYN), 'egress', T0).flow!;
    t.observe(tcp(false, TcpFlag.RST | TcpFlag.ACK), 'ingress', T0 + 1);
    expect(first.state).toBe(FlowState.closed);
    const again = t.observe(tcp(true, TcpFlag.SYN), 'egress', T0 + 2);
    expect(again.kind).toBe('new');
    expect(again.flow).not.toBe(first);
    expect(t.expire(T0 + 2)).toEqual([{ flow: first, reason: CloseReason.reused, durationMs: 1 }]);
  });

  it('unsolicited ingress opens an ingress flow keyed on the sandbox port', () => {
    const t = new FlowTable();
    const r = t.observe(tcp(false, TcpFlag.SYN, { sp: 22, dp: 51000 }), 'ingress', T0);
    expect(r.kind).toBe('new');
    expect(r.flow).toMatchObject({ direction: 'ingress', localPort: 22, remotePort: 51000, dstPort: 22 });
    expect(evaluate(policy, r.flow!, T0).ruleId).toBe('default-deny');
  });

  it('a mid-stream packet opens an established flow', () => {
    const t = new FlowTable();
    expect(t.observe(tcp(true, TcpFlag.ACK), 'egress', T0).flow?.state).toBe(FlowState.established);
  });

  it('idle timeouts depend on state and decision', () => {
    const t = new FlowTable({ timeouts: { tcpNew: 100, denied: 50 } });
    const f = t.observe(tcp(true, TcpFlag.SYN), 'egress', T0).flow!;
    expect(t.expire(T0 + 99)).toEqual([]);
    t.observe(tcp(true, TcpFlag.SYN), 'egress', T0 + 99); // retransmit refreshes
    expect(t.expire(T0 + 150)).toEqual([]);
    t.decide(f, evaluate(policy, { ...f, dstPort: 22 }, T0));
    // denied: 50 ms after the last packet (T0 + 99)
    expect(t.expire(T0 + 148)).toEqual([]);
    expect(t.expire(T0 + 149).map((c) => c.reason)).toEqual(['timeout']);
  });
});

describe('FlowTable: UDP and ICMP', () => {
  it('a UDP reply matches the flow and establishes it', () => {
    const t = new FlowTable();
    const f = t.observe(udp(true), 'egress', T0).flow!;
    expect(f.state).toBe(FlowState.new);
    expect(t.observe(udp(false), 'ingress', T0 + 1)).toEqual({ kind: 'existing', flow: f });
    expect(f.state).toBe(FlowState.established);
    expect(t.expire(T0 + 1 + t.timeouts.udpEstablished - 1)).toEqual([]);
    expect(t.expire(T0 + 1 + t.timeouts.udpEstablished)).toHaveLength(1);
  });

  it('a reply from another port is a different flow', () => {
    const t = new FlowTable();
    t.observe(udp(true), 'egress', T0);
    expect(t.observe(udp(false, 5000, 54), 'ingress', T0).kind).toBe('new');
  });

  it('echo request and reply share a flow by identifier', () => {
    const t = new FlowTable();
    const req = parsePacket(buildIcmpEcho({ src: SB, dst: PEER, id: 77, seq: 1 }))!;
    const rep = parsePacket(buildIcmpEcho({ src: PEER, dst: SB, id: 77, seq: 1, reply: true }))!;
    const other = parsePacket(buildIcmpEcho({ src: PEER, dst: SB, id: 78, seq: 1, reply: true }))!;
    const f = t.observe(req, 'egress', T0).flow!;
    expect(f).toMatchObject({ protocol: 1, localPort: 77, dstPort: 0 });
    expect(t.observe(rep, 'ingress', T0)).toEqual({ kind: 'existing', flow: f });
    expect(t.observe(other, 'ingress', T0).kind).toBe('new');
  });

  it('an ICMP error about an egress flow is related to it, in both families', () => {
    for (const [sb, peer] of [
      [SB, PEER],
      [ip('fd77::2'), ip('fd77::1')],
    ]) {
      const t = new FlowTable();
      const out = buildUdp({ src: sb, dst: peer, srcPort: 5000, dstPort: 9, payload: new Uint8Array(4) });
      const f = t.observe(parsePacket(out)!, 'egress', T0).flow!;
      const err = buildAdminProhibited(parsePacket(out)!, out)!; // from the peer back to the sandbox
      expect(t.observe(parsePacket(err)!, 'ingress', T0 + 1)).toEqual({ kind: 'related', flow: f });
      expect(f.packetsIn).toBe(1);
      // an error quoting a packet no flow sent is not related
      const stray = buildUdp({ src: sb, dst: peer, srcPort: 5001, dstPort: 9, payload: new Uint8Array(4) });
      expect(t.observe(parsePacket(buildAdminProhibited(parsePacket(stray)!, stray)!)!, 'ingress', T0).kind).toBe('new');
    }
  });
});

describe('FlowTable: anti-spoofing, fragments, bounds', () => {
  it('reports packets not from (egress) or not to (ingress) the sandbox as spoofed', () => {
    const t = new FlowTable({ localAddresses: [SB, ip('fd77::2')] });
    const forged = parsePacket(buildUdp({ src: ip('10.77.0.99'), dst: PEER, srcPort: 1, dstPort: 53, payload: new Uint8Array(0) }))!;
    expect(t.observe(forged, 'egress', T0).kind).toBe('spoofed');
    expect(t.observe(udp(false), 'egress', T0).kind).toBe('spoofed'); // src is the peer
    expect(t.observe(udp(true), 'ingress', T0).kind).toBe('spoofed'); // dst is the peer
    expect(t.observe(udp(true), 'egress', T0).kind).toBe('new');
    expect(t.counters.spoofed).toBe(3);
    expect(t.size).toBe(1);
  });

  it('later fragments are untracked', () => {
    const t = new FlowTable();
    const pkt = buildUdp({ src: SB, dst: PEER, srcPort: 1, dstPort: 2, payload: new Uint8Array(8) });
    pkt[6] = 0x00;
    pkt[7] = 0x10; // fragment offset 16 (x8 bytes)
    expect(t.observe(parsePacket(pkt)!, 'egress', T0).kind).toBe('untracked');
  });

  it('stays bounded, evicting denied flows before live allowed ones', () => {
    const t = new FlowTable({ maxFlows: 8 });
    const allowed = t.observe(udp(true, 1, 53), 'egress', T0).flow!;
    t.decide(allowed, evaluate(policy, allowed, T0));
    t.observe(udp(false, 1, 53), 'ingress', T0);
    for (let i = 0; i < 100; i++) {
      const f = t.observe(udp(true, 100 + i, 9999), 'egress', T0 + i).flow!;
      t.decide(f, evaluate(policy, f, T0));
      expect(t.size).toBeLessThanOrEqual(8);
    }
    expect(t.get(allowed.key)).toBe(allowed);
    const closed = t.expire(T0 + 100);
    expect(closed.filter((c) => c.reason === 'evicted')).toHaveLength(93);
    expect(t.counters.evicted).toBe(93);
  });
});

describe('FlowTable + live policy update', () => {
  it('reevaluateFlows over the table cuts flows the new policy denies', () => {
    const t = new FlowTable();
    for (const [sp, dp] of [
      [1, 443],
      [2, 53],
    ]) {
      const r = t.observe(dp === 53 ? udp(true, sp, dp) : tcp(true, TcpFlag.SYN, { sp, dp }), 'egress', T0);
      t.decide(r.flow!, evaluate(policy, r.flow!, T0));
    }
    const tighter = compilePolicy({ version: 1, egress: [{ id: 'web', action: 'allow', cidrs: ['10.77.0.1/32'], ports: [443] }] });
    const { cut } = reevaluateFlows(tighter, t.values(), T0 + 10);
    expect(cut.map((c) => [c.flow.protocol, c.flow.dstPort, c.decision.ruleId])).toEqual([[17, 53, 'default-deny']]);
    for (const c of cut) t.decide(c.flow, c.decision);
    expect(t.observe(udp(false, 2, 53), 'ingress', T0 + 11).flow?.decision?.effective).toBe('deny');
  });
});
