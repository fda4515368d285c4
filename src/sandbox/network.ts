import { randomInt } from 'node:crypto';
import { Resolver } from 'node:dns/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../clock.js';
import { UdpBind } from '../conn/udp.js';
import type { Bind } from '../conn/bind.js';
import { createPathBind } from '../nat/connectivity.js';
import type { PathBind } from '../nat/path-bind.js';
import { LatticeError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import { Device } from '../wg/device.js';
import { IntervalTicker } from '../conn/ticker.js';
import type { Peer, PeerConfig } from '../wg/peer.js';
import type { Tun } from '../tun/tun.js';
import type { InterfaceConfig } from '../wg/config.js';
import { setupSandboxNetwork } from '../netns/sandbox-net.js';
import { Pump, type AuditSink, type PolicySource, type UpstreamResolver } from '../dataplane/pump.js';
import { MapDirectory, type DnsLimits } from '../dataplane/dns.js';
import { TunnelResolver } from '../dataplane/dns-tunnel.js';
import { systemTimers } from '../backoff.js';
import { formatCidr } from '../net/addr.js';
import { formatIp, parseIp, type Cidr, type IpAddr, type Policy } from '../policy/index.js';
import { openHostEgress } from '../egress/host.js';
import type { SandboxNetwork } from './lifecycle.js';
import { Teardown } from './teardown.js';

/**
 * The next hops of the sandbox's default routes. A TUN has no link layer, so nothing ever answers
 * them: they exist because runsc refuses a default route without a gateway. Link-local addresses
 * cannot collide with an overlay peer. The IPv4 one also serves DNS (answered by the launcher).
 */
export const SANDBOX_GATEWAY = '169.254.77.1';
export const SANDBOX_GATEWAY6 = 'fe80::77:1';
export const SANDBOX_RESOLVER = SANDBOX_GATEWAY;

export interface WgNetworkOptions {
  iface: InterfaceConfig;
  peers: PeerConfig[];
  policy: Policy;
  policySource?: PolicySource;
  /** Overlay names the sandbox can resolve (`<name>.<namespace>.lattice`). */
  names?: Iterable<readonly [string, readonly IpAddr[]]>;
  /** The overlay's prefixes (see PumpOptions.overlayCidrs): DNS answers inside them create no allowance. */
  overlayCidrs?: readonly Cidr[];
  /** Bounds on upstream DNS lookups (see PumpOptions.dnsLimits); unset keep the defaults. */
  dnsLimits?: Partial<DnsLimits>;
  /** Bound of the pump's flow table (`--max-flows`; see FlowTableOptions.maxFlows); unset keeps the default. */
  maxFlows?: number;
  audit: AuditSink;
  /** Whether `audit` can record now; while false, enforce mode opens no new allowed flow (see Pump). */
  auditReady?: () => boolean;
  log: Logger;
  clock?: Clock;
  resolveUpstream?: UpstreamResolver;
  /**
   * `--exit-node`: upstream DNS goes through the tunnel to `server()` (the exit node's overlay IPv4
   * address, read at each lookup), not to this host's resolver (src/dataplane/dns-tunnel.ts).
   */
  tunnelDns?: { server: () => IpAddr | undefined };
  /**
   * NAT traversal: the device sends through a PathBind (STUN demultiplexed from WireGuard on the same
   * socket, plus relay/ICE links); the caller attaches the peer connectivity to `pathBind`.
   */
  natTraversal?: boolean;
  /**
   * Host egress: allowed packets to addresses no peer holds leave through the host's network,
   * source-NATed (IPv4 only; the sandbox's IPv4 overlay address is routed on the host). Without it
   * they are refused (TCP reset / ICMP unreachable).
   */
  hostEgress?: boolean;
  /**
   * Where the TUN lives. Default: a netns of its own for runsc (src/netns/sandbox-net.ts), with a
   * resolv.conf mount naming the pump's resolver. `lattice up` passes the host's namespace instead
   * (src/host/link.ts); then no resolv.conf is written.
   */
  placeTun?: TunPlacement;
  /** A router's forwarded addresses (see PumpOptions.routed; `lattice up --advertise-routes`). */
  routed?: (a: IpAddr) => boolean;
}

/** A TUN carrying `cidrs` (the node's own host prefixes), placed and configured; close() removes it. */
export type TunPlacement = (o: { id: string; cidrs: readonly string[]; mtu: number }) => Promise<PlacedTun>;

export interface PlacedTun {
  tun: Tun;
  netnsName?: string;
  netnsPath?: string;
  close(): Promise<void>;
}

/** The default placement: the sandbox's own netns (lo + TUN + default routes via the link-local gateways). */
export const sandboxNetnsPlacement: TunPlacement = async ({ id, cidrs, mtu }) => {
  const net = await setupSandboxNetwork({ id, overlayAddrs: cidrs, gateway: SANDBOX_GATEWAY, gateway6: SANDBOX_GATEWAY6, mtu });
  return { tun: net.tun, netnsName: net.netnsName, netnsPath: net.netnsPath, close: () => net.teardown() };
};

/** A running sandbox network: what runSandbox needs, plus the live pieces for updates and status. */
export interface WgSandboxNetwork extends SandboxNetwork {
  pump: Pump<Peer>;
  device: Device;
  directory: MapDirectory;
  listenPort: number;
  /** Set when natTraversal was asked for. */
  pathBind?: PathBind;
}

/** Host addresses (/32, /128) of the interface's Address entries: the sandbox owns exactly these. */
export function sandboxAddresses(iface: InterfaceConfig): { cidrs: string[]; addrs: IpAddr[] } {
  const cidrs: string[] = [];
  const addrs: IpAddr[] = [];
  for (const a of iface.addresses) {
    const host = a.split('/')[0]!;
    const parsed = parseIp(host);
    if (!parsed) throw new LatticeError('EWG_CONFIG', `Address ${a} is not an IP address with a prefix length`);
    addrs.push(parsed);
    cidrs.push(`${host}/${parsed.family === 4 ? 32 : 128}`);
  }
  if (addrs.length === 0) throw new LatticeError('EWG_CONFIG', 'the WireGuard config has no Address; add one under [Interface], e.g. Address = 10.77.0.2/32');
  return { cidrs, addrs };
}

/**
 * Build the sandbox's network: netns + TUN (src/netns), our WireGuard device on a UDP socket in the
 * launcher's netns, and the pump (policy, flows, DNS, audit) between them.
 */
export function wgSandboxNetwork(opts: WgNetworkOptions): (id: string, dir: string) => Promise<WgSandboxNetwork> {
  return async (id, dir) => {
    const clock = opts.clock ?? systemClock;
    const { cidrs, addrs } = sandboxAddresses(opts.iface);
    const mtu = opts.iface.mtu ?? 1420;
    const v4 = addrs.find((a) => a.family === 4);
    if (opts.hostEgress && !v4) throw new LatticeError('EWG_CONFIG', 'host egress needs an IPv4 Address in the WireGuard config (host egress is IPv4 only)');
    // Each piece is registered as it is opened: a failure at any later step closes what is open.
    const t = new Teardown(opts.log);
    return t.guard(async () => {
      const egress = opts.hostEgress ? t.adopt('host-egress', await openHostEgress({ id, log: opts.log, address: formatIp(v4!) }), (e) => e.close()) : undefined;
      const net = t.adopt('netns', await (opts.placeTun ?? sandboxNetnsPlacement)({ id, cidrs, mtu }), (n) => n.close());
      let bind: Bind;
      let pathBind: PathBind | undefined;
      try {
        bind = await UdpBind.open({ port: opts.iface.listenPort ?? 0 });
      } catch (err) {
        throw new LatticeError('EWG_BIND', `cannot bind WireGuard UDP port ${opts.iface.listenPort ?? 0}: ${(err as Error).message}; pick another ListenPort`, { cause: err });
      }
      if (opts.natTraversal) bind = pathBind = createPathBind(bind);
      // The device owns the bind from here: Device.close() closes it.
      const device = t.adopt('device', new Device({ privateKey: opts.iface.privateKey, bind, clock, mtu, ticker: new IntervalTicker(100) }), (d) => d.close());
      for (const p of opts.peers) device.addPeer(p);
      const tunnelDns = opts.tunnelDns && v4 ? new TunnelResolver({ send: (pkt) => device.sendPacket(pkt), source: v4, server: opts.tunnelDns.server, timers: systemTimers({ unref: true }), random: randomInt }) : undefined;
      if (tunnelDns) t.defer('tunnel-dns', () => tunnelDns.close());
      const directory = new MapDirectory(opts.names ?? []);
      const pump = new Pump({
        tun: net.tun,
        device: tunnelDns ? tunnelDns.wrap(device) : device,
        clock,
        addresses: addrs,
        resolverAddresses: [parseIp(SANDBOX_RESOLVER)!],
        policy: opts.policy,
        policySource: opts.policySource,
        directory,
        overlayCidrs: opts.overlayCidrs,
        dnsLimits: opts.dnsLimits,
        ...(opts.maxFlows !== undefined && { flows: { maxFlows: opts.maxFlows } }),
        resolveUpstream: tunnelDns?.resolve ?? opts.resolveUpstream ?? systemResolver(),
        audit: opts.audit,
        auditReady: opts.auditReady,
        sandboxId: id,
        ...(opts.routed && { routed: opts.routed }),
        ...(egress && { hostEgress: { tun: egress.tun, vet: egress.guard.vet.bind(egress.guard) } }),
      });
      pump.start();
      device.up();
      const ticker = setInterval(() => pump.tick(), 1000);
      ticker.unref();
      t.defer('pump', () => {
        clearInterval(ticker);
        pump.tick(Number.MAX_SAFE_INTEGER); // close every flow: flow.closed lines for all of them
        opts.log.info({ id, dropped: pump.stats.dropped, flows: pump.flows.counters }, 'sandbox network down');
      });

      let mounts: SandboxNetwork['mounts'] = [];
      if (!opts.placeTun) {
        const resolvConf = join(dir, 'resolv.conf');
        await writeFileAtomic(resolvConf, `nameserver ${SANDBOX_RESOLVER}\noptions ndots:1 timeout:2 attempts:2\n`, 0o644);
        mounts = [{ destination: '/etc/resolv.conf', type: 'bind', source: resolvConf, options: ['rbind', 'ro'] }];
      }
      opts.log.info({ id, netns: net.netnsName, addresses: cidrs, overlay: (opts.overlayCidrs ?? []).map(formatCidr), dnsLimits: pump.dnsLimiter.limits, maxFlows: pump.flows.maxFlows, port: bind.port, natTraversal: Boolean(pathBind), hostEgress: Boolean(egress), dnsThroughTunnel: Boolean(tunnelDns) }, 'sandbox network up');

      const owned = t.move();
      return {
        mode: 'sandbox' as const,
        netnsName: net.netnsName,
        netnsPath: net.netnsPath,
        address: cidrs.join(','),
        mounts,
        pump,
        device,
        directory,
        listenPort: bind.port,
        pathBind,
        close: () => owned.close(),
      };
    });
  };
}

/**
 * Upstream lookups for names a domain rule allows, with the record TTLs: the host's resolvers
 * (/etc/resolv.conf), or `servers` ("203.0.113.53", "203.0.113.53:5353", "[2001:db8::1]:53") when given.
 */
export function systemResolver(servers?: readonly string[]): UpstreamResolver {
  const resolver = new Resolver({ timeout: 3000, tries: 2 });
  if (servers && servers.length > 0) resolver.setServers([...servers]);
  return async (name, family) => {
    const records = family === 4 ? await resolver.resolve4(name, { ttl: true }) : await resolver.resolve6(name, { ttl: true });
    const addresses = records.map((r) => parseIp(r.address)).filter((a): a is IpAddr => a !== undefined);
    const ttlSec = Math.min(...records.map((r) => r.ttl));
    return { addresses, ttlSec: Number.isFinite(ttlSec) ? ttlSec : 60 };
  };
}
