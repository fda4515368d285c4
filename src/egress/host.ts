/**
 * Host egress for one sandbox: the path allowed packets take from the pump to the host's own network.
 *
 *   sandbox netns                launcher (host) netns
 *   TUN 100.77.x.y/32  ==fd==>  pump (policy, flows, DNS, host-services guard)
 *                                 ==fd==> egress TUN "le<hash>" --kernel--> forward --> masquerade --> default route
 *                                 <==fd== egress TUN <-- route 100.77.x.y/32 dev le<hash> <-- de-NAT <-- reply
 *
 * What it creates, all owned by the sandbox and removed by close() (or, after a kill -9, by gc):
 *   - the egress TUN (it vanishes with the launcher's fd, and its route with it);
 *   - a /32 route to the sandbox's address through it (adding it is also the address allocation:
 *     two launchers cannot add the same /32, so the kernel arbitrates);
 *   - the nftables table `lattice_egress_<id>` (src/egress/nftables.ts).
 *   - where iptables' filter FORWARD chain drops by default (Docker sets `-P FORWARD DROP`), two
 *     ACCEPT rules for the egress TUN in Docker's DOCKER-USER chain (the chain Docker keeps for
 *     exactly this), else at the top of FORWARD, tagged with the comment "lattice-egress".
 * The one global setting it may change is net.ipv4.ip_forward (to 1, as Docker does); it is left on.
 */
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { execa } from 'execa';
import type { Logger } from 'pino';
import { LatticeError, PrerequisiteError } from '../errors.js';
import { openLinuxTun, type LinuxTun } from '../tun/linux.js';
import { ip, IpError, listAddresses, listRoutes } from '../netns/ip.js';
import { formatIp, ipv4, parseCidr } from '../policy/index.js';
import { HostServicesGuard, networkOf } from './hostservices.js';
import { EGRESS_TABLE_PREFIX, egressRuleset, egressTableName, tableOwner } from './nftables.js';
import { processStartTicks } from '../proc.js';

/** Where sandboxes' host-egress addresses come from (shared address space, RFC 6598). */
export const EGRESS_POOL = '100.77.0.0/16';
/** Prefix of egress TUN names ("le" + 12 hex of the sandbox id's hash). */
export const EGRESS_TUN_PREFIX = 'le';
const EGRESS_MTU = 1500;
const IP_FORWARD = '/proc/sys/net/ipv4/ip_forward';

export class HostEgressError extends LatticeError {
  override readonly name = 'HostEgressError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('EEGRESS_HOST', message, options);
  }
}

export interface HostEgress {
  /** The sandbox's IPv4 address (no prefix length). */
  readonly address: string;
  readonly tun: LinuxTun;
  readonly table: string;
  /** The host-services guard, loaded with this host's addresses and networks. */
  readonly guard: HostServicesGuard;
  /** Remove the table, the TUN and its route. Idempotent; tolerates "already gone". */
  close(): Promise<void>;
}

/** The egress TUN's interface name for sandbox `id`: the prefix plus 12 hex of SHA-256(id), within IFNAMSIZ. */
export function egressTunName(id: string): string {
  return `${EGRESS_TUN_PREFIX}${createHash('sha256').update(id).digest('hex').slice(0, 12)}`;
}

/** Run nft; failures become HostEgressError with nft's own words. */
export async function nft(args: string[], input?: string): Promise<string> {
  try {
    const r = await execa('nft', args, { input, stdin: input === undefined ? 'ignore' : undefined });
    return r.stdout;
  } catch (err) {
    const e = err as { code?: string; stderr?: string; shortMessage?: string };
    if (e.code === 'ENOENT') throw new PrerequisiteError('host egress needs nftables: `nft` not found; run: apt-get install nftables (or make setup)', { cause: err });
    throw new HostEgressError(`nft ${args.join(' ')} failed: "${(e.stderr ?? e.shortMessage ?? '').trim()}"`, { cause: err });
  }
}

const IPT_COMMENT = 'lattice-egress';

async function iptables(args: string[]): Promise<{ ok: boolean; out: string }> {
  const r = await execa('iptables', ['-w', ...args], { reject: false, stdin: 'ignore' });
  return { ok: r.exitCode === 0, out: String(r.stdout) };
}

