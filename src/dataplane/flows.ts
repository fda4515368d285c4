/**
 * The flow table: which connections exist between the sandbox and the overlay, who opened them,
 * what the policy decided, and how many bytes went each way. Pure: packets and `now` in, flows
 * and closed-flow records out; the pump owns the clock and calls expire() periodically. Every `now`
 * here is monotonic ms (Clock.monotonic): idle expiry and durationMs survive wall-clock steps.
 *
 * A flow is keyed by (protocol, local addr/port, remote addr/port), "local" being the sandbox side.
 *
 * ICMP (RFC 792, RFC 4443, RFC 1122 3.2.2):
 *   - Echo flows use the echo identifier as the local port and are keyed by the side that sent the
 *     request: only echo *replies* from the other side belong to a ping. The peer's own request with
 *     the same identifier is a new flow that its direction's policy decides; an unsolicited reply
 *     opens nothing (a pseudo-flow denied as ForcedRule.icmpUnsolicitedReply).
 *   - An error is related to the flow of the packet it quotes only when it travels between that
 *     flow's two endpoints, reversed (outer source = quoted destination, outer destination = quoted
 *     source). Any other error is a pseudo-flow denied as ForcedRule.icmpErrorMismatch (addresses
 *     disagree: someone is using an allowed flow as cover) or ForcedRule.icmpErrorUnrelated (it
 *     quotes no known flow). Pseudo-flows are audited like denied flows, once per pair and window.
 *
 * The table is bounded. When full, the victim is the oldest flow that is not an established,
 * allowed connection: closed or idle-expired first, then denied, then half-open (sampled among the
 * oldest few). Established allowed flows are never evicted for a new flow: when nothing else is
 * left, the new flow is refused (ObserveKind.full) and the pump drops its packet.
 */
import type { IpAddr } from '../net/addr.js';
import type { Decision } from '../policy/compile.js';
import type { FlowQuery } from '../policy/evaluate.js';
import { type Direction, ReservedRuleIds } from '../policy/schema.js';
import { Fragment, IpProto, type InnerHeader, type ParsedPacket, TcpFlag, isEcho, isEchoRequest, isIcmpError } from './packet.js';

export const FlowState = { new: 'new', established: 'established', closing: 'closing', closed: 'closed' } as const;
export type FlowState = (typeof FlowState)[keyof typeof FlowState];

export const CloseReason = { timeout: 'timeout', fin: 'fin', rst: 'rst', evicted: 'evicted', reused: 'reused', removed: 'removed' } as const;
export type CloseReason = (typeof CloseReason)[keyof typeof CloseReason];

/**
 * Rule ids of the decisions the flow table imposes itself, before any policy rule: the policy
 * never decides these flows and a policy update never re-decides them.
 */
export const ForcedRule = {
  icmpErrorMismatch: ReservedRuleIds.icmpErrorMismatch,
  icmpErrorUnrelated: ReservedRuleIds.icmpErrorUnrelated,
  icmpUnsolicitedReply: ReservedRuleIds.icmpUnsolicitedReply,
} as const;
export type ForcedRule = (typeof ForcedRule)[keyof typeof ForcedRule];

export interface Flow extends FlowQuery {
  readonly key: string;
  readonly family: 4 | 6;
  readonly protocol: number;
  readonly local: IpAddr;
  readonly localPort: number;
  readonly remote: IpAddr;
  readonly remotePort: number;
  /** Who sent the first packet: egress = the sandbox, ingress = the peer. */
  readonly direction: Direction;
  /** The policy's service port (see FlowQuery.dstPort). */
  readonly dstPort: number;
  readonly firstSeen: number;
  lastSeen: number;
  state: FlowState;
  /** undefined until the pump records the policy's decision with decide(). */
  decision: Decision | undefined;
  bytesOut: number;
  bytesIn: number;
  packetsOut: number;
  packetsIn: number;
  finOut: boolean;
  finIn: boolean;
  closeReason?: CloseReason;
  /** Set for pseudo-flows the table denies itself (see ForcedRule); the pump never asks the policy. */
  readonly forced?: ForcedRule;
}

