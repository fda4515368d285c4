/**
 * The packet pump between the sandbox's TUN and the WireGuard device.
 *
 *   sandbox (gVisor netstack) --TUN--> fromSandbox: parse, anti-spoof, DNS, flow table, egress policy --> device.sendPacket
 *   peer --WireGuard--> device.onPacket --> fromPeer: parse, flow table, ingress policy --> TUN --> sandbox
 *
 * With host egress (src/egress), allowed packets that no WireGuard peer takes go to a second TUN whose
 * other end is the host kernel (forwarding + NAT), and what comes back from it takes the peer path:
 *
 *   fromSandbox: ... egress policy, hostEgress.vet (host services) --> device.sendPacket || hostEgress.tun
 *   host kernel --egress TUN--> fromPeer (flow table, ingress policy) --> TUN --> sandbox
 *
 * Every packet crosses the flow table: replies to allowed flows pass, anything new asks the policy.
 * Malformed, spoofed and denied packets are dropped and counted, never thrown. The pump holds no
 * timers of its own: the runtime calls tick(now) (flow expiry, rule expiry) about once a second.
 */
import type { Clock } from '../clock.js';
import type { Tun } from '../tun/tun.js';
import {
  compile,
  evaluate,
  domainAllowed,
  reevaluateFlows,
  nextExpiry,
  formatIp,
  ipEquals,
  DnsAllowances,
  type CompiledPolicy,
  type Decision,
  type FlowQuery,
  type IpAddr,
  type Policy,
} from '../policy/index.js';
import type { AuditEventDraft, FiveTuple, FlowProto } from '../audit/events.js';
import { parsePacket, rejectFor, PacketStats, IpProto, type ParsedPacket } from './packet.js';
import { FlowTable, CloseReason, type Flow, type FlowTableOptions } from './flows.js';
import { DnsResponder, DnsType, buildAddressResponse, buildDnsReplyPacket, buildResponse, Rcode, DNS_PORT, type DnsDirectory, type DnsQuery } from './dns.js';

/** The WireGuard side as the pump sees it (src/wg/device.ts implements it). */
export interface PacketDevice<Peer = unknown> {
  /** Encrypt and send to the peer whose allowed IPs hold the destination; false when none does. */
  sendPacket(packet: Uint8Array): boolean;
  /** Set by the pump: decrypted packets that passed the peer's allowed-IPs source check. */
  onPacket: (packet: Uint8Array, peer: Peer) => void;
}

/** Upstream resolution for names a domain rule allows (the I/O edge; node:dns in production). */
export type UpstreamResolver = (name: string, family: 4 | 6) => Promise<{ addresses: IpAddr[]; ttlSec: number }>;

/**
 * Host egress as the pump sees it (src/egress/host.ts builds it): a TUN whose other end is the host's
 * forwarding path, and the last word on an egress decision before a packet may take it.
 */
export interface HostEgressRoute {
  readonly tun: Tun;
  /** The final decision for an egress flow the policy decided as `decision` (the host-services guard). */
  vet(flow: FlowQuery, decision: Decision, policy: Policy, now: number): Decision;
}

export type AuditSink = (event: AuditEventDraft) => void;

export interface PolicySource {
  id: string;
  version: number;
}

export interface PumpOptions<Peer = unknown> {
  tun: Tun;
  device: PacketDevice<Peer>;
  clock: Clock;
  /** The sandbox's own overlay addresses: the only legal sources of its packets. */
  addresses: readonly IpAddr[];
  /** Addresses the launcher answers DNS on (the sandbox's resolv.conf points here). */
  resolverAddresses: readonly IpAddr[];
  policy: Policy;
  /** Where the policy came from (control-plane namespace policy, a file), for audit. */
  policySource?: PolicySource;
  directory: DnsDirectory;
  resolveUpstream?: UpstreamResolver;
  audit: AuditSink;
  sandboxId?: string;
  /** Where allowed packets that no peer takes leave (and their replies return); absent: refused (noPeer, RST/ICMP). */
  hostEgress?: HostEgressRoute;
  flows?: Omit<FlowTableOptions, 'localAddresses'>;
}

export const PumpDrop = {
  malformed: 'malformed',
  spoofed: 'spoofed',
  untracked: 'untracked',
  denied: 'denied',
  noPeer: 'noPeer',
  toResolver: 'toResolver',
} as const;
export type PumpDrop = (typeof PumpDrop)[keyof typeof PumpDrop];

