/**
 * The packet pump between the sandbox's TUN and the WireGuard device.
 *
 *   sandbox (gVisor netstack) --TUN--> fromSandbox: parse, anti-spoof, resolver (DNS), admit, egress policy --> device.sendPacket
 *   peer --WireGuard--> device.onPacket --> fromPeer: parse, admit, ingress policy --> TUN --> sandbox
 *
 * With host egress (src/egress), allowed packets that no WireGuard peer takes go to a second TUN whose
 * other end is the host kernel (forwarding + NAT), and what comes back from it takes the peer path:
 *
 *   fromSandbox: ... egress policy, hostEgress.vet (host services) --> device.sendPacket || hostEgress.tun
 *   host kernel --egress TUN--> fromPeer (admit, flow table, ingress policy) --> TUN --> sandbox
 *
 * admit() is what a packet really does, decided the same way in both directions:
 *   1. link-local-only traffic (broadcast, multicast, IPv6 link-local, neighbour discovery, MLD) is
 *      dropped without an audit line: the overlay is routed point to point, nothing listens there;
 *   2. IPv6 packets with an IPv4-mapped address (::ffff:a.b.c.d, never valid on the wire) are dropped;
 *   3. source-routed packets (IPv6 routing header with segments left, IPv4 LSRR/SSRR) are dropped,
 *      since their destination field is not where they end up;
 *   4. later fragments take their first fragment's decision (fragments.ts); orphans are dropped;
 *   5. everything else crosses the flow table: packets of known flows (and ICMP errors that match
 *      their quote, addresses reversed) take the flow's decision; a new flow asks the policy.
 * Steps 3 and 4 are policy and do not apply in mode "disabled"; 1 and 2 always do.
 *
 * Malformed, spoofed and denied packets are dropped and counted, never thrown. A new flow the
 * policy allows in enforce mode is refused while the audit sink cannot record it (auditReady()
 * false): fail closed, the agent's retry succeeds once the outbox drains. The pump holds no timers
 * of its own: the runtime calls tick() (flow, fragment and rule expiry) about once a second.
 *
 * Time, from the injected Clock, in two bases that are never mixed:
 *   - monotonic ms (clock.monotonic(), as in src/wg/device.ts): the flow table (idle expiry, durationMs),
 *     fragment timeouts, the DNS lookup rate; a wall-clock step cannot expire flows or make durations negative;
 *   - wall ms (clock.now()): the policy, whose rules expire at an absolute `expiresAt`, and the DNS
 *     allowances the policy evaluator checks against the same `now`.
 */
import type { Clock } from '../clock.js';
import type { Tun } from '../tun/tun.js';
import {
  compile,
  evaluate,
  domainAllowed,
  cidrAllows,
  reevaluateFlows,
  reservedDeny,
  nextExpiry,
  formatIp,
  ipEquals,
  isIpv4Mapped,
  specialRange,
  DnsAllowances,
  DISABLED,
  PolicyMode,
  ReservedRuleIds,
  type Cidr,
  type CompiledPolicy,
  type Decision,
  type FlowQuery,
  type IpAddr,
  type Policy,
} from '../policy/index.js';
import type { AuditEventDraft, FiveTuple, FlowProto } from '../audit/events.js';
import { ParseStats } from './stats.js';
import { parsePacket, rejectFor, isLocalOnly, IpProto, type DropReason, type PacketStats, Fragment, type ParsedPacket } from './packet.js';
import { FlowTable, CloseReason, ObserveKind, type Flow, type FlowTableOptions } from './flows.js';
import { FragmentTracker, FragmentVerdict, type FragmentOptions } from './fragments.js';
import {
  DnsResponder,
  DnsType,
  DnsLimiter,
  buildAddressResponse,
  buildDnsReplyPacket,
  buildResponse,
  upstreamFailure,
  Rcode,
  DNS_PORT,
  type DnsDirectory,
  type DnsLimits,
  type DnsQuery,
  type DnsStats,
} from './dns.js';