export interface ClosedFlow {
  readonly flow: Flow;
  readonly reason: CloseReason;
  readonly durationMs: number;
}

export const ObserveKind = {
  /** The packet belongs to a known flow: apply flow.decision. */
  existing: 'existing',
  /** A new flow: ask the policy, then call decide(flow, decision). */
  new: 'new',
  /** An ICMP error about a known flow: apply that flow's decision. */
  related: 'related',
  /** Cannot be attributed to a flow (a later fragment): the pump decides (enforce: drop). */
  untracked: 'untracked',
  /** Source (egress) or destination (ingress) is not one of the sandbox's addresses. */
  spoofed: 'spoofed',
  /** A new flow, but the table is full of established allowed flows: drop the packet. */
  full: 'full',
} as const;
export type ObserveKind = (typeof ObserveKind)[keyof typeof ObserveKind];

export type ObserveResult =
  | { readonly kind: 'existing' | 'new' | 'related'; readonly flow: Flow }
  | { readonly kind: 'untracked' | 'spoofed' | 'full'; readonly flow?: undefined };

/** Idle timeouts in ms, by protocol and state. */
export interface FlowTimeouts {
  tcpNew: number;
  tcpEstablished: number;
  tcpClosing: number;
  tcpClosed: number;
  udpNew: number;
  udpEstablished: number;
  icmp: number;
  other: number;
  /** Flows the policy denied: short, but long enough to swallow SYN retries without new audit lines. */
  denied: number;
}

export const DefaultFlowTimeouts: Readonly<FlowTimeouts> = Object.freeze({
  tcpNew: 30_000,
  tcpEstablished: 3_600_000,
  tcpClosing: 60_000,
  tcpClosed: 10_000,
  udpNew: 30_000,
  udpEstablished: 180_000,
  icmp: 30_000,
  other: 60_000,
  denied: 10_000,
});

export interface FlowTableOptions {
  /** Upper bound on tracked flows (default DefaultMaxFlows, 16384; `sandbox run|start --max-flows`). */
  maxFlows?: number;
  timeouts?: Partial<FlowTimeouts>;
  /**
   * The sandbox's own addresses. When given, egress packets from any other source and ingress
   * packets to any other destination are reported as spoofed (and never create flows).
   */
  localAddresses?: readonly IpAddr[];
  /**
   * A router's (`lattice up --advertise-routes`, `--exit-node`) forwarded side: addresses this node routes
   * for count as local too, so a flow a peer opens to a host behind the router is tracked like one to the
   * node itself (local = the routed host). Absent: only localAddresses.
   */
  routed?: (a: IpAddr) => boolean;
}

/** The flow table's bound when none is given. */
export const DefaultMaxFlows = 16_384;

const EVICTION_SAMPLE = 32;

function addrKey(a: IpAddr): string {
  return a.family === 4 ? `${a.w0}` : `${a.w0}:${a.w1}:${a.w2}:${a.w3}`;
}

function sameAddr(a: IpAddr, b: IpAddr): boolean {
  return a.family === b.family && a.w0 === b.w0 && a.w1 === b.w1 && a.w2 === b.w2 && a.w3 === b.w3;
}

/** The flow table's key of a 5-tuple, "local" being the sandbox side. */
export function flowKey(protocol: number, local: IpAddr, localPort: number, remote: IpAddr, remotePort: number): string {
  return `${protocol}|${addrKey(local)}|${localPort}|${addrKey(remote)}|${remotePort}`;
}

/** Whether a flow is an established connection the policy let through (never an eviction victim). */
function isProtected(f: Flow): boolean {
  return f.decision !== undefined && f.decision.effective === 'allow' && f.forced === undefined && (f.state === FlowState.established || f.state === FlowState.closing);
}

