/**
 * `lattice up`, `lattice down`, `lattice status`: this host as an overlay peer (src/host/). Wiring only.
 */
import type { Command } from 'commander';
import { hostname } from 'node:os';
import { resolveStateDir } from '../state.js';
import { UsageError } from '../errors.js';
import { formatCidr, parseCidr } from '../net/addr.js';
import { globalOpts } from './run.js';
import { checkControlPlaneUrl, printTable } from './sandbox.js';
import { stopSignal } from './stop-signal.js';

/** The default node name: the host name, lower-cased, with anything a name cannot hold replaced by '-'. */
function defaultName(): string {
  return hostname().toLowerCase().replace(/[^a-z0-9-]/g, '-').replace(/^-+|-+$/g, '').slice(0, 63) || 'host';
}

/** `--advertise-routes 10.200.0.0/24,192.168.5.0/24`: canonical CIDRs, or a UsageError naming the bad one. */
export function parseRoutesFlag(text: string): string[] {
  const out: string[] = [];
  for (const item of text.split(',').map((s) => s.trim()).filter(Boolean)) {
    const p = parseCidr(item, { bare: 'refuse' });
    if (!p.ok) {
      throw new UsageError(p.reason === 'host-bits' ? `--advertise-routes ${item}: has host bits set; write the network, ${p.network}` : `--advertise-routes ${item}: not a CIDR; use e.g. 10.200.0.0/24,192.168.5.0/24`);
    }
    out.push(formatCidr(p.cidr));
  }
  if (out.length === 0) throw new UsageError('--advertise-routes names no route; use e.g. 10.200.0.0/24');
  return out;
}

function requireRootFor(what: string): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) throw new UsageError(`lattice ${what} needs root (TUN, routes, nftables); rerun with sudo`);
}