export interface PumpStats {
  egressPackets: number;
  ingressPackets: number;
  dnsQueries: number;
  dropped: Record<PumpDrop, number>;
}

const PROTO_NAME: Record<number, FlowProto> = { [IpProto.tcp]: 'tcp', [IpProto.udp]: 'udp', [IpProto.icmp]: 'icmp', [IpProto.icmpv6]: 'icmpv6' };

export class Pump<Peer = unknown> {
  readonly stats: PumpStats;
  readonly packetStats = new PacketStats();
  readonly flows: FlowTable;
  readonly allowances = new DnsAllowances();
  private compiled: CompiledPolicy;
  private source: PolicySource;
  private readonly dns: DnsResponder;
  private readonly flowIds = new WeakMap<Flow, string>();
  private nextFlowId = 1;
  private lastTick: number;

  constructor(private readonly opts: PumpOptions<Peer>) {
    const dropped = {} as Record<PumpDrop, number>;
    for (const r of Object.values(PumpDrop)) dropped[r] = 0;
    this.stats = { egressPackets: 0, ingressPackets: 0, dnsQueries: 0, dropped };
    this.flows = new FlowTable({ ...opts.flows, localAddresses: opts.addresses });
    this.compiled = compile(opts.policy);
    this.source = opts.policySource ?? { id: 'local', version: 1 };
    this.lastTick = opts.clock.now();
    this.dns = new DnsResponder({
      directory: opts.directory,
      upstreamAllowed: (name) => opts.resolveUpstream !== undefined && domainAllowed(this.compiled, name, opts.clock.now()),
    });
  }

  get policy(): Policy {
    return this.compiled.policy;
  }

  start(): void {
    this.opts.tun.start((pkt) => this.fromSandbox(pkt));
    this.opts.device.onPacket = (pkt) => this.fromPeer(pkt);
    this.opts.hostEgress?.tun.start((pkt) => this.fromPeer(pkt));
    this.auditPolicyApplied();
  }

  // ------------------------------------------------------------------ egress

  fromSandbox(packet: Uint8Array): void {
    this.stats.egressPackets++;
    const p = parsePacket(packet, this.packetStats);
    if (p === null) return this.drop(PumpDrop.malformed);
    if (!this.isOwnAddress(p.src)) return this.drop(PumpDrop.spoofed);
    if (this.isResolver(p.dst)) {
      if (p.protocol === IpProto.udp && p.dstPort === DNS_PORT && p.payloadOffset >= 0) return this.answerDns(p, packet);
      return this.drop(PumpDrop.toResolver);
    }
    const now = this.opts.clock.now();
    const seen = this.flows.observe(p, 'egress', now);
    if (seen.flow === undefined) return this.drop(seen.kind === 'spoofed' ? PumpDrop.spoofed : PumpDrop.untracked);
    let decision = seen.flow.decision;
    if (seen.kind === 'new' || decision === undefined) decision = this.decideNew(seen.flow, now);
    if (decision.effective !== 'allow') {
      this.drop(PumpDrop.denied);
      // Fail fast: the agent sees a reset or an unreachable instead of a timeout.
      const reject = rejectFor(p, packet);
      if (reject) this.opts.tun.write(reject);
      return;
    }
    if (this.opts.device.sendPacket(packet)) return;
    if (this.opts.hostEgress) return this.opts.hostEgress.tun.write(packet);
    // No route out (not an overlay address, no host egress): refuse fast, as a router would.
    this.drop(PumpDrop.noPeer);
    const reject = rejectFor(p, packet);
    if (reject) this.opts.tun.write(reject);
  }

  // ------------------------------------------------------------------ ingress

  fromPeer(packet: Uint8Array): void {
    this.stats.ingressPackets++;
    const p = parsePacket(packet, this.packetStats);
    if (p === null) return this.drop(PumpDrop.malformed);
    const now = this.opts.clock.now();
    const seen = this.flows.observe(p, 'ingress', now);
    if (seen.flow === undefined) return this.drop(seen.kind === 'spoofed' ? PumpDrop.spoofed : PumpDrop.untracked);
    let decision = seen.flow.decision;
    if (seen.kind === 'new' || decision === undefined) decision = this.decideNew(seen.flow, now);
    // Denied ingress is dropped silently: a scanner learns nothing.
    if (decision.effective !== 'allow') return this.drop(PumpDrop.denied);
    this.opts.tun.write(packet);
  }

