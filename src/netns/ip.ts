/**
 * Small typed wrappers over iproute2's `ip`. Each call is one `ip` invocation; failures become
 * IpError with ip's own message quoted, so the user sees what the kernel said.
 */
import { execa } from 'execa';
import { LatticeError, PrerequisiteError, UsageError } from '../errors.js';
import { formatCidr, formatIp, parseCidr, parseIp } from '../net/addr.js';

/** Where `ip netns` keeps the bind mounts of named network namespaces. */
export const NETNS_DIR = '/var/run/netns';

/** `ip` exited non-zero; `stderr` is its own message. Code EIP. */
export class IpError extends LatticeError {
  override readonly name = 'IpError';
  constructor(
    readonly args: readonly string[],
    readonly stderr: string,
    options?: { cause?: unknown },
  ) {
    super('EIP', `ip ${args.join(' ')} failed: "${stderr}"`, options);
  }
}

/** Run `ip [-n netns] ARGS` and return stdout. */
export async function ip(args: readonly string[], netns?: string): Promise<string> {
  const full = netns === undefined ? [...args] : ['-n', netns, ...args];
  try {
    const { stdout } = await execa('ip', full, { stdin: 'ignore' });
    return stdout;
  } catch (err) {
    const e = err as { code?: string; stderr?: string; shortMessage?: string };
    if (e.code === 'ENOENT') throw new PrerequisiteError('`ip` (iproute2) not found on PATH', { cause: err });
    throw new IpError(full, (e.stderr ?? e.shortMessage ?? String(err)).trim(), { cause: err });
  }
}

/** Linux netns names as `ip netns` accepts them (they become files under /var/run/netns). */
export function validNetnsName(name: string): boolean {
  return /^[A-Za-z0-9_.-]{1,64}$/.test(name) && name !== '.' && name !== '..';
}

/** The path of named netns `name` under NETNS_DIR. Throws LatticeError (EIP) for a name `ip netns` refuses. */
export function netnsPath(name: string): string {
  if (!validNetnsName(name)) throw new LatticeError('EIP', `invalid netns name "${name}"`);
  return `${NETNS_DIR}/${name}`;
}

/** `ip netns add NAME`; returns its path. Throws IpError if it exists or `ip` fails. */
export async function createNetns(name: string): Promise<string> {
  const path = netnsPath(name);
  await ip(['netns', 'add', name]);
  return path;
}

/** Delete a named netns. Idempotent: a netns that does not exist is not an error. */
export async function deleteNetns(name: string): Promise<void> {
  netnsPath(name);
  try {
    await ip(['netns', 'delete', name]);
  } catch (err) {
    if (err instanceof IpError && /No such file|not found|Invalid argument/i.test(err.stderr)) {
      if (!(await listNetns()).includes(name)) return;
    }
    throw err;
  }
}

/** Names of the named network namespaces (`ip netns list`). */
export async function listNetns(): Promise<string[]> {
  const out = await ip(['netns', 'list']);
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0])
    .filter((n): n is string => !!n);
}

export interface LinkInfo {
  ifname: string;
  ifindex: number;
  mtu: number;
  flags: string[];
  operstate: string;
  linkType?: string;
}

/** Links in the current netns or in `netns` (`ip -j link show`). */
export async function listLinks(netns?: string): Promise<LinkInfo[]> {
  const out = await ip(['-j', 'link', 'show'], netns);
  const raw = JSON.parse(out || '[]') as Array<Record<string, unknown>>;
  return raw.map((l) => ({
    ifname: String(l.ifname),
    ifindex: Number(l.ifindex),
    mtu: Number(l.mtu),
    flags: Array.isArray(l.flags) ? (l.flags as string[]) : [],
    operstate: String(l.operstate ?? ''),
    linkType: typeof l.link_type === 'string' ? l.link_type : undefined,
  }));
}

export interface AddrInfo {
  ifname: string;
  family: 'inet' | 'inet6';
  local: string;
  prefixlen: number;
}

/** Addresses of every link in the current netns or in `netns` (`ip -j addr show`), as `ip` prints them. */
export async function listAddresses(netns?: string): Promise<AddrInfo[]> {
  const out = await ip(['-j', 'addr', 'show'], netns);
  const raw = JSON.parse(out || '[]') as Array<{ ifname: string; addr_info?: Array<Record<string, unknown>> }>;
  return raw.flatMap((l) =>
    (l.addr_info ?? []).map((a) => ({
      ifname: l.ifname,
      family: a.family as 'inet' | 'inet6',
      local: String(a.local),
      prefixlen: Number(a.prefixlen),
    })),
  );
}

