/**
 * Upstream DNS through the WireGuard tunnel: the resolver of a sandbox started with `--exit-node`.
 * The launcher asks the exit node's DNS forwarder (src/host/dns.ts, on the exit node's overlay IPv4
 * address, UDP 53) instead of its own host's resolver, so names that exist only on the exit node's side
 * resolve, and no lookup leaks to the launcher's local network.
 *
 *   pump: a domain rule allows the name -> resolve(name, family)
 *     -> UDP/IP packet  src <sandbox overlay IPv4>:<random port 10000-15999>  dst <exit node>:53
 *     -> device.sendPacket (encrypted to the exit node; its own pump judges the flow as ingress)
 *   device -> take(packet): a reply to a pending query (source <exit node>:53, our port, same id and
 *     question) is consumed here and never reaches the sandbox; every other packet goes on to the pump.
 *
 * The answer resolves the pump's UpstreamResolver promise, so the pump pins the flows the sandbox may
 * open exactly as for a local lookup (DnsAllowances with the TTL, DNS-rebinding checks).
 *
 * Source ports are drawn below gVisor's ephemeral range (16000 and up), with a random query id (RFC 5452
 * 9.2: both random, and the reply must match address, port, id and question). An agent that binds one of
 * those ports itself and talks to the exit node's port 53 would lose the replies it collides with: it
 * gains nothing (the launcher reads them, the sandbox never sees them).
 *
 * Failures carry node:dns codes where there is one (dataplane/dns.ts upstreamFailure maps them to rcodes):
 * ENOTFOUND (NXDOMAIN), ENODATA (NOERROR, no address of this family); every other failure is EEXIT_DNS
 * (SERVFAIL for the agent) and its message says which: the forwarder's SERVFAIL or REFUSED, no reply
 * after every try (`timeout`), no exit node in the directory or no route to it.
 */
import type { Timers } from '../backoff.js';
import { LatticeError } from '../errors.js';
import { ipEquals, type IpAddr } from '../net/addr.js';
import { IpProto, parsePacket, buildUdp } from './packet.js';
import { DNS_PORT, DnsType, Rcode, buildQuery, parseResponse } from './dns.js';
import type { PacketDevice, UpstreamResolver } from './pump.js';

/** First and last source port of tunnel queries: below gVisor's first ephemeral port (16000). */
export const TUNNEL_PORT_MIN = 10000;
export const TUNNEL_PORT_MAX = 15999;

/** A tunnel lookup that failed; `code` is a node:dns code (see the top of this file). */
export class TunnelDnsError extends LatticeError {
  override readonly name = 'TunnelDnsError';
  constructor(
    override readonly code: 'ENOTFOUND' | 'ENODATA' | 'EEXIT_DNS',
    message: string,
    /** No reply came in time (worth another try). */
    readonly timeout = false,
  ) {
    super(code, message);
  }
}

export interface TunnelResolverOptions {
  /** Encrypt and send one IP packet to the peer holding its destination (Device.sendPacket); false: no peer. */
  send: (packet: Uint8Array) => boolean;
  /** The sandbox's own overlay IPv4 address: the source of the queries. */
  source: IpAddr;
  /** The resolver to ask (the exit node's overlay IPv4 address), read at each query; undefined: none now. */
  server: () => IpAddr | undefined;
  timers: Timers;
  /** Uniform random integer in [0, n): query ids and source ports. */
  random: (n: number) => number;
  /** Wait for one reply, in ms (default 2500). */
  timeoutMs?: number;
  /** Queries per lookup, each with a new port and id (default 2). */
  tries?: number;
}

interface Pending {
  readonly server: IpAddr;
  readonly port: number;
  readonly id: number;
  readonly name: string;
  readonly type: number;
  settle(reply: { rcode: number; addresses: IpAddr[]; ttlSec: number } | TunnelDnsError): void;
}

/** Counters: queries sent, replies taken, and replies dropped as not matching a pending query. */
export interface TunnelDnsCounters {
  sent: number;
  answered: number;
  timeouts: number;
  mismatched: number;
}

/** The tunnel resolver of one sandbox (see the top of this file). */
export class TunnelResolver {
  readonly counters: TunnelDnsCounters = { sent: 0, answered: 0, timeouts: 0, mismatched: 0 };
  /** Pending queries by source port. */
  private readonly pending = new Map<number, Pending>();
  private closed = false;

  constructor(private readonly o: TunnelResolverOptions) {
    if (o.source.family !== 4) throw new RangeError('the tunnel resolver asks from an IPv4 overlay address');
  }