/** The WireGuard side as the pump sees it (src/wg/device.ts implements it). */
export interface PacketDevice<Peer = unknown> {
  /** Encrypt and send to the peer whose allowed IPs hold the destination; false when none does. */
  sendPacket(packet: Uint8Array): boolean;
  /** Called once by the pump: decrypted packets that passed the peer's allowed-IPs source check go to `onPacket`. */
  attach(onPacket: (packet: Uint8Array, peer: Peer) => void): void;
}

/**
 * Upstream resolution for names a domain rule allows (the I/O edge; node:dns in production).
 * Errors carry node:dns codes: ENODATA (the name has no record of this type: answered NOERROR with
 * no answers), ENOTFOUND (NXDOMAIN); anything else is SERVFAIL.
 */
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
  /**
   * A router (`lattice up --advertise-routes` / `--exit-node`): whether `a` is an address this node routes
   * for (an approved subnet route of its own; on an approved exit node, any non-overlay address). Such an
   * address is a legal source on the TUN (replies the host kernel forwards back) and a legal destination
   * from a peer; the flow table treats it as local, so this node's own policy decides forwarded flows as
   * ingress (peer -> routed host). Absent: only `addresses`.
   */
  routed?: (a: IpAddr) => boolean;
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
  fragments?: FragmentOptions;
  /** Bounds on upstream DNS lookups: in flight at once, and a per-sandbox rate. */
  dnsLimits?: Partial<DnsLimits>;
  /**
   * Whether the audit sink can record an event now (e.g. () => !outbox.isFull()). While false,
   * enforce mode opens no new allowed flow (fail closed). Default: always ready.
   */
  auditReady?: () => boolean;
  /**
   * The overlay's prefixes: like loopback and private ranges, an upstream DNS answer inside them
   * creates no allowance unless a CIDR rule allows the address (DNS rebinding).
   */
  overlayCidrs?: readonly Cidr[];
}

/** Why the pump dropped a packet (or a DNS query): one counter each in `PumpStats.dropped`. */
export const PumpDrop = {
  /** A packet whose IP or transport header does not parse (packet.ts says why: Pump.packetStats). */
  malformed: 'malformed',
  /**
   * A DNS query to the resolver that does not parse (dns.ts says why: Pump.dnsStats): dropped unanswered
   * when even its header is unusable or it is a response, answered FORMERR otherwise.
   */
  dnsMalformed: 'dnsMalformed',
  spoofed: 'spoofed',
  untracked: 'untracked',
  denied: 'denied',
  noPeer: 'noPeer',
  toResolver: 'toResolver',
  /** Broadcast, multicast, link-local, neighbour discovery: never routed over the overlay. */
  localOnly: 'localOnly',
  /** An IPv6 packet with an IPv4-mapped source or destination. */
  nonCanonical: 'nonCanonical',
  /** IPv6 routing header with segments left, or an IPv4 source route option. */
  sourceRouted: 'sourceRouted',
  /** A later fragment whose first fragment was not seen (or has timed out). */
  fragmentOrphan: 'fragmentOrphan',
  /** A later fragment overlapping its first fragment's data (RFC 1858 / RFC 5722). */
  fragmentOverlap: 'fragmentOverlap',
  /** A new flow while the flow table holds only established allowed flows. */
  flowTableFull: 'flowTableFull',
  /** A new allowed flow in enforce mode while the audit sink cannot record it. */
  auditUnavailable: 'auditUnavailable',
  /** A DNS query over the in-flight or rate bound: answered SERVFAIL. */
  dnsThrottled: 'dnsThrottled',
} as const;
export type PumpDrop = (typeof PumpDrop)[keyof typeof PumpDrop];

export interface PumpStats {
  egressPackets: number;
  ingressPackets: number;
  dnsQueries: number;
  dropped: Record<PumpDrop, number>;
  /** Policy decisions on new flows: allow, deny, and would_deny (denied by the policy, let through in audit mode). */
  decisions: { allow: number; deny: number; would_deny: number };
}