/**
 * The iptables chain that must let the egress TUN's traffic through, if any: DOCKER-USER when Docker
 * is there, else FORWARD when its policy is DROP; undefined when forwarding is not filtered (or no iptables).
 */
async function filteringChain(): Promise<string | undefined> {
  if ((await iptables(['-S', 'DOCKER-USER'])).ok) return 'DOCKER-USER';
  const fwd = await iptables(['-S', 'FORWARD']);
  return fwd.ok && /^-P FORWARD DROP/m.test(fwd.out) ? 'FORWARD' : undefined;
}

function acceptRules(tun: string): string[][] {
  const tag = ['-m', 'comment', '--comment', IPT_COMMENT];
  return [
    ['-i', tun, ...tag, '-j', 'ACCEPT'],
    ['-o', tun, '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', ...tag, '-j', 'ACCEPT'],
  ];
}

/** Let the egress TUN through a filtering FORWARD chain; returns the undo. */
async function openFilteringChain(tun: string): Promise<() => Promise<void>> {
  const chain = await filteringChain();
  if (!chain) return async () => undefined;
  const added: string[][] = [];
  const undo = async () => {
    for (const r of added.splice(0)) await iptables(['-D', chain, ...r]);
  };
  for (const r of acceptRules(tun)) {
    const res = await iptables(['-I', chain, ...r]);
    if (!res.ok) {
      await undo();
      throw new HostEgressError(`cannot add an iptables ACCEPT rule for ${tun} to ${chain} (forwarding there drops by default); check: iptables -S ${chain}`);
    }
    added.push(r);
  }
  return undo;
}

/** Remove lattice-egress iptables rules whose egress TUN no longer exists (its launcher died). */
async function reapFilteringRules(): Promise<number> {
  let n = 0;
  const links = new Set((await ip(['-o', 'link', 'show']).catch(() => '')).split('\n').map((l) => l.split(':')[1]?.trim().split('@')[0]));
  for (const chain of ['DOCKER-USER', 'FORWARD']) {
    const r = await iptables(['-S', chain]);
    if (!r.ok) continue;
    for (const line of r.out.split('\n')) {
      if (!line.includes(IPT_COMMENT)) continue;
      const dev = /-[io] (le[0-9a-f]{12})\b/.exec(line)?.[1];
      if (!dev || links.has(dev)) continue;
      const spec = line.replace(/^-A \S+ /, '').split(' ').map((w) => w.replace(/^"|"$/g, ''));
      if ((await iptables(['-D', chain, ...spec])).ok) n++;
    }
  }
  return n;
}

/** The host's own addresses (each with its network) and its directly connected networks: the guard's special set. */
export async function hostSpecialCidrs(): Promise<string[]> {
  const out = new Set<string>([EGRESS_POOL]);
  for (const a of await listAddresses()) {
    out.add(`${a.local}/${a.family === 'inet' ? 32 : 128}`);
    out.add(`${a.local}/${a.prefixlen}`);
  }
  for (const fam of [4, 6] as const) {
    for (const r of await listRoutes(fam)) {
      if (r.dst === 'default' || r.gateway !== undefined || r.dev?.startsWith(EGRESS_TUN_PREFIX)) continue;
      const cidr = r.dst.includes('/') ? r.dst : `${r.dst}/${fam === 4 ? 32 : 128}`;
      if (parseCidr(networkOf(cidr)).ok) out.add(cidr);
    }
  }
  return [...out];
}

/** Candidate addresses for sandbox `id`: a hash-chosen start in the pool, then onwards. */
function* candidates(id: string): Generator<string> {
  const pool = parseCidr(EGRESS_POOL);
  if (!pool.ok) throw new HostEgressError(`EGRESS_POOL ${EGRESS_POOL} is not a CIDR`);
  const size = 2 ** (32 - pool.cidr.bits);
  const start = createHash('sha256').update(id).digest().readUInt32BE(0) % size;
  for (let i = 0; i < 256; i++) {
    const off = (start + i * 7919) % size;
    if (off === 0 || off === size - 1) continue;
    yield formatIp(ipv4((pool.cidr.addr.w0 + off) >>> 0));
  }
}

