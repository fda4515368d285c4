/**
 * `lattice up`: this Linux host joins the overlay as a peer. The same enrollment, WireGuard Device and
 * default-deny pump (policy, flows, DNS for overlay names, audit to the control plane) as `sandbox start`
 * (src/sandbox/enrolled.ts), with the TUN placed in the host's own network namespace (./link.ts)
 * instead of a sandbox netns, and no runsc and no agent API.
 *
 *   <stateDir>/credentials/<name>.json   the identity (kept across restarts, exactly as for `sandbox start`)
 *   <stateDir>/host/<name>/up.json       0600: pid + start ticks, interface, address, routes (removed on exit)
 *   <stateDir>/host/<name>/status.json   peers, handshakes, bytes, path: rewritten every second (removed on exit)
 *
 * `lattice down` (another process) reads up.json, sends SIGTERM to that process (never to a pid whose start
 * time differs: a reused pid is not ours), waits for it to exit, and removes what a crash could have left.
 */
import { mkdir, readFile, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { LatticeError, UsageError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import { processStartTicks } from '../proc.js';
import { formatCidr } from '../net/addr.js';
import { listAddresses, listLinks, ip } from '../netns/ip.js';
import { enrollAndPrepare, overlayCidrs, type EnrolledOptions } from '../sandbox/enrolled.js';
import { SANDBOX_RESOLVER, systemResolver, type TunPlacement } from '../sandbox/network.js';
import { systemClock } from '../clock.js';
import { openExitDns } from './dns.js';
import { STATUS_FILE, type SandboxStatus } from '../sandbox/nat-status.js';
import { openHostLink, type HostLink } from './link.js';
import { openRouter, removeRouterTable, type Router } from '../router/router.js';
import { DEFAULT_ROUTES } from '../controlplane/routes.js';
import type { Peer } from '../controlplane/types.js';
import { hostRoutes } from './routes.js';

export const UP_FILE = 'up.json';

/** What up.json holds (no key material). */
export interface UpRecord {
  v: 1;
  pid: number;
  startTicks: number;
  name: string;
  namespace: string;
  ifname: string;
  address: { ipv4: string; ipv6: string };
  /** Prefixes routed into the TUN (overlay pools, resolver, and the approved routes of other peers). */
  routes: string[];
  /** Of those, the approved routes of other peers (./routes.ts hostRoutes). */
  peerRoutes?: string[];
  /** Routes this node advertises (`--advertise-routes`, `--exit-node`), and its nftables table; absent: not a router. */
  router?: { advertised: string[]; table: string };
  startedAt: string;
}

/** `lattice status --json`: up.json and status.json merged. */
export interface HostStatus {
  name: string;
  namespace: string;
  pid: number;
  ifname: string;
  address: { ipv4: string; ipv6: string };
  routes: string[];
  /** Approved routes of other peers routed into the TUN. */
  peerRoutes: string[];
  /** What this node advertises (approval is the control plane's: `lattice route ls`). */
  advertised: string[];
  listenPort: number | null;
  peers: SandboxStatus['peers'];
}

/** The directory of host instance `name`. */
export function hostDir(stateDir: string, name: string): string {
  return join(stateDir, 'host', name);
}

export interface HostUpOptions extends Pick<EnrolledOptions, 'controlPlaneUrl' | 'token' | 'advertiseHost' | 'listenPort' | 'auditLog' | 'nat' | 'dnsLimits' | 'metrics' | 'statusIntervalMs'> {
  stateDir: string;
  name: string;
  ifname: string;
  mtu?: number;
  /** Subnets to advertise and forward (canonical CIDRs, `--advertise-routes`). */
  advertiseRoutes?: string[];
  /** Advertise the default routes too (`--exit-node`); an exit node also answers DNS on its overlay address (./dns.ts). */
  exitNode?: boolean;
  /** The exit node's DNS forwarder asks these (`--dns-upstream`, ADDR or ADDR:PORT); default: /etc/resolv.conf. */
  dnsUpstream?: string[];
  /** Hears the approved set of this node's own routes (at start and on every operator decision). */
  onOwnRoutes?: (approved: string[]) => void;
  /** Hears the approved routes of other peers routed into the TUN (at start and whenever that set changes). */
  onPeerRoutes?: (routes: string[]) => void;
  log: Logger;
}

export interface HostUp {
  record: UpRecord;
  /** Resolves when the control plane revokes this node. */
  revoked: Promise<void>;
  /** Stop carrying traffic and remove everything `up` added (TUN, routes, files). */
  close(): Promise<void>;
}

/** Whether the process recorded in `r` still runs (same pid and start time). */
export function upAlive(r: Pick<UpRecord, 'pid' | 'startTicks'>): boolean {
  return processStartTicks(r.pid) === r.startTicks;
}

/** The up.json of `name`, or undefined when there is none (or it does not parse). */
export async function readUpRecord(stateDir: string, name: string): Promise<UpRecord | undefined> {
  try {
    return JSON.parse(await readFile(join(hostDir(stateDir, name), UP_FILE), 'utf8')) as UpRecord;
  } catch {
    return undefined;
  }
}

/**
 * Bring this host up. Refuses (ESANDBOX_RUNNING) when an `up` of this name runs from this state dir;
 * removes what a crashed one left first. Errors: those of enrollAndPrepare, UsageError (interface
 * name taken or unusable), TunError, IpError.
 */
export async function hostUp(o: HostUpOptions): Promise<HostUp> {
  const dir = hostDir(o.stateDir, o.name);
  const stale = await readUpRecord(o.stateDir, o.name);
  if (stale && upAlive(stale)) {
    throw new LatticeError('ESANDBOX_RUNNING', `lattice up ${o.name} already runs (pid ${stale.pid}); run \`lattice down --name ${o.name}\` first`);
  }
  if (stale) await removeLeftovers(o.stateDir, stale, o.log);
  await mkdir(dir, { recursive: true, mode: 0o700 });

  let link: HostLink | undefined;
  let pools: string[] = [];
  const placeTun: TunPlacement = async ({ cidrs, mtu }) => {
    link = await openHostLink({ ifname: o.ifname, overlayAddrs: cidrs, routes: [...pools, `${SANDBOX_RESOLVER}/32`], mtu });
    const l = link;
    return { tun: l.tun, close: () => l.close() };
  };
  const advertised = [...new Set([...(o.advertiseRoutes ?? []), ...(o.exitNode ? DEFAULT_ROUTES : [])])].sort();
  const routing = advertised.length > 0;
  const { exitNode: _exit, advertiseRoutes: _routes, onOwnRoutes: _own, onPeerRoutes: _peer, dnsUpstream: _dns, ...common } = o;
  // Approved routes of other peers, as kernel routes into the TUN. Directory changes are applied one at a
  // time, in order, and only the newest view is applied (a burst of changes coalesces).
  let record: UpRecord | undefined;
  let peerRoutes: string[] | undefined;
  let newest: readonly Peer[] | undefined;
  let closed = false;
  let applying: Promise<void> = Promise.resolve();
  const writeRecord = (r: UpRecord) => writeFileAtomic(join(dir, UP_FILE), JSON.stringify(r, null, 2) + '\n', 0o600);
  const syncPeerRoutes = (peers: readonly Peer[]) => {
    newest = peers;
    applying = applying
      .then(async () => {
        const l = link;
        if (closed || !l || newest !== peers) return;
        const local = (await listAddresses()).filter((a) => a.ifname !== l.ifname).map((a) => `${a.local}/${a.prefixlen}`);
        const want = hostRoutes({ peers, advertised, local });
        if (peerRoutes && want.routes.join() === peerRoutes.join()) return;
        for (const s of want.skipped.filter((x) => x.why !== 'own')) o.log.warn({ cidr: s.cidr, why: s.why }, 'an approved route of another peer is not routed into the TUN here');
        for (const r of peerRoutes ?? []) if (!want.routes.includes(r)) await l.deleteRoute(r);
        for (const r of want.routes) await l.addRoute(r);
        peerRoutes = want.routes;
        o.log.info({ routes: peerRoutes }, 'routes via peers updated');
        o.onPeerRoutes?.(peerRoutes);
        if (record && !closed) await writeRecord((record = { ...record, routes: l.routes(), peerRoutes }));
      })
      .catch((err: unknown) => o.log.warn({ err: (err as Error).message }, 'routes via peers not updated; the next directory change retries'));
  };
  const enrolled = await enrollAndPrepare({
    ...common,
    placeTun,
    agentApi: false,
    onPeers: syncPeerRoutes,
    ...(routing && { router: { advertiseRoutes: o.advertiseRoutes ?? [], exitNode: o.exitNode === true, onOwnRoutes: o.onOwnRoutes } }),
  });
  let router: Router | undefined;
  try {
    const c = enrolled.credentials;
    pools = overlayCidrs(c).map(formatCidr);
    // The kernel side first: nothing is forwarded before the table filters and NATs it.
    if (routing) router = await openRouter(o.name, { tun: o.ifname, own: c.address, overlay: pools, routes: advertised }, o.log);
    const net = await enrolled.network(`host-${o.name}`, dir);
    const dns = o.exitNode ? await openExitDns({ address: c.address.ipv4, resolve: systemResolver(o.dnsUpstream), monotonic: () => systemClock.monotonic(), log: o.log }).catch(async (err: unknown) => { await net.close(); throw err; }) : undefined;
    await applying;
    record = {
      v: 1,
      pid: process.pid,
      startTicks: processStartTicks(process.pid) ?? 0,
      name: c.name,
      namespace: c.namespace,
      ifname: link!.ifname,
      address: c.address,
      routes: link!.routes(),
      peerRoutes: peerRoutes ?? [],
      ...(router && { router: { advertised, table: router.table } }),
      startedAt: new Date().toISOString(),
    };
    await writeRecord(record);
    let closing: Promise<void> | undefined;
    return {
      record,
      revoked: enrolled.revoked,
      close: () =>
        (closing ??= (async () => {
          closed = true;
          await applying;
          await dns?.close();
          await net.close();
          await router?.close();
          await enrolled.close();
          await rm(join(dir, UP_FILE), { force: true });
          await rmdir(dir).catch(() => undefined);
        })()),
    };
  } catch (err) {
    closed = true;
    await router?.close();
    await enrolled.close();
    throw err;
  }
}

/**
 * What a crashed `up` could leave: its TUN (only if something else kept the fd), its files. The
 * credentials stay (the next `up` reuses them).
 */
async function removeLeftovers(stateDir: string, r: UpRecord, log: Logger): Promise<void> {
  if ((await listLinks()).some((l) => l.ifname === r.ifname)) await ip(['link', 'del', r.ifname]).catch(() => undefined);
  if (await removeRouterTable(r.name).catch(() => false)) log.info({ name: r.name }, 'removed the router table a previous lattice up left');
  const dir = hostDir(stateDir, r.name);
  await rm(join(dir, STATUS_FILE), { force: true });
  await rm(join(dir, UP_FILE), { force: true });
  log.info({ name: r.name, pid: r.pid }, 'removed what a previous lattice up left');
}

/**
 * `lattice down`: stop the `up` of `name` (SIGTERM, then SIGKILL after `graceMs`) and remove what it
 * left. Resolves with what was found: 'stopped' (a live up was stopped), 'cleaned' (only leftovers),
 * 'none' (nothing was up).
 */
export async function hostDown(stateDir: string, name: string, log: Logger, graceMs = 15_000): Promise<'stopped' | 'cleaned' | 'none'> {
  const r = await readUpRecord(stateDir, name);
  if (!r) return 'none';
  let result: 'stopped' | 'cleaned' = 'cleaned';
  if (upAlive(r)) {
    result = 'stopped';
    process.kill(r.pid, 'SIGTERM');
    if (!(await exited(r, graceMs))) {
      log.warn({ pid: r.pid }, 'lattice up did not stop within the grace period; killing it');
      process.kill(r.pid, 'SIGKILL');
      await exited(r, graceMs);
    }
  }
  await removeLeftovers(stateDir, r, log);
  await rmdir(hostDir(stateDir, name)).catch(() => undefined);
  return result;
}

/** Wait for the process of `r` to be gone (polled every 50 ms: a foreign process gives no exit event). */
async function exited(r: UpRecord, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (upAlive(r)) {
    if (Date.now() > deadline) return false;
    await new Promise((res) => setTimeout(res, 50));
  }
  return true;
}

/** `lattice status`: the record and the live status file of `name`; UsageError when it is not up. */
export async function hostStatus(stateDir: string, name: string): Promise<HostStatus> {
  const r = await readUpRecord(stateDir, name);
  if (!r || !upAlive(r)) throw new UsageError(`lattice up ${name} is not running from this state dir; start it with \`lattice up\``);
  let s: SandboxStatus | undefined;
  try {
    s = JSON.parse(await readFile(join(hostDir(stateDir, name), STATUS_FILE), 'utf8')) as SandboxStatus;
  } catch {
    // not written yet
  }
  return { name: r.name, namespace: r.namespace, pid: r.pid, ifname: r.ifname, address: r.address, routes: r.routes, peerRoutes: r.peerRoutes ?? [], advertised: r.router?.advertised ?? [], listenPort: s?.listenPort ?? null, peers: s?.peers ?? [] };
}