const PROTO_NAME: Record<number, FlowProto> = { [IpProto.tcp]: 'tcp', [IpProto.udp]: 'udp', [IpProto.icmp]: 'icmp', [IpProto.icmpv6]: 'icmpv6' };

/** The packet pump of one sandbox (see the drawing above). start() wires it; stats count every drop. */
export class Pump<Peer = unknown> {
  readonly stats: PumpStats;
  /** Why packets counted as PumpDrop.malformed did not parse. */
  readonly packetStats: PacketStats = new ParseStats<DropReason>();
  readonly flows: FlowTable;
  readonly allowances = new DnsAllowances();
  readonly fragments: FragmentTracker<Flow>;
  readonly dnsLimiter: DnsLimiter;
  private compiled: CompiledPolicy;
  private source: PolicySource;
  private readonly dns: DnsResponder;
  private readonly rebindingRanges: ReadonlyArray<{ cidr: Cidr; label: string }>;
  private readonly flowIds = new WeakMap<Flow, string>();
  private nextFlowId = 1;
  /** Wall ms of the last tick: rule expiries after it are due at the next. */
  private lastWallTick: number;

  constructor(private readonly opts: PumpOptions<Peer>) {
    const dropped = {} as Record<PumpDrop, number>;
    for (const r of Object.values(PumpDrop)) dropped[r] = 0;
    this.stats = { egressPackets: 0, ingressPackets: 0, dnsQueries: 0, dropped, decisions: { allow: 0, deny: 0, would_deny: 0 } };
    this.flows = new FlowTable({ ...opts.flows, localAddresses: opts.addresses, routed: opts.routed });
    this.fragments = new FragmentTracker(opts.fragments);
    this.dnsLimiter = new DnsLimiter(opts.dnsLimits, opts.clock.monotonic());
    const host = (a: IpAddr): Cidr => ({ addr: a, bits: a.family === 4 ? 32 : 128 });
    this.rebindingRanges = [
      ...(opts.overlayCidrs ?? []).map((cidr) => ({ cidr, label: 'overlay' })),
      ...opts.addresses.map((a) => ({ cidr: host(a), label: 'the sandbox itself' })),
      ...opts.resolverAddresses.map((a) => ({ cidr: host(a), label: 'the sandbox resolver' })),
    ];
    this.compiled = compile(opts.policy);
    this.source = opts.policySource ?? { id: 'local', version: 1 };
    this.lastWallTick = opts.clock.now();
    this.dns = new DnsResponder({
      directory: opts.directory,
      upstreamAllowed: (name) => opts.resolveUpstream !== undefined && domainAllowed(this.compiled, name, opts.clock.now()),
    });
  }

  /** Why DNS queries counted as PumpDrop.dnsMalformed did not parse. */
  get dnsStats(): DnsStats {
    return this.dns.stats;
  }

  get policy(): Policy {
    return this.compiled.policy;
  }

  /** Start reading the sandbox TUN (and the host-egress TUN), take the device's packets, audit the policy. */
  start(): void {
    this.opts.tun.start((pkt) => this.fromSandbox(pkt));
    this.opts.device.attach((pkt) => this.fromPeer(pkt));
    this.opts.hostEgress?.tun.start((pkt) => this.fromPeer(pkt));
    this.auditPolicyApplied();
  }

  // ------------------------------------------------------------------ egress