/** The flows of one sandbox (see the comment at the top of this file). Bounded by maxFlows. */
export class FlowTable {
  private readonly flows = new Map<string, Flow>();
  /** Flows that may be evicted (not isProtected), oldest first. */
  private readonly evictable = new Set<Flow>();
  private pendingClosed: ClosedFlow[] = [];
  readonly maxFlows: number;
  readonly timeouts: FlowTimeouts;
  private readonly localAddresses?: readonly IpAddr[];
  private readonly routed?: (a: IpAddr) => boolean;
  /** Counters for the pump's stats line. */
  readonly counters = { opened: 0, evicted: 0, spoofed: 0, untracked: 0, full: 0 };

  constructor(opts: FlowTableOptions = {}) {
    this.maxFlows = opts.maxFlows ?? DefaultMaxFlows;
    this.timeouts = { ...DefaultFlowTimeouts, ...opts.timeouts };
    this.localAddresses = opts.localAddresses;
    this.routed = opts.routed;
  }

  get size(): number {
    return this.flows.size;
  }

  /** Every flow in the table, in insertion order. */
  values(): IterableIterator<Flow> {
    return this.flows.values();
  }

  /** The flow under `key` (flowKey), if any. */
  get(key: string): Flow | undefined {
    return this.flows.get(key);
  }

  private isLocal(a: IpAddr): boolean {
    const ls = this.localAddresses;
    if (ls === undefined) return true;
    for (const l of ls) if (sameAddr(l, a)) return true;
    return this.routed?.(a) === true;
  }

  /**
   * Account one packet. `direction`: egress = read from the sandbox's TUN, ingress = arrived from
   * the overlay. `bytes` defaults to the IP length.
   */
  observe(p: ParsedPacket, direction: Direction, now: number, bytes: number = p.length): ObserveResult {
    const out = direction === 'egress';
    const local = out ? p.src : p.dst;
    const remote = out ? p.dst : p.src;
    if (!this.isLocal(local)) {
      this.counters.spoofed++;
      return { kind: ObserveKind.spoofed };
    }
    if (p.fragment === Fragment.later) {
      this.counters.untracked++;
      return { kind: ObserveKind.untracked };
    }
    const isIcmp = p.protocol === IpProto.icmp || p.protocol === IpProto.icmpv6;

    let forced: ForcedRule | undefined;
    let opener = direction;
    if (isIcmp && isIcmpError(p.protocol, p.icmpType)) {
      const inner = p.inner;
      if (inner === undefined || inner.family !== p.family || !sameAddr(p.src, inner.dst) || !sameAddr(p.dst, inner.src)) {
        forced = ForcedRule.icmpErrorMismatch;
      } else {
        const related = this.findRelated(inner, out);
        if (related) {
          this.count(related, out, now, bytes);
          this.touch(related);
          return { kind: ObserveKind.related, flow: related };
        }
        forced = ForcedRule.icmpErrorUnrelated;
      }
    }

    let localPort: number;
    let remotePort: number;
    let keyTag = '';
    if (isIcmp) {
      const echo = forced === undefined && isEcho(p.protocol, p.icmpType);
      // Echo flows belong to whoever sent the request; other ICMP collapses to one flow per pair.
      localPort = echo ? p.icmpId : 0;
      remotePort = 0;
      if (echo) {
        const request = isEchoRequest(p.protocol, p.icmpType);
        opener = request === out ? 'egress' : 'ingress';
        keyTag = opener === 'egress' ? '|o' : '|i';
        // A reply that answers no request opens nothing: it becomes a denied pseudo-flow of its own.
        if (!request && !this.flows.has(flowKey(p.protocol, local, localPort, remote, remotePort) + keyTag)) {
          forced = ForcedRule.icmpUnsolicitedReply;
          opener = direction;
          keyTag = `|${forced}`;
        }
      } else if (forced !== undefined) {
        keyTag = `|${forced}`;
      }
    } else {
      localPort = out ? p.srcPort : p.dstPort;
      remotePort = out ? p.dstPort : p.srcPort;
    }
    const key = flowKey(p.protocol, local, localPort, remote, remotePort) + keyTag;
    const existing = this.flows.get(key);
    const tcp = p.protocol === IpProto.tcp;
    if (existing !== undefined) {
      // A fresh SYN on a finished connection is a new connection (port reuse): decide it anew.
      const reused = tcp && existing.state === FlowState.closed && (p.tcpFlags & (TcpFlag.SYN | TcpFlag.ACK)) === TcpFlag.SYN;
      if (!reused) {
        this.count(existing, out, now, bytes);
        if (tcp) this.trackTcp(existing, p.tcpFlags, out);
        else if (existing.state === FlowState.new && out !== (existing.direction === 'egress')) existing.state = FlowState.established;
        this.touch(existing);
        return { kind: ObserveKind.existing, flow: existing };
      }
      this.delete(existing);
      this.pendingClosed.push({ flow: existing, reason: CloseReason.reused, durationMs: existing.lastSeen - existing.firstSeen });
    }

    if (this.flows.size >= this.maxFlows && !this.evictOne(now)) {
      this.counters.full++;
      return { kind: ObserveKind.full };
    }
    const flow: Flow = {
      key,
      family: p.family,
      protocol: p.protocol,
      local,
      localPort,
      remote,
      remotePort,
      direction: opener,
      dstPort: isIcmp ? 0 : p.dstPort,
      firstSeen: now,
      lastSeen: now,
      state: FlowState.new,
      decision: undefined,
      bytesOut: 0,
      bytesIn: 0,
      packetsOut: 0,
      packetsIn: 0,
      finOut: false,
      finIn: false,
      ...(forced !== undefined && { forced }),
    };
    this.count(flow, out, now, bytes);
    if (tcp) {
      // Picked up mid-stream (e.g. after eviction): no handshake to wait for.
      if ((p.tcpFlags & TcpFlag.SYN) === 0) flow.state = FlowState.established;
      this.trackTcp(flow, p.tcpFlags, out);
    }
    this.flows.set(key, flow);
    this.evictable.add(flow);
    this.counters.opened++;
    return { kind: ObserveKind.new, flow };
  }