export interface RouteInfo {
  dst: string;
  dev?: string;
  gateway?: string;
  flags: string[];
}

/** Routes of one family in the main table (`ip -4|-6 -j route show`); `dst` is a CIDR, a bare address or 'default'. */
export async function listRoutes(family: 4 | 6, netns?: string): Promise<RouteInfo[]> {
  const out = await ip([`-${family}`, '-j', 'route', 'show'], netns);
  const raw = JSON.parse(out || '[]') as Array<Record<string, unknown>>;
  return raw.map((r) => ({
    dst: String(r.dst),
    dev: typeof r.dev === 'string' ? r.dev : undefined,
    gateway: typeof r.gateway === 'string' ? r.gateway : undefined,
    flags: Array.isArray(r.flags) ? (r.flags as string[]) : [],
  }));
}

/** Move `link` from the current netns into `netns`. The link arrives down and without addresses. */
export async function moveLink(link: string, netns: string): Promise<void> {
  await ip(['link', 'set', 'dev', link, 'netns', netns]);
}

/** `ip link delete dev LINK`. Throws IpError when it does not exist. */
export async function deleteLink(link: string, netns?: string): Promise<void> {
  await ip(['link', 'delete', 'dev', link], netns);
}

/**
 * `ip addr add ADDR/LEN dev DEV` (host bits kept: "10.77.0.2/24" is an interface address). The text
 * is read by src/net/addr.ts (no leading zeros, no zone, IPv4-mapped is IPv4) and passed on in its
 * canonical form. Throws UsageError for text it refuses, IpError when `ip` fails.
 */
export async function addAddress(dev: string, cidr: string, netns?: string): Promise<void> {
  const p = parseCidr(cidr, { hostBits: 'keep', bare: 'refuse' });
  if (!p.ok) throw new UsageError(`"${cidr}" is not an address/prefix-length such as 10.77.0.2/32`);
  // nodad: the sandbox's v6 address must be usable at once; there is nobody else on a TUN to collide with.
  const extra = p.cidr.addr.family === 6 ? ['nodad'] : [];
  await ip(['addr', 'add', formatCidr(p.cidr), 'dev', dev, ...extra], netns);
}

/** `ip link set dev DEV [mtu N] up`; `mtu` in bytes. */
export async function setLinkUp(dev: string, opts: { mtu?: number } = {}, netns?: string): Promise<void> {
  const mtu = opts.mtu === undefined ? [] : ['mtu', String(opts.mtu)];
  await ip(['link', 'set', 'dev', dev, ...mtu, 'up'], netns);
}

export interface RouteOptions {
  dev: string;
  via?: string;
  /** Treat `via` as directly reachable on `dev` even though no address covers it. */
  onlink?: boolean;
}

/**
 * `ip route add DEST [via GW] dev DEV [onlink]`; the family follows DEST, or `via` for 'default'.
 * DEST is a CIDR (host bits refused; a bare address is a host route) and GW an address, both read by
 * src/net/addr.ts and passed on in canonical form. Throws UsageError for text it refuses, or a
 * family mismatch; IpError when `ip` fails.
 */
export async function addRoute(dest: string | 'default', opts: RouteOptions, netns?: string): Promise<void> {
  const d = dest === 'default' ? undefined : parseCidr(dest);
  if (d && !d.ok) throw new UsageError(`route destination "${dest}" is not a CIDR such as 10.77.0.0/16`);
  const via = opts.via === undefined ? undefined : parseIp(opts.via);
  if (opts.via !== undefined && !via) throw new UsageError(`route gateway "${opts.via}" is not an IP address`);
  const family = d?.cidr.addr.family ?? via?.family ?? 4;
  if (via && via.family !== family) throw new UsageError(`route gateway ${opts.via} is not of the family of ${dest}`);
  const args = [family === 6 ? '-6' : '-4', 'route', 'add', d ? formatCidr(d.cidr) : 'default'];
  if (via) args.push('via', formatIp(via));
  args.push('dev', opts.dev);
  if (opts.onlink) args.push('onlink');
  await ip(args, netns);
}

/** A veth pair `a` <-> `b`; `b` is placed in `peerNetns` at creation when given. */
export async function createVethPair(a: string, b: string, opts: { peerNetns?: string; netns?: string } = {}): Promise<void> {
  const peer = opts.peerNetns === undefined ? ['name', b] : ['name', b, 'netns', opts.peerNetns];
  await ip(['link', 'add', a, 'type', 'veth', 'peer', ...peer], opts.netns);
}