/** Register `up`, `down` and `status` on the CLI program. */
export function registerUp(program: Command): void {
  program
    .command('up')
    .description('join this host to the overlay as a peer (foreground; stop it with `lattice down` or Ctrl-C)')
    .option('--control-plane <url>', 'control plane NATS URL (first start; the identity remembers it)')
    .option('--token <token>', 'one-time enrollment token (first start only; also $LATTICE_TOKEN)')
    .option('--name <name>', 'node name in the directory (default: the host name)')
    .option('--tun <ifname>', 'name of the TUN interface', 'lattice0')
    .option('--advertise <host>', 'address peers reach our WireGuard port at', '127.0.0.1')
    .option('--listen-port <port>', 'WireGuard UDP port (default: any free port)')
    .option('--audit-log <file>', 'also append audit events here as JSON lines')
    .option('--advertise-routes <cidrs>', 'subnets this host routes for, comma-separated (each forwards once an operator approves it: lattice route approve)')
    .option('--exit-node', 'offer this host as an exit node (advertises 0.0.0.0/0 and ::/0; approval as for routes); it answers DNS on its overlay address for the sandboxes that use it')
    .option('--dns-upstream <addr>', 'with --exit-node: the resolver its DNS forwarder asks, ADDR or ADDR:PORT (repeatable; default: /etc/resolv.conf)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .action(async (o: Record<string, string | undefined> & { exitNode?: boolean }, command: Command) => {
      const g = globalOpts(command);
      requireRootFor('up');
      const stateDir = resolveStateDir(g.stateDir);
      if (o.controlPlane !== undefined) checkControlPlaneUrl(o.controlPlane);
      const listenPort = o.listenPort === undefined ? undefined : Number(o.listenPort);
      if (listenPort !== undefined && !(Number.isInteger(listenPort) && listenPort > 0 && listenPort < 65536)) {
        throw new UsageError(`--listen-port ${o.listenPort} is not a UDP port; use 1-65535`);
      }
      const dnsUpstream = (o as unknown as { dnsUpstream: string[] }).dnsUpstream;
      if (dnsUpstream.length > 0 && o.exitNode !== true) throw new UsageError('--dns-upstream is the exit node\'s DNS forwarder\'s resolver; give it with --exit-node');
      const { checkDnsUpstream } = await import('../sandbox/egress-network.js');
      dnsUpstream.forEach(checkDnsUpstream);
      const advertiseRoutes = o.advertiseRoutes === undefined ? undefined : parseRoutesFlag(o.advertiseRoutes);
      const [{ createLogger }, { hostUp }] = await Promise.all([import('../log.js'), import('../host/up.js')]);
      const log = createLogger({ level: g.debug ? 'debug' : undefined });
      const name = o.name ?? defaultName();
      const up = await hostUp({
        stateDir,
        name,
        ifname: o.tun!,
        controlPlaneUrl: o.controlPlane,
        token: o.token ?? process.env.LATTICE_TOKEN,
        advertiseHost: o.advertise,
        listenPort,
        auditLog: o.auditLog,
        advertiseRoutes,
        exitNode: o.exitNode === true,
        dnsUpstream,
        onOwnRoutes: (approved) => console.error(`lattice: forwarding for approved routes: ${approved.join(' ') || 'none'}`),
        onPeerRoutes: (routes) => console.error(`lattice: routes via peers: ${routes.join(' ') || 'none'}`),
        log,
      });
      const r = up.record;
      console.error(`lattice: ${r.namespace}/${r.name} is up on ${r.ifname} at ${r.address.ipv4} (${r.address.ipv6})`);
      const why = await Promise.race([stopSignal(), up.revoked.then(() => 'revoked')]);
      log.info({ why }, 'lattice up stopping');
      await up.close();
      console.error(`lattice: ${r.namespace}/${r.name} is down`);
      if (why === 'revoked') process.exitCode = 1;
    });

  program
    .command('down')
    .description('stop `lattice up` (run from another shell) and remove what it added')
    .option('--name <name>', 'node name (default: the host name)')
    .action(async (o: { name?: string }, command: Command) => {
      const g = globalOpts(command);
      requireRootFor('down');
      const [{ createLogger }, { hostDown }] = await Promise.all([import('../log.js'), import('../host/up.js')]);
      const name = o.name ?? defaultName();
      const r = await hostDown(resolveStateDir(g.stateDir), name, createLogger({ level: g.debug ? 'debug' : undefined }));
      console.log(r === 'stopped' ? `${name} is down` : r === 'cleaned' ? `${name} was not running; removed what it left` : `${name} is not up`);
    });

  program
    .command('status')
    .description('this host on the overlay: address, routes, peers, handshakes, bytes, path')
    .option('--name <name>', 'node name (default: the host name)')
    .option('--json', 'print JSON')
    .action(async (o: { name?: string; json?: boolean }, command: Command) => {
      const [{ hostStatus }, { statusRows }] = await Promise.all([import('../host/up.js'), import('../sandbox/nat-status.js')]);
      const s = await hostStatus(resolveStateDir(globalOpts(command).stateDir), o.name ?? defaultName());
      if (o.json) {
        console.log(JSON.stringify(s, null, 2));
        return;
      }
      console.log(`${s.namespace}/${s.name}  ${s.address.ipv4} ${s.address.ipv6}  dev ${s.ifname}  port ${s.listenPort ?? '-'}`);
      console.log(`routes: ${s.routes.join(' ') || '-'}`);
      if (s.peerRoutes.length) console.log(`via peers: ${s.peerRoutes.join(' ')} (approved routes of other peers)`);
      if (s.advertised.length) console.log(`advertised: ${s.advertised.join(' ')} (approval: lattice route ls)`);
      const rows = statusRows([{ v: 1, id: s.name, name: s.name, agent: { namespace: s.namespace, name: s.name, address: '' }, updatedAt: '', listenPort: s.listenPort ?? 0, natTraversal: false, peers: s.peers }], Date.now());
      printTable(
        rows.map(({ sandbox: _, ...rest }) => rest),
        ['peer', 'endpoint', 'handshake', 'rx', 'tx', 'path', 'rtt'],
      );
    });
}