  /** Record the policy's decision for a flow (new, or re-decided after a policy update). */
  decide(flow: Flow, decision: Decision): void {
    flow.decision = decision;
    this.touch(flow);
  }

  /** Forget a flow now (e.g. the pump cut it); it is reported by the next expire(). */
  remove(flow: Flow, reason: CloseReason = CloseReason.removed): void {
    if (this.flows.get(flow.key) !== flow) return;
    this.delete(flow);
    this.pendingClosed.push({ flow, reason, durationMs: flow.lastSeen - flow.firstSeen });
  }

  /** Forget a flow without reporting it (a packet the pump could not record never opened it). */
  discard(flow: Flow): void {
    if (this.flows.get(flow.key) !== flow) return;
    this.delete(flow);
    this.counters.opened--;
  }

  private delete(flow: Flow): void {
    this.flows.delete(flow.key);
    this.evictable.delete(flow);
  }

  /** Keep the evictable set in step with the flow's state and decision. */
  private touch(flow: Flow): void {
    if (isProtected(flow)) this.evictable.delete(flow);
    else if (!this.evictable.has(flow)) this.evictable.add(flow);
  }

  /** Remove idle and finished flows; returns them with every flow evicted or removed since the last call. */
  expire(now: number): ClosedFlow[] {
    const closed = this.pendingClosed;
    this.pendingClosed = [];
    for (const [key, f] of this.flows) {
      if (now - f.lastSeen < this.idleTimeout(f)) continue;
      this.flows.delete(key);
      this.evictable.delete(f);
      const reason = f.state === FlowState.closed ? (f.closeReason ?? CloseReason.timeout) : CloseReason.timeout;
      closed.push({ flow: f, reason, durationMs: f.lastSeen - f.firstSeen });
    }
    return closed;
  }

