/**
 * The per-sandbox network: a named netns holding only loopback and a TUN whose fd the launcher
 * keeps. runsc --network=sandbox, pointed at this netns, mirrors the TUN's addresses and routes into
 * gVisor's netstack, so every packet the agent sends arrives on the launcher's fd as raw IP.
 *
 *   launcher netns                       sandbox netns "lattice-<id>"
 *   TUN fd (LinuxTun)  <== kernel ==>    lo (up), <tun> 10.77.0.2/32 fd77::2/128, mtu 1420
 *                                        default via 10.77.0.1 dev <tun> onlink
 *                                        default via fd77::1 dev <tun> onlink
 */
import { createHash } from 'node:crypto';
import { LatticeError, UsageError } from '../errors.js';
import { formatCidr, formatIp, parseCidr, parseIp } from '../net/addr.js';
import { openLinuxTun, type LinuxTun, type OpenTunOptions } from '../tun/linux.js';
import { addAddress, addRoute, createNetns, deleteNetns, ip, listNetns, moveLink, netnsPath, setLinkUp, validNetnsName } from './ip.js';

export const SANDBOX_NETNS_PREFIX = 'lattice-';
/** WireGuard over IPv6 on a 1500-byte path: 1500 - 40 (IPv6) - 8 (UDP) - 32 (WG header + tag). */
export const DEFAULT_SANDBOX_MTU = 1420;

export interface SandboxNetworkOptions {
  /** The sandbox id; the netns is `<prefix><id>`. */
  id: string;
  /** The sandbox's own addresses, CIDR form: ['10.77.0.2/32', 'fd77::2/128']. */
  overlayAddrs: readonly string[];
  /** IPv4 next hop of the default route (needed when an IPv4 address is given). Never answers; it only has to exist for runsc. */
  gateway?: string;
  /** IPv6 next hop of the default route (needed when an IPv6 address is given). */
  gateway6?: string;
  mtu?: number;
  /** Netns name prefix; the launcher reaps orphans by it. Tests use their own. */
  prefix?: string;
}

export interface SandboxNetwork {
  readonly id: string;
  readonly netnsName: string;
  /** For config.json `linux.namespaces[type=network].path`. */
  readonly netnsPath: string;
  readonly tun: LinuxTun;
  /** Close the TUN and delete the netns. Idempotent. */
  teardown(): Promise<void>;
}

/** The sandbox network could not be set up (its netns exists already). Code ESANDBOX_NET. */
export class SandboxNetworkError extends LatticeError {
  override readonly name = 'SandboxNetworkError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ESANDBOX_NET', message, options);
  }
}

/** The netns name of sandbox `id`: `prefix` + `id`. Throws UsageError when the id cannot name a netns. */
export function sandboxNetnsName(id: string, prefix = SANDBOX_NETNS_PREFIX): string {
  const name = `${prefix}${id}`;
  if (!/^[A-Za-z0-9_.-]+$/.test(id) || !validNetnsName(name)) throw new UsageError(`sandbox id "${id}" cannot name a netns: use [A-Za-z0-9_.-], up to ${64 - prefix.length} characters`);
  return name;
}

/**
 * The TUN's interface name: unique per netns name (it briefly lives in the launcher's netns before
 * the move) and within IFNAMSIZ. Inside the sandbox the name does not matter.
 */
export function sandboxTunName(netnsName: string): string {
  return `lt${createHash('sha256').update(netnsName).digest('hex').slice(0, 12)}`;
}

/**
 * An overlay address as "address/prefix-length" (host bits kept: it is an interface address), in
 * the address module's canonical text; leading zeros, zones and a missing length are refused, and
 * an IPv4-mapped address is the IPv4 one. Throws UsageError.
 */
function overlayAddress(cidr: string): { text: string; family: 4 | 6 } {
  const p = parseCidr(cidr, { hostBits: 'keep', bare: 'refuse' });
  if (!p.ok) throw new UsageError(`overlay address "${cidr}" is not an address/prefix-length`);
  return { text: formatCidr(p.cidr), family: p.cidr.addr.family };
}