  /** One IP packet from the sandbox (hostile input: dropped and counted, never thrown). */
  fromSandbox(packet: Uint8Array): void {
    this.stats.egressPackets++;
    const p = parsePacket(packet, this.packetStats);
    if (p === null) return this.drop(PumpDrop.malformed);
    if (!this.isOwnAddress(p.src)) return this.drop(PumpDrop.spoofed);
    if (this.isResolver(p.dst)) return this.toResolver(p, packet);
    const decision = this.admit(p, 'egress');
    if (decision === undefined) return;
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

  /** One IP packet from a WireGuard peer or the host-egress TUN (hostile input: dropped and counted). */
  fromPeer(packet: Uint8Array): void {
    this.stats.ingressPackets++;
    const p = parsePacket(packet, this.packetStats);
    if (p === null) return this.drop(PumpDrop.malformed);
    const decision = this.admit(p, 'ingress');
    if (decision === undefined) return;
    // Denied ingress is dropped silently: a scanner learns nothing.
    if (decision.effective !== 'allow') return this.drop(PumpDrop.denied);
    this.opts.tun.write(packet);
  }

  // ------------------------------------------------------------------ admission (both directions)

  /** The checks of the opening comment, then the packet's flow decision; undefined = dropped and counted. */
  private admit(p: ParsedPacket, direction: 'egress' | 'ingress'): Decision | undefined {
    if (isLocalOnly(p)) return this.drop(PumpDrop.localOnly);
    if (p.family === 6 && (isIpv4Mapped(p.src) || isIpv4Mapped(p.dst))) return this.drop(PumpDrop.nonCanonical);
    const enforcing = this.compiled.mode !== PolicyMode.disabled;
    if (p.sourceRouted && enforcing) return this.drop(PumpDrop.sourceRouted);
    const monoMs = this.opts.clock.monotonic();
    if (p.fragment === Fragment.later) return this.followFragment(p, direction, monoMs);
    const seen = this.flows.observe(p, direction, monoMs);
    if (seen.flow === undefined) {
      return this.drop(seen.kind === ObserveKind.spoofed ? PumpDrop.spoofed : seen.kind === ObserveKind.full ? PumpDrop.flowTableFull : PumpDrop.untracked);
    }
    let decision = seen.flow.decision;
    if (seen.kind === ObserveKind.new || decision === undefined) {
      decision = this.decideNew(seen.flow, this.opts.clock.now());
      if (decision === undefined) return undefined;
    }
    if (p.fragment === Fragment.first) this.fragments.first(p, seen.flow, monoMs);
    return decision;
  }

  /** A later fragment: its first fragment's flow decides (disabled mode: everything to our address passes). */
  private followFragment(p: ParsedPacket, direction: 'egress' | 'ingress', monoMs: number): Decision | undefined {
    const out = direction === 'egress';
    if (!out && !this.isOwnAddress(p.dst)) return this.drop(PumpDrop.spoofed);
    if (this.compiled.mode === PolicyMode.disabled) return DISABLED;
    const r = this.fragments.later(p, monoMs);
    if (r.verdict === FragmentVerdict.overlap) return this.drop(PumpDrop.fragmentOverlap);
    const flow = r.verdict === FragmentVerdict.follow && this.flows.get(r.value.key) === r.value ? r.value : undefined;
    if (flow === undefined || flow.decision === undefined) {
      this.drop(PumpDrop.fragmentOrphan);
      // Audit mode blocks nothing: an orphan passes there, counted.
      return this.compiled.mode === PolicyMode.audit ? reservedDeny(this.compiled, ReservedRuleIds.defaultDeny) : undefined;
    }
    this.flows.account(flow, out, monoMs, p.length);
    return flow.decision;
  }

  // ------------------------------------------------------------------ policy

  /** A new flow's decision at wall time `now` (ms since the epoch: rule expiry is absolute). */
  private decideNew(flow: Flow, now: number): Decision | undefined {
    let decision = flow.forced !== undefined ? reservedDeny(this.compiled, flow.forced) : evaluate(this.compiled, flow, now, this.allowances);
    if (this.opts.hostEgress && flow.direction === 'egress' && flow.forced === undefined) decision = this.opts.hostEgress.vet(flow, decision, this.compiled.policy, now);
    // Fail closed: in enforce mode no allowed flow opens unless its record can be kept.
    if (decision.record && decision.effective === 'allow' && this.compiled.mode === PolicyMode.enforce && this.opts.auditReady?.() === false) {
      this.flows.discard(flow);
      return this.drop(PumpDrop.auditUnavailable);
    }
    this.flows.decide(flow, decision);
    this.stats.decisions[decision.wouldDeny ? 'would_deny' : decision.effective === 'allow' ? 'allow' : 'deny']++;
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
    let { cut, changed } = reevaluateFlows(this.compiled, this.policyFlows(), now, this.allowances);
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
   * Routing changed under open flows (a route withdrawn, rejected or moved to another peer): cut every
   * flow whose remote address `gone(remote)` says lost its next hop. As with a policy cut, the flow is
   * forgotten, so the agent's next segment is judged anew (no route: refused with a RST/unreachable).
   * Returns how many flows were cut.
   */
  cutRoutes(gone: (remote: IpAddr) => boolean): number {
    // On a router, `local` of a forwarded flow is the routed host: its own withdrawn route cuts it too.
    const cut = [...this.flows.values()].filter((f) => gone(f.remote) || (this.opts.routed !== undefined && gone(f.local)));
    for (const f of cut) this.cutFlow(f);
    return cut.length;
  }

  /** Flows the policy decides (pseudo-flows the table denies itself are never re-decided). */
  private *policyFlows(): Generator<Flow> {
    for (const f of this.flows.values()) if (f.forced === undefined) yield f;
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
    // Mode "disabled" is recorded too: the audit trail must show when enforcement was turned off.
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

  /**
   * Expire idle flows (flow.closed events) and fragments at monotonic time `monoMs` (ms, the Clock's
   * monotonic base; Number.MAX_SAFE_INTEGER closes every flow, at shutdown), and re-decide flows when a
   * rule's expiresAt has passed on the wall clock.
   */
  tick(monoMs = this.opts.clock.monotonic()): void {
    const wallMs = this.opts.clock.now();
    const expiry = nextExpiry(this.compiled, this.lastWallTick);
    if (expiry !== undefined && expiry <= wallMs) this.recheckFlows(wallMs);
    this.lastWallTick = wallMs;
    this.allowances.prune(wallMs);
    this.fragments.expire(monoMs);
    for (const closed of this.flows.expire(monoMs)) {
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
        // Whole ms: the monotonic clock (performance.now()) is fractional, the audit field a uint.
        durationMs: Math.round(closed.durationMs),
      });
    }
  }

  // ------------------------------------------------------------------ DNS

  /**
   * Packets to the resolver address: DNS over UDP is answered; everything else (DNS over TCP
   * included, RFC 7766) is refused at once, a TCP RST or an ICMP unreachable, so a client that
   * falls back to TCP fails fast instead of hanging.
   */
  private toResolver(p: ParsedPacket, packet: Uint8Array): void {
    if (p.protocol === IpProto.udp && p.dstPort === DNS_PORT && p.payloadOffset >= 0 && p.fragment === Fragment.none) return this.answerDns(p, packet);
    this.drop(PumpDrop.toResolver);
    const reject = rejectFor(p, packet);
    if (reject) this.opts.tun.write(reject);
  }

  private answerDns(p: ParsedPacket, packet: Uint8Array): void {
    this.stats.dnsQueries++;
    const out = this.dns.handle(packet.subarray(p.payloadOffset, p.length));
    const sandboxId = this.opts.sandboxId ? { sandboxId: this.opts.sandboxId } : {};
    switch (out.kind) {
      case 'drop':
        return this.drop(PumpDrop.dnsMalformed);
      case 'formErr':
        this.drop(PumpDrop.dnsMalformed);
        return this.opts.tun.write(buildDnsReplyPacket(p, out.response));
      case 'answer': {
        const family = out.query.question.type === DnsType.A ? 4 : out.query.question.type === DnsType.AAAA ? 6 : 0;
        const answered = out.addresses.filter((a) => family === 0 || a.family === family);
        this.opts.audit({ type: 'dns.answered', ...sandboxId, name: out.query.question.name, qtype: qtypeName(out.query), answers: answered.map(formatIp) });
        return this.opts.tun.write(buildDnsReplyPacket(p, out.response));
      }
      case 'notAllowedNxDomain':
        this.opts.audit({ type: 'dns.refused', ...sandboxId, name: out.query.question.name, qtype: qtypeName(out.query), reason: 'no rule allows this name' });
        return this.opts.tun.write(buildDnsReplyPacket(p, out.response));
      case 'upstream':
        // Bounded: lookups in flight and a per-sandbox rate; the excess is refused with SERVFAIL (RFC 1035: "unable to process").
        if (!this.dnsLimiter.tryStart(this.opts.clock.monotonic())) {
          this.drop(PumpDrop.dnsThrottled);
          return this.opts.tun.write(buildDnsReplyPacket(p, buildResponse(out.query, Rcode.servFail)));
        }
        void this.resolveUpstream(p, out.query).finally(() => this.dnsLimiter.finish());
        return;
    }
  }

  /**
   * Resolve an allowed name upstream and answer. Answers in loopback, link-local, private, overlay,
   * multicast and the other special ranges (special.ts) create no allowance and are left out of the
   * answer unless a CIDR rule allows the address itself; each such refusal is audited with the name
   * and the address (DNS rebinding). Rcodes (RFC 1035 4.1.1, RFC 2308): the name has no record of
   * this type -> NOERROR with no answers (NODATA); no such name -> NXDOMAIN; failure -> SERVFAIL.
   */
  private async resolveUpstream(p: ParsedPacket, q: DnsQuery): Promise<void> {
    const name = q.question.name;
    const family = q.question.type === DnsType.AAAA ? 6 : 4;
    const sandboxId = this.opts.sandboxId ? { sandboxId: this.opts.sandboxId } : {};
    const qtype = qtypeName(q);
    let result: { addresses: IpAddr[]; ttlSec: number };
    try {
      result = await this.opts.resolveUpstream!(name, family);
    } catch (err) {
      const failure = upstreamFailure(err);
      if (failure.rcode === Rcode.noError) {
        this.opts.audit({ type: 'dns.answered', ...sandboxId, name, qtype, answers: [] });
      } else {
        this.opts.audit({ type: 'dns.refused', ...sandboxId, name, qtype, reason: failure.reason });
      }
      this.opts.tun.write(buildDnsReplyPacket(p, buildResponse(q, failure.rcode)));
      return;
    }
    const now = this.opts.clock.now();
    const kept: IpAddr[] = [];
    for (const a of result.addresses) {
      if (a.family !== family) continue;
      const special = specialRange(a, this.rebindingRanges);
      if (special !== undefined && !cidrAllows(this.compiled, a, now)) {
        this.opts.audit({ type: 'dns.refused', ...sandboxId, name, qtype, reason: `answer ${formatIp(a)} is ${special} and no CIDR rule allows it (DNS rebinding)` });
        continue;
      }
      kept.push(a);
    }
    const ttl = this.allowances.record(name, kept, result.ttlSec, now);
    this.opts.audit({ type: 'dns.answered', ...sandboxId, name, qtype, answers: kept.map(formatIp) });
    this.opts.tun.write(buildDnsReplyPacket(p, buildAddressResponse(q, kept, ttl)));
  }

  // ------------------------------------------------------------------ helpers

  private isOwnAddress(a: IpAddr): boolean {
    for (const own of this.opts.addresses) if (ipEquals(own, a)) return true;
    return this.opts.routed?.(a) === true;
  }

  private isResolver(a: IpAddr): boolean {
    for (const r of this.opts.resolverAddresses) if (ipEquals(r, a)) return true;
    return false;
  }

  private drop(reason: PumpDrop): undefined {
    this.stats.dropped[reason]++;
    return undefined;
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
