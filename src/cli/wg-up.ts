/**
 * `lattice wg up`: a standalone userspace peer. Host I/O around the pure Device (hence in cli/, not wg/):
 * DNS for endpoint names, the UDP Bind, a Linux TUN with addresses, MTU and routes for AllowedIPs
 * (`ip`), an interval ticker, and a status file that `wg show` reads.
 *
 * Status: <stateDir>/wg/<ifname>.json, rewritten atomically every second while up and removed on exit.
 * It holds the public key, listen port, pid and per-peer status (never private or preshared keys).
 */
import { lookup } from 'node:dns/promises';
import { readdir, readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { systemClock } from '../clock.js';
import { LatticeError, UsageError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import type { Logger } from '../log.js';
import { UdpBind } from '../conn/udp.js';
import { IntervalTicker } from '../conn/ticker.js';
import { openLinuxTun, type TunStats } from '../tun/linux.js';
import { addAddress, addRoute, IpError, setLinkUp } from '../netns/ip.js';
import type { WgConfig } from '../wg/config.js';
import { DefaultMTU } from '../wg/constants.js';
import { Device, type DeviceStats } from '../wg/device.js';
import { encodeKey } from '../wg/keys.js';
import type { PeerStatus } from '../wg/peer.js';
import type { Endpoint } from '../conn/bind.js';

export interface WgStatusFile {
  interface: string;
  publicKey: string;
  listenPort: number;
  pid: number;
  updatedAt: number;
  peers: PeerStatus[];
  stats: DeviceStats;
  /** The TUN's counters and offload mode (src/tun/linux.ts): txWrites below txPackets when segments were coalesced. */
  tun?: TunStats & { offload: string };
}

/** Where `wg up` keeps its status files: <stateDir>/wg. */
export function statusDir(stateDir: string): string {
  return join(stateDir, 'wg');
}

async function resolveEndpoint(hostPort: string): Promise<Endpoint> {
  const i = hostPort.lastIndexOf(':');
  const host = hostPort.slice(0, i);
  const port = Number(hostPort.slice(i + 1));
  try {
    const r = await lookup(host);
    return { address: r.address, port };
  } catch (err) {
    throw new LatticeError('EWG_ENDPOINT', `cannot resolve Endpoint host "${host}"; use an IP address or fix DNS`, { cause: err });
  }
}

export interface WgUpHandle {
  device: Device;
  ifname: string;
  port: number;
  /** How the UDP socket moves datagrams: "gso", "mmsg" or "dgram" (src/conn/udp.ts). */
  udpOffload: string;
  /** How the TUN moves packets: "coalesce" (IFF_VNET_HDR, TCP segments merged on write) or "off" (src/tun/linux.ts). */
  tunOffload: string;
  /** Resolves when the peer has shut down (after stop()). */
  stop(): Promise<void>;
}

/**
 * Bring up a standalone peer from a wg-quick style config: TUN `ifname` with its Address, MTU and routes
 * for AllowedIPs, the UDP bind, the Device; status under `stateDir`. Resolves once it is up; `stop`
 * removes what it added. Throws `UsageError` (bad interface name), `LatticeError` `EWG_ENDPOINT`/`EWG_BIND`
 * (unresolvable endpoint, taken port) or `TunError`, each a one-line message.
 */
export async function wgUp(cfg: WgConfig, opts: { ifname: string; stateDir: string; log: Logger }): Promise<WgUpHandle> {
  if (opts.ifname.length > 15) throw new UsageError(`interface name "${opts.ifname}" is longer than 15 characters; pass --tun NAME`);
  const mtu = cfg.interface.mtu ?? DefaultMTU;
  const peers = await Promise.all(
    cfg.peers.map(async (p) => ({ ...p, endpoint: p.endpoint ?? (p.endpointHost ? await resolveEndpoint(p.endpointHost) : undefined) })),
  );
  const bind = await UdpBind.open({ port: cfg.interface.listenPort ?? 0 }).catch((err: unknown) => {
    throw new LatticeError('EWG_BIND', `cannot bind UDP port ${cfg.interface.listenPort ?? 0}: ${(err as Error).message}; pick another ListenPort`, { cause: err });
  });
  let tun;
  try {
    tun = await openLinuxTun(opts.ifname, { mtu });
  } catch (err) {
    await bind.close();
    throw err;
  }
  const device = new Device({ privateKey: cfg.interface.privateKey, bind, clock: systemClock, mtu, tun, ticker: new IntervalTicker(100) });
  const cleanup = async () => {
    await device.close();
    await tun.close();
  };
  try {
    for (const p of peers) device.addPeer(p);
    for (const a of cfg.interface.addresses) await addAddress(tun.name, a);
    await setLinkUp(tun.name, { mtu });
    for (const p of peers) {
      for (const prefix of p.allowedIPs) {
        try {
          await addRoute(prefix, { dev: tun.name });
        } catch (err) {
          // The connected route of an Address may already cover it (wg-quick skips those too).
          if (!(err instanceof IpError && /File exists/.test(err.stderr))) throw err;
        }
      }
    }
  } catch (err) {
    await cleanup();
    throw err;
  }
  device.up();

  const statusPath = join(statusDir(opts.stateDir), `${tun.name}.json`);
  const writeStatus = async () => {
    const s: WgStatusFile = {
      interface: tun.name,
      publicKey: encodeKey(device.publicKey),
      listenPort: bind.port,
      pid: process.pid,
      updatedAt: Date.now(),
      peers: device.peerStatus(),
      stats: device.stats,
      tun: { ...tun.stats, offload: tun.offload },
    };
    await writeFileAtomic(statusPath, JSON.stringify(s, null, 2) + '\n', 0o600);
  };
  await writeStatus();
  let writing = false;
  const timer = setInterval(() => {
    if (writing) return;
    writing = true;
    writeStatus()
      .catch((err: unknown) => opts.log.warn({ err }, 'cannot write wg status file'))
      .finally(() => {
        writing = false;
      });
  }, 1000);
  opts.log.info({ ifname: tun.name, port: bind.port, publicKey: encodeKey(device.publicKey) }, 'wg up');
  let stopped: Promise<void> | undefined;
  return {
    device,
    ifname: tun.name,
    port: bind.port,
    udpOffload: bind.offload.mode,
    tunOffload: tun.offload,
    stop: () =>
      (stopped ??= (async () => {
        clearInterval(timer);
        await cleanup();
        await unlink(statusPath).catch(() => undefined);
      })()),
  };
}

/** Status of every `wg up` on this host (stale files of dead processes are skipped). */
export async function readStatuses(stateDir: string): Promise<WgStatusFile[]> {
  const dir = statusDir(stateDir);
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => n.endsWith('.json') && !n.startsWith('.'));
  } catch {
    return [];
  }
  const out: WgStatusFile[] = [];
  for (const n of names.sort()) {
    try {
      const s = JSON.parse(await readFile(join(dir, n), 'utf8')) as WgStatusFile;
      try {
        process.kill(s.pid, 0);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ESRCH') continue;
      }
      out.push(s);
    } catch {
      // A torn or foreign file: skip.
    }
  }
  return out;
}

