/**
 * The host's side of `lattice up`: a TUN in the namespace the launcher runs in (not a sandbox netns),
 * carrying the node's overlay addresses and routes for the overlay and the peers' routed prefixes.
 * The launcher holds the fd; the kernel's own sockets send into it, the pump reads and writes it.
 *
 *   host netns (the one `up` runs in)
 *     <tun> 10.77.0.5/32 fd77::5/128, mtu 1420, addrgenmode none
 *     10.77.0.0/16 dev <tun> src 10.77.0.5            (the overlay pools, from the enrollment)
 *     fd77::/64 dev <tun> src fd77::5
 *     169.254.77.1/32 dev <tun> src 10.77.0.5          (the overlay DNS resolver the pump answers)
 *     <extra> dev <tun> src ...                        (approved routes of other peers, set later)
 *
 * The TUN is not persistent: it disappears with the process that holds its fd, and its routes with it,
 * so a crashed `up` leaves no link behind. Errors: UsageError (bad name or address), TunError, IpError.
 */
import { UsageError } from '../errors.js';
import { formatCidr, formatIp, parseCidr } from '../net/addr.js';
import { addAddress, ip, listLinks, setLinkUp } from '../netns/ip.js';
import { openLinuxTun, type LinuxTun } from '../tun/linux.js';

/** Default interface name of `lattice up`. */
export const HOST_TUN_NAME = 'lattice0';

export interface HostLinkOptions {
  /** Interface name (IFNAMSIZ - 1 = 15 characters at most). */
  ifname: string;
  /** The node's own addresses, host prefixes: ['10.77.0.5/32', 'fd77::5/128']. */
  overlayAddrs: readonly string[];
  /** Prefixes routed into the TUN (overlay pools, resolver /32); each gets `src` of its family. */
  routes: readonly string[];
  mtu: number;
}

export interface HostLink {
  readonly tun: LinuxTun;
  readonly ifname: string;
  /** Route `cidr` into the TUN too (idempotent; a prefix of a family we have no address of is skipped). */
  addRoute(cidr: string): Promise<void>;
  /** Remove a route added by addRoute (absent: nothing to do). */
  deleteRoute(cidr: string): Promise<void>;
  /** The prefixes routed into the TUN now, canonical text. */
  routes(): string[];
  /** Close the fd (the kernel removes the link and its routes). Idempotent. */
  close(): Promise<void>;
}

const IFNAME_RE = /^[A-Za-z0-9_.-]{1,15}$/;

/** Whether `name` can name the host TUN (letters, digits, `_.-`, 1-15 characters). */
export function validIfname(name: string): boolean {
  return IFNAME_RE.test(name);
}

/** Open and configure the host TUN as drawn above. On failure nothing is left behind. */
export async function openHostLink(o: HostLinkOptions): Promise<HostLink> {
  if (!validIfname(o.ifname)) throw new UsageError(`interface name "${o.ifname}" is not usable; use 1-15 letters, digits, '_', '.', '-' (--tun NAME)`);
  if ((await listLinks()).some((l) => l.ifname === o.ifname)) {
    throw new UsageError(`interface ${o.ifname} already exists in this network namespace: another \`lattice up\` runs, or pass --tun NAME`);
  }
  const own = o.overlayAddrs.map((a) => {
    const p = parseCidr(a, { hostBits: 'keep', bare: 'refuse' });
    if (!p.ok) throw new UsageError(`overlay address "${a}" is not an address/prefix-length`);
    return p.cidr;
  });
  const src = (family: 4 | 6) => own.find((c) => c.addr.family === family);
  const tun = await openLinuxTun(o.ifname, { mtu: o.mtu });
  const routed = new Set<string>();
  const addRoute = async (cidr: string): Promise<void> => {
    const p = parseCidr(cidr, { hostBits: 'mask' });
    if (!p.ok) throw new UsageError(`route "${cidr}" is not a CIDR such as 10.200.0.0/24`);
    const text = formatCidr(p.cidr);
    const from = src(p.cidr.addr.family);
    if (!from || routed.has(text)) return;
    await ip([p.cidr.addr.family === 6 ? '-6' : '-4', 'route', 'replace', text, 'dev', tun.name, 'src', formatIp(from.addr)]);
    routed.add(text);
  };
  let closed = false;
  const link: HostLink = {
    tun,
    ifname: tun.name,
    addRoute,
    async deleteRoute(cidr) {
      const p = parseCidr(cidr, { hostBits: 'mask' });
      if (!p.ok) return;
      const text = formatCidr(p.cidr);
      if (!routed.delete(text)) return;
      await ip([p.cidr.addr.family === 6 ? '-6' : '-4', 'route', 'del', text, 'dev', tun.name]).catch(() => undefined);
    },
    routes: () => [...routed],
    async close() {
      if (closed) return;
      closed = true;
      await tun.close();
    },
  };
  try {
    // No kernel-made link-local address or router solicitations: they would only be dropped by the pump.
    await ip(['link', 'set', 'dev', tun.name, 'addrgenmode', 'none']);
    for (const c of own) await addAddress(tun.name, formatCidr(c));
    await setLinkUp(tun.name, { mtu: o.mtu });
    for (const r of o.routes) await addRoute(r);
  } catch (err) {
    await link.close().catch(() => undefined);
    throw err;
  }
  return link;
}
