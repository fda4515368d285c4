/**
 * The exit node's DNS forwarder: `lattice up --exit-node` answers DNS on its overlay IPv4 address,
 * UDP 53, for the sandboxes that leave through it (src/dataplane/dns-tunnel.ts asks here through the
 * tunnel). Names are resolved with this host's resolver (/etc/resolv.conf), or `lattice up --dns-upstream`.
 *
 *   sandbox launcher --WireGuard--> exit node pump (its policy judges the UDP/53 flow as ingress)
 *     --TUN--> this socket (10.77.0.5:53) --node:dns--> the exit node's resolver
 *
 * What it answers (the decision is dataplane/dns.ts DnsResponder's, with every name allowed upstream):
 * A and AAAA queries are resolved upstream and answered with the addresses and the TTL; other types get
 * NOERROR without records; names in the overlay zone (".lattice") are NXDOMAIN here (each launcher
 * answers those itself); malformed queries FORMERR or nothing (dataplane/dns.ts); over the lookup bound
 * (DnsLimiter: in flight and a rate, for all askers together) SERVFAIL. Which names a sandbox may look up
 * is decided at its own launcher before the query is sent; which answers it may use, too (DNS rebinding).
 *
 * Reachability: the socket is bound to the overlay address, and the router table's input chain
 * (src/router/nftables.ts) drops packets from the TUN to any other address of this host; peers reach it
 * only as far as this node's ingress policy allows UDP 53 from them.
 * Errors: ExitDnsError (EEXIT_DNS_BIND) when the address and port cannot be bound.
 */
import dgram from 'node:dgram';
import type { Logger } from 'pino';
import { LatticeError } from '../errors.js';
import { DNS_PORT, DnsLimiter, DnsType, DnsResponder, MapDirectory, Rcode, buildAddressResponse, buildResponse, upstreamFailure, type DnsLimits, type DnsQuery } from '../dataplane/dns.js';
import type { UpstreamResolver } from '../dataplane/pump.js';

export class ExitDnsError extends LatticeError {
  override readonly name = 'ExitDnsError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('EEXIT_DNS_BIND', message, options);
  }
}

/** Bounds for all askers together (an exit node serves many sandboxes, each bounded at its launcher too). */
export const EXIT_DNS_LIMITS: Readonly<DnsLimits> = Object.freeze({ maxInFlight: 256, perSecond: 500, burst: 1000 });

export interface ExitDnsOptions {
  /** This node's overlay IPv4 address (no prefix length). */
  address: string;
  /** Port (default 53; tests may pick another). */
  port?: number;
  resolve: UpstreamResolver;
  /** Monotonic ms (Clock.monotonic), for the rate bound. */
  monotonic: () => number;
  limits?: Partial<DnsLimits>;
  log: Logger;
}

export interface ExitDns {
  readonly counters: { queries: number; upstream: number; throttled: number; failed: number };
  close(): Promise<void>;
}

/**
 * What to send back for one message: a response now, a lookup first, or nothing. Pure (the responder
 * and limiter hold the state); `now` is monotonic ms.
 */
export function exitDnsStep(responder: DnsResponder, limiter: DnsLimiter, message: Uint8Array, now: number): { reply: Uint8Array } | { lookup: DnsQuery } | { throttled: Uint8Array } | null {
  const out = responder.handle(message);
  switch (out.kind) {
    case 'drop':
      return null;
    case 'answer':
    case 'formErr':
    case 'notAllowedNxDomain':
      return { reply: out.response };
    case 'upstream':
      if (!limiter.tryStart(now)) return { throttled: buildResponse(out.query, Rcode.servFail) };
      return { lookup: out.query };
  }
}

/** Bind the forwarder on `address`:53 and serve until close(). Errors: ExitDnsError. */
export async function openExitDns(o: ExitDnsOptions): Promise<ExitDns> {
  const responder = new DnsResponder({ directory: new MapDirectory(), upstreamAllowed: () => true });
  const limiter = new DnsLimiter({ ...EXIT_DNS_LIMITS, ...o.limits }, o.monotonic());
  const counters = { queries: 0, upstream: 0, throttled: 0, failed: 0 };
  const sock = dgram.createSocket({ type: 'udp4' });
  const port = o.port ?? DNS_PORT;
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind({ address: o.address, port, exclusive: true }, () => {
      sock.off('error', reject);
      resolve();
    });
  }).catch((err: unknown) => {
    sock.close();
    throw new ExitDnsError(`cannot answer DNS on ${o.address}:${port} (${(err as Error).message}); stop what holds UDP port ${port} on all addresses, or run the exit node without it`, { cause: err });
  });
  // Send errors (the peer went away) are not ours to throw: counted.
  sock.on('error', (err) => o.log.debug({ err: err.message }, 'exit DNS socket error'));
  const send = (b: Uint8Array, to: dgram.RemoteInfo) => sock.send(b, to.port, to.address, () => undefined);
  sock.on('message', (msg, rinfo) => {
    counters.queries++;
    const step = exitDnsStep(responder, limiter, new Uint8Array(msg.buffer, msg.byteOffset, msg.length), o.monotonic());
    if (step === null) return;
    if ('reply' in step) return send(step.reply, rinfo);
    if ('throttled' in step) {
      counters.throttled++;
      return send(step.throttled, rinfo);
    }
    counters.upstream++;
    const q = step.lookup;
    void o.resolve(q.question.name, q.question.type === DnsType.AAAA ? 6 : 4)
      .then(
        (r) => buildAddressResponse(q, r.addresses, r.ttlSec),
        (err: unknown) => {
          const f = upstreamFailure(err);
          if (f.rcode === Rcode.servFail) counters.failed++;
          return buildResponse(q, f.rcode);
        },
      )
      .then((b) => send(b, rinfo))
      .finally(() => limiter.finish());
  });
  o.log.info({ address: o.address, port }, 'exit node: answering DNS for the sandboxes that leave through it');
  return {
    counters,
    close: () =>
      new Promise<void>((resolve) => {
        o.log.info(counters, 'exit node DNS closed');
        sock.close(() => resolve());
      }),
  };
}