  // ------------------------------------------------------------------ policy

  private decideNew(flow: Flow, now: number): Decision {
    let decision = evaluate(this.compiled, flow, now, this.allowances);
    if (this.opts.hostEgress && flow.direction === 'egress') decision = this.opts.hostEgress.vet(flow, decision, this.compiled.policy, now);
    this.flows.decide(flow, decision);
    if (decision.record) {
      this.opts.audit({
        type: 'flow.opened',
        flowId: this.flowId(flow),
        ...this.tupleOf(flow),
        ...(this.opts.sandboxId && { sandboxId: this.opts.sandboxId }),
        direction: flow.direction,
        verdict: decision.wouldDeny ? 'would-deny' : decision.verdict === 'allow' ? 'allowed' : 'denied',
        ruleId: decision.ruleId,
      });
    }
    return decision;
  }

  /**
   * Live update: the new policy decides new flows at once; open flows it no longer allows are cut
   * (removed, with a RST to the sandbox for TCP) and their next packet is judged as a new flow.
   */
  setPolicy(policy: Policy, source: PolicySource = { id: this.source.id, version: this.source.version + 1 }): { cut: number } {
    this.compiled = compile(policy);
    this.source = source;
    const cut = this.recheckFlows(this.opts.clock.now());
    this.auditPolicyApplied();
    return { cut };
  }

  private recheckFlows(now: number): number {
    let { cut, changed } = reevaluateFlows(this.compiled, this.flows.values(), now, this.allowances);
    if (this.opts.hostEgress) ({ cut, changed } = this.vetChanges(changed, now));
    const cutSet = new Set(cut.map((c) => c.flow));
    for (const { flow, decision } of changed) if (!cutSet.has(flow)) this.flows.decide(flow, decision);
    for (const { flow } of cut) this.cutFlow(flow);
    return cut.length;
  }

  /** Host egress: re-decided egress flows pass the host-services guard too (and are cut if it says no). */
  private vetChanges(changed: ReturnType<typeof reevaluateFlows<Flow>>['changed'], now: number): ReturnType<typeof reevaluateFlows<Flow>> {
    const egress = this.opts.hostEgress!;
    const cut: typeof changed = [];
    const vetted = changed.map(({ flow, decision }) => {
      const d = flow.direction === 'egress' ? egress.vet(flow, decision, this.compiled.policy, now) : decision;
      const before = flow.decision;
      if ((before === undefined || before.effective === 'allow') && d.effective === 'deny') cut.push({ flow, decision: d });
      return { flow, decision: d };
    });
    return { cut, changed: vetted };
  }

  /**
   * A cut flow is forgotten: its next packet is judged as a new flow under the new policy, so the
   * agent's next segment is answered with a RST (valid, since it is built from that very segment)
   * and the peer's packets are dropped.
   */
  private cutFlow(flow: Flow): void {
    this.flows.remove(flow, CloseReason.removed);
  }

  private auditPolicyApplied(): void {
    const p = this.compiled.policy;
    if (p.mode === 'disabled') return;
    this.opts.audit({
      type: 'policy.applied',
      ...(this.opts.sandboxId && { sandboxId: this.opts.sandboxId }),
      policyId: this.source.id,
      policyVersion: this.source.version,
      mode: p.mode,
      rules: p.egress.length + p.ingress.length,
    });
  }

  /** What the policy would decide for a new egress flow, without sending anything (agent API). */
  checkEgress(remote: IpAddr, protocol: number, dstPort: number): Decision {
    const q = { direction: 'egress', protocol, remote, dstPort } as const;
    const now = this.opts.clock.now();
    const d = evaluate(this.compiled, q, now, this.allowances);
    return this.opts.hostEgress ? this.opts.hostEgress.vet(q, d, this.compiled.policy, now) : d;
  }

  // ------------------------------------------------------------------ time