/** IPv4 forwarding must be on for the kernel to forward; turn it on like Docker does (and say so). */
async function ensureForwarding(log: Logger): Promise<void> {
  const v = (await readFile(IP_FORWARD, 'utf8').catch(() => '')).trim();
  if (v === '1') return;
  try {
    await writeFile(IP_FORWARD, '1');
  } catch (err) {
    throw new HostEgressError(`cannot enable IPv4 forwarding (${(err as Error).message}); run: sysctl -w net.ipv4.ip_forward=1`, { cause: err });
  }
  log.warn('host egress: set net.ipv4.ip_forward=1 (as Docker does); lattice leaves it on');
}

/**
 * Create sandbox `id`'s egress path (TUN, route, nftables table) and pick its address from
 * EGRESS_POOL, or use `address` (a WireGuard sandbox's own IPv4 overlay address). On failure nothing
 * is left behind.
 */
export async function openHostEgress(opts: { id: string; log: Logger; address?: string }): Promise<HostEgress> {
  await nft(['--version']);
  await ensureForwarding(opts.log);
  const guard = new HostServicesGuard(await hostSpecialCidrs());
  const table = egressTableName(opts.id);
  const tun = await openLinuxTun(egressTunName(opts.id), { mtu: EGRESS_MTU });
  let tableMade = false;
  let closed = false;
  let closeFilter = async (): Promise<void> => undefined;
  const close = async () => {
    if (closed) return;
    closed = true;
    await closeFilter();
    if (tableMade) await nft(['delete', 'table', 'ip', table]).catch(() => undefined);
    await tun.close(); // the device and its route go with the fd
  };
  try {
    await ip(['link', 'set', 'dev', tun.name, 'addrgenmode', 'none']);
    await ip(['link', 'set', 'dev', tun.name, 'up']);
    let address: string | undefined;
    for (const cand of opts.address ? [opts.address] : candidates(opts.id)) {
      try {
        await ip(['route', 'add', `${cand}/32`, 'dev', tun.name]);
        address = cand;
        break;
      } catch (err) {
        if (!(err instanceof IpError && /File exists/i.test(err.stderr))) throw err;
        if (opts.address) {
          throw new HostEgressError(`${cand} is already routed on this host (another sandbox or a local network uses it); host egress for a WireGuard sandbox needs its overlay address to be free on the host`, { cause: err });
        }
      }
    }
    if (!address) throw new HostEgressError(`no free address in ${EGRESS_POOL} for host egress; remove stale routes (lattice gc) and retry`);
    // A stale table of the same name can only be an orphan of this very id: replace it.
    await nft(['delete', 'table', 'ip', table]).catch(() => undefined);
    tableMade = true;
    await nft(['-f', '-'], egressRuleset({ table, tun: tun.name, address, pool: EGRESS_POOL, owner: { pid: process.pid, startTicks: processStartTicks(process.pid) ?? 0 } }));
    closeFilter = await openFilteringChain(tun.name);
    opts.log.info({ id: opts.id, tun: tun.name, address, table }, 'host egress up');
    return { address, tun, table, guard, close };
  } catch (err) {
    await close().catch(() => undefined);
    throw err;
  }
}

/** Names of lattice's host-egress tables present on the host. */
export async function listEgressTables(): Promise<string[]> {
  const out = await nft(['-j', 'list', 'tables', 'ip']).catch(() => '');
  if (!out) return [];
  const items = (JSON.parse(out) as { nftables?: Array<{ table?: { name?: string } }> }).nftables ?? [];
  return items.map((i) => i.table?.name).filter((n): n is string => typeof n === 'string' && n.startsWith(EGRESS_TABLE_PREFIX));
}

/**
 * Remove the egress tables whose launcher is gone (a launcher killed with -9 leaves its table; its TUN
 * and route vanished with its fd). The owner is read from the table's own comment, so this is right
 * whatever state directory the caller uses. Returns the tables removed.
 */
export async function reapEgressTables(): Promise<string[]> {
  const removed: string[] = [];
  await reapFilteringRules();
  for (const t of await listEgressTables()) {
    const owner = tableOwner(await nft(['list', 'table', 'ip', t]).catch(() => ''));
    if (owner && processStartTicks(owner.pid) === owner.startTicks) continue;
    await nft(['delete', 'table', 'ip', t]).catch(() => undefined);
    removed.push(t);
  }
  return removed;
}