  /** The idle timeout that applies to a flow in its current state. */
  idleTimeout(f: Flow): number {
    const t = this.timeouts;
    if (f.decision !== undefined && f.decision.effective === 'deny') return t.denied;
    switch (f.protocol) {
      case IpProto.tcp:
        return f.state === FlowState.new ? t.tcpNew : f.state === FlowState.established ? t.tcpEstablished : f.state === FlowState.closing ? t.tcpClosing : t.tcpClosed;
      case IpProto.udp:
        return f.state === FlowState.new ? t.udpNew : t.udpEstablished;
      case IpProto.icmp:
      case IpProto.icmpv6:
        return t.icmp;
      default:
        return t.other;
    }
  }

  /** Account a packet the table did not observe itself (a later fragment of one of the flow's datagrams). */
  account(f: Flow, out: boolean, now: number, bytes: number): void {
    this.count(f, out, now, bytes);
  }

  private count(f: Flow, out: boolean, now: number, bytes: number): void {
    f.lastSeen = now;
    if (out) {
      f.packetsOut++;
      f.bytesOut += bytes;
    } else {
      f.packetsIn++;
      f.bytesIn += bytes;
    }
  }

  private trackTcp(f: Flow, flags: number, out: boolean): void {
    if ((flags & TcpFlag.RST) !== 0) {
      f.state = FlowState.closed;
      f.closeReason = CloseReason.rst;
      return;
    }
    const fromOpener = out === (f.direction === 'egress');
    if (f.state === FlowState.new && !fromOpener && (flags & TcpFlag.ACK) !== 0) f.state = FlowState.established;
    if ((flags & TcpFlag.FIN) !== 0) {
      if (out) f.finOut = true;
      else f.finIn = true;
      if (f.state !== FlowState.closed) f.state = FlowState.closing;
    }
    if (f.finOut && f.finIn && f.state !== FlowState.closed) {
      f.state = FlowState.closed;
      f.closeReason = CloseReason.fin;
    }
  }

  /** The flow of the packet an error quotes (its addresses were checked against the error's). */
  private findRelated(inner: InnerHeader, out: boolean): Flow | undefined {
    // The quoted packet travelled the other way: it was sent by whoever receives this error.
    const local = out ? inner.dst : inner.src;
    const remote = out ? inner.src : inner.dst;
    let localPort: number;
    let remotePort: number;
    let keyTag = '';
    if (inner.protocol === IpProto.icmp || inner.protocol === IpProto.icmpv6) {
      if (!isEcho(inner.protocol, inner.icmpType)) return undefined; // no error is about an error
      localPort = inner.icmpId;
      remotePort = 0;
      // The quoted echo was sent by the error's receiver; its request side opened the flow.
      const quotedFromSandbox = !out;
      const opener = isEchoRequest(inner.protocol, inner.icmpType) === quotedFromSandbox ? 'egress' : 'ingress';
      keyTag = opener === 'egress' ? '|o' : '|i';
    } else {
      localPort = out ? inner.dstPort : inner.srcPort;
      remotePort = out ? inner.srcPort : inner.dstPort;
    }
    return this.flows.get(flowKey(inner.protocol, local, localPort, remote, remotePort) + keyTag);
  }

  /**
   * Evict one flow that is not an established allowed connection: among the oldest few of those,
   * finished or idle-expired first, then denied, then half-open. False when there is none.
   */
  private evictOne(now: number): boolean {
    let victim: Flow | undefined;
    let victimRank = Infinity;
    let n = 0;
    for (const f of this.evictable) {
      const expired = now - f.lastSeen >= this.idleTimeout(f);
      const cls = expired || f.state === FlowState.closed ? 0 : f.decision === undefined || f.decision.effective === 'deny' ? 1 : 2;
      const rank = cls * 1e15 + f.lastSeen;
      if (rank < victimRank) {
        victim = f;
        victimRank = rank;
      }
      if (++n >= EVICTION_SAMPLE) break;
    }
    if (victim === undefined) return false;
    this.delete(victim);
    this.counters.evicted++;
    this.pendingClosed.push({ flow: victim, reason: CloseReason.evicted, durationMs: victim.lastSeen - victim.firstSeen });
    return true;
  }
}