function ago(ms: number, now: number): string {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s} seconds ago`;
  const m = Math.floor(s / 60);
  return `${m} minute${m === 1 ? '' : 's'}, ${s % 60} seconds ago`;
}

function bytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(2)} ${units[i]}`;
}

/** wg(8)-like text. */
export function formatStatus(statuses: WgStatusFile[], now = Date.now()): string {
  const lines: string[] = [];
  for (const s of statuses) {
    lines.push(`interface: ${s.interface}`, `  public key: ${s.publicKey}`, `  listening port: ${s.listenPort}`, '');
    for (const p of s.peers) {
      lines.push(`peer: ${p.publicKey}`);
      if (p.endpoint) lines.push(`  endpoint: ${p.endpoint}`);
      lines.push(`  allowed ips: ${p.allowedIPs.length ? p.allowedIPs.join(', ') : '(none)'}`);
      if (p.latestHandshake) lines.push(`  latest handshake: ${ago(p.latestHandshake, now)}`);
      lines.push(`  transfer: ${bytes(p.rxBytes)} received, ${bytes(p.txBytes)} sent`);
      if (p.persistentKeepalive) lines.push(`  persistent keepalive: every ${p.persistentKeepalive} seconds`);
      lines.push('');
    }
  }
  return lines.join('\n');
}