  /** Expire idle flows (flow.closed events) and re-decide flows when a rule's expiresAt passes. */
  tick(now = this.opts.clock.now()): void {
    const expiry = nextExpiry(this.compiled, this.lastTick);
    if (expiry !== undefined && expiry <= now) this.recheckFlows(now);
    this.lastTick = now;
    this.allowances.prune(now);
    for (const closed of this.flows.expire(now)) {
      const f = closed.flow;
      if (!f.decision?.record) continue;
      this.opts.audit({
        type: 'flow.closed',
        flowId: this.flowId(f),
        ...this.tupleOf(f),
        ...(this.opts.sandboxId && { sandboxId: this.opts.sandboxId }),
        direction: f.direction,
        bytesOut: f.bytesOut,
        bytesIn: f.bytesIn,
        packetsOut: f.packetsOut,
        packetsIn: f.packetsIn,
        durationMs: closed.durationMs,
      });
    }
  }

  // ------------------------------------------------------------------ DNS

  private answerDns(p: ParsedPacket, packet: Uint8Array): void {
    this.stats.dnsQueries++;
    const out = this.dns.handle(packet.subarray(p.payloadOffset, p.length));
    const sandboxId = this.opts.sandboxId ? { sandboxId: this.opts.sandboxId } : {};
    switch (out.kind) {
      case 'drop':
        return this.drop(PumpDrop.malformed);
      case 'answer': {
        const family = out.query.question.type === DnsType.A ? 4 : out.query.question.type === DnsType.AAAA ? 6 : 0;
        const answered = out.addresses.filter((a) => family === 0 || a.family === family);
        this.opts.audit({ type: 'dns.answered', ...sandboxId, name: out.query.question.name, qtype: qtypeName(out.query), answers: answered.map(formatIp) });
        return this.opts.tun.write(buildDnsReplyPacket(p, out.response));
      }
      case 'refused':
        this.opts.audit({ type: 'dns.refused', ...sandboxId, name: out.query.question.name, qtype: qtypeName(out.query), reason: 'no rule allows this name' });
        return this.opts.tun.write(buildDnsReplyPacket(p, out.response));
      case 'upstream':
        void this.resolveUpstream(p, out.query);
        return;
    }
  }

  private async resolveUpstream(p: ParsedPacket, q: DnsQuery): Promise<void> {
    const name = q.question.name;
    const family = q.question.type === DnsType.AAAA ? 6 : 4;
    const sandboxId = this.opts.sandboxId ? { sandboxId: this.opts.sandboxId } : {};
    try {
      const { addresses, ttlSec } = await this.opts.resolveUpstream!(name, family);
      const ttl = this.allowances.record(name, addresses, ttlSec, this.opts.clock.now());
      this.opts.audit({ type: 'dns.answered', ...sandboxId, name, qtype: qtypeName(q), answers: addresses.map(formatIp) });
      this.opts.tun.write(buildDnsReplyPacket(p, buildAddressResponse(q, addresses, ttl)));
    } catch {
      this.opts.audit({ type: 'dns.refused', ...sandboxId, name, qtype: qtypeName(q), reason: 'upstream resolution failed' });
      this.opts.tun.write(buildDnsReplyPacket(p, buildResponse(q, Rcode.servFail)));
    }
  }

  // ------------------------------------------------------------------ helpers

  private isOwnAddress(a: IpAddr): boolean {
    for (const own of this.opts.addresses) if (ipEquals(own, a)) return true;
    return false;
  }

  private isResolver(a: IpAddr): boolean {
    for (const r of this.opts.resolverAddresses) if (ipEquals(r, a)) return true;
    return false;
  }

  private drop(reason: PumpDrop): void {
    this.stats.dropped[reason]++;
  }

  private flowId(f: Flow): string {
    let id = this.flowIds.get(f);
    if (!id) {
      id = `${this.opts.sandboxId ?? 'flow'}-${this.nextFlowId++}`;
      this.flowIds.set(f, id);
    }
    return id;
  }

  /** Source is whoever opened the flow: the sandbox for egress, the peer for ingress. */
  private tupleOf(f: Flow): FiveTuple {
    const proto = PROTO_NAME[f.protocol] ?? (String(f.protocol) as FlowProto);
    const local = { ip: formatIp(f.local), port: f.localPort };
    const remote = { ip: formatIp(f.remote), port: f.remotePort };
    const [src, dst] = f.direction === 'egress' ? [local, remote] : [remote, local];
    return { proto, srcIp: src.ip, srcPort: src.port, dstIp: dst.ip, dstPort: dst.port };
  }
}

function qtypeName(q: DnsQuery): string {
  const t = q.question.type;
  return Object.entries(DnsType).find(([, v]) => v === t)?.[0] ?? String(t);
}