  /** The pump's UpstreamResolver: A (family 4) or AAAA (family 6) records of `name`, through the tunnel. */
  readonly resolve: UpstreamResolver = async (name, family) => {
    const tries = this.o.tries ?? 2;
    for (let i = 1; ; i++) {
      const r = await this.once(name, family === 4 ? DnsType.A : DnsType.AAAA);
      if (r instanceof TunnelDnsError) {
        if (r.timeout && i < tries) continue;
        throw r;
      }
      if (r.rcode === Rcode.nxDomain) throw new TunnelDnsError('ENOTFOUND', `${name}: no such name (exit node)`);
      if (r.rcode === Rcode.refused) throw new TunnelDnsError('EEXIT_DNS', `${name}: the exit node refused the query`);
      if (r.rcode !== Rcode.noError) throw new TunnelDnsError('EEXIT_DNS', `${name}: the exit node answered rcode ${r.rcode}`);
      if (r.addresses.length === 0) throw new TunnelDnsError('ENODATA', `${name}: no IPv${family} address (exit node)`);
      return { addresses: r.addresses, ttlSec: r.ttlSec };
    }
  };

  /** One query and its reply (or a failure), never rejects. */
  private once(name: string, type: number): Promise<{ rcode: number; addresses: IpAddr[]; ttlSec: number } | TunnelDnsError> {
    const server = this.o.server();
    if (this.closed || server === undefined) return Promise.resolve(new TunnelDnsError('EEXIT_DNS', 'no exit node to resolve through (is it in the directory?)'));
    let port = 0;
    for (let n = 0; n < 8 && (port === 0 || this.pending.has(port)); n++) port = TUNNEL_PORT_MIN + this.o.random(TUNNEL_PORT_MAX - TUNNEL_PORT_MIN + 1);
    if (this.pending.has(port)) return Promise.resolve(new TunnelDnsError('EEXIT_DNS', 'too many tunnel DNS queries in flight'));
    const id = this.o.random(0x10000);
    return new Promise((resolve) => {
      let cancel = () => {};
      const p: Pending = {
        server,
        port,
        id,
        name: name.toLowerCase().replace(/\.$/, ''),
        type,
        settle: (r) => {
          if (this.pending.get(port) !== p) return;
          this.pending.delete(port);
          cancel();
          resolve(r);
        },
      };
      this.pending.set(port, p);
      cancel = this.o.timers.after(this.o.timeoutMs ?? 2500, () => {
        if (this.pending.get(port) === p) this.counters.timeouts++;
        p.settle(new TunnelDnsError('EEXIT_DNS', `${name}: no answer from the exit node`, true));
      });
      const packet = buildUdp({ src: this.o.source, dst: server, srcPort: port, dstPort: DNS_PORT, payload: buildQuery(id, name, type) });
      this.counters.sent++;
      if (!this.o.send(packet)) p.settle(new TunnelDnsError('EEXIT_DNS', 'no WireGuard peer holds the exit node\'s address'));
    });
  }

  /**
   * A packet from the device: true when it is the reply to a pending query (consumed), false for every
   * other packet (the caller passes it on). Hostile input: a malformed or mismatched reply is counted and
   * left to the pump (which drops what no flow expects).
   */
  take(packet: Uint8Array): boolean {
    // Cheap first look (this runs for every inbound packet): IPv4, UDP, something pending.
    if (this.pending.size === 0 || packet.length < 28 || packet[0] >> 4 !== 4 || packet[9] !== IpProto.udp) return false;
    const p = parsePacket(packet);
    if (p === null || p.srcPort !== DNS_PORT || p.payloadOffset < 0 || !ipEquals(p.dst, this.o.source)) return false;
    const q = this.pending.get(p.dstPort);
    if (q === undefined || !ipEquals(p.src, q.server)) return false;
    const r = parseResponse(packet.subarray(p.payloadOffset, p.length));
    if (r === null || r.id !== q.id || r.question === undefined || r.question.name !== q.name || r.question.type !== q.type) {
      // Addressed to our pending port but not our answer: swallowed (it is no flow of the sandbox's).
      this.counters.mismatched++;
      return true;
    }
    this.counters.answered++;
    const records = r.answers.filter((a) => a.type === q.type && a.addr !== undefined);
    const ttlSec = records.length ? Math.min(...records.map((a) => a.ttlSec)) : 0;
    q.settle({ rcode: r.rcode, addresses: records.map((a) => a.addr!), ttlSec });
    return true;
  }

  /** The pump's device: packets out unchanged; inbound replies to our queries taken before the pump sees them. */
  wrap<Peer>(device: PacketDevice<Peer>): PacketDevice<Peer> {
    return {
      sendPacket: (packet) => device.sendPacket(packet),
      attach: (onPacket) => device.attach((packet, peer) => {
        if (!this.take(packet)) onPacket(packet, peer);
      }),
    };
  }

  /** Fail every pending query (ENOEXIT) and refuse new ones. */
  close(): void {
    this.closed = true;
    for (const p of [...this.pending.values()]) p.settle(new TunnelDnsError('EEXIT_DNS', 'the sandbox network is closing'));
  }
}