/** A gateway of `family` in canonical text, or undefined when absent, malformed or of the other family. */
function gatewayOf(s: string | undefined, family: 4 | 6): string | undefined {
  const a = s === undefined ? undefined : parseIp(s);
  return a?.family === family ? formatIp(a) : undefined;
}

/** Create the sandbox's netns and TUN as drawn above. On failure nothing is left behind. */
export async function setupSandboxNetwork(opts: SandboxNetworkOptions): Promise<SandboxNetwork> {
  const netnsName = sandboxNetnsName(opts.id, opts.prefix);
  const mtu = opts.mtu ?? DEFAULT_SANDBOX_MTU;
  const addrs = opts.overlayAddrs.map(overlayAddress);
  if (addrs.length === 0) throw new UsageError('a sandbox network needs at least one overlay address');
  const has4 = addrs.some((a) => a.family === 4);
  const has6 = addrs.some((a) => a.family === 6);
  const gateway = gatewayOf(opts.gateway, 4);
  const gateway6 = gatewayOf(opts.gateway6, 6);
  if (has4 && !gateway) throw new UsageError('an IPv4 overlay address needs an IPv4 gateway (runsc refuses a default route without one)');
  if (has6 && !gateway6) throw new UsageError('an IPv6 overlay address needs an IPv6 gateway6');

  if ((await listNetns()).includes(netnsName)) {
    throw new SandboxNetworkError(`network namespace ${netnsName} already exists: another launcher owns sandbox ${opts.id}, or an orphan is left (reap it)`);
  }
  await createNetns(netnsName);
  let tun: LinuxTun | undefined;
  let torn = false;
  const teardown = async (): Promise<void> => {
    if (torn) return;
    torn = true;
    await tun?.close();
    await deleteNetns(netnsName);
  };
  try {
    await setLinkUp('lo', {}, netnsName);
    tun = await createTunInNetns(sandboxTunName(netnsName), netnsName, { mtu });
    const dev = tun.name;
    // No kernel-made link-local address or router solicitations: the netns has nobody to talk to but
    // us, and every stray packet would show up on the launcher's fd.
    await ip(['link', 'set', 'dev', dev, 'addrgenmode', 'none'], netnsName);
    for (const a of addrs) await addAddress(dev, a.text, netnsName);
    await setLinkUp(dev, { mtu }, netnsName);
    if (has4) await addRoute('default', { dev, via: gateway, onlink: true }, netnsName);
    if (has6) await addRoute('default', { dev, via: gateway6, onlink: true }, netnsName);
  } catch (err) {
    await teardown().catch(() => undefined);
    throw err;
  }
  return { id: opts.id, netnsName, netnsPath: netnsPath(netnsName), tun, teardown };
}

/** Sandbox networks present on the host (by netns name prefix), whoever created them. */
export async function listSandboxNetworks(prefix = SANDBOX_NETNS_PREFIX): Promise<Array<{ id: string; netnsName: string }>> {
  return (await listNetns()).filter((n) => n.startsWith(prefix)).map((n) => ({ id: n.slice(prefix.length), netnsName: n }));
}

/**
 * Delete the netns of every sandbox that `isAlive` says is gone (its launcher died without teardown).
 * The TUN went away with the dead launcher's fd. Returns the netns names removed.
 */
export async function reapSandboxNetworks(
  isAlive: (id: string) => boolean | Promise<boolean>,
  prefix = SANDBOX_NETNS_PREFIX,
): Promise<string[]> {
  const removed: string[] = [];
  for (const { id, netnsName } of await listSandboxNetworks(prefix)) {
    if (await isAlive(id)) continue;
    await deleteNetns(netnsName);
    removed.push(netnsName);
  }
  return removed;
}

/**
 * Create the TUN in the launcher's netns, then move it into `netns` (an `ip netns` name). The link
 * arrives down and without addresses; the caller configures it inside the netns.
 */
export async function createTunInNetns(name: string, netns: string, opts: OpenTunOptions = {}): Promise<LinuxTun> {
  const tun = await openLinuxTun(name, opts);
  try {
    await moveLink(tun.name, netns);
  } catch (err) {
    await tun.close();
    throw err;
  }
  return tun;
}
