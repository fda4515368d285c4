import { access, constants, readFile } from 'node:fs/promises';
import { execa } from 'execa';
import { Runsc } from './runsc/client.js';
import { kernelMajor, needsNetnsWorkaround } from './runsc/compat.js';
import { UdpBind } from './conn/udp.js';
import { randomBytes } from 'node:crypto';
import { errorMessage } from './errors.js';
import { TunConst, openLinuxTun, setTunOffload } from './tun/linux.js';

export interface Check {
  name: string;
  ok: boolean;
  detail: string;
  /** What to run when it is not ok. */
  fix?: string;
  /** Needed only by some features (named in detail): not ok does not fail `lattice doctor`. */
  optional?: boolean;
}

const SETUP = 'run: make setup (as root)';

async function which(bin: string): Promise<string | undefined> {
  const r = await execa('sh', ['-c', `command -v ${bin}`], { reject: false });
  return r.exitCode === 0 ? String(r.stdout).trim() : undefined;
}

async function versionOf(bin: string, args: string[]): Promise<string | undefined> {
  const r = await execa(bin, args, { reject: false, all: true });
  return r.exitCode === 0 ? String(r.all).split('\n')[0]?.trim() : undefined;
}

/** Everything lattice needs from the host, each ok or missing with the fix. */
export async function runChecks(): Promise<Check[]> {
  const checks: Check[] = [];
  const root = process.getuid?.() === 0;
  checks.push({ name: 'root', ok: root, detail: root ? 'running as root' : `uid ${process.getuid?.()}`, fix: 'rerun with sudo' });

  const runscPath = await which('runsc');
  if (runscPath) {
    const v = await new Runsc({ root: '/tmp' }).version();
    const workaround = needsNetnsWorkaround(v);
    checks.push({ name: 'runsc', ok: true, detail: `${v.raw} at ${runscPath}` });
    checks.push({
      name: 'runsc netns workaround',
      ok: true,
      detail: workaround
        ? `needed (gVisor 10704 on kernel ${kernelMajor()}.x); applied automatically via runsc/lattice-runsc`
        : 'not needed',
    });
  } else {
    checks.push({ name: 'runsc', ok: false, detail: 'not found', fix: SETUP });
  }

  const tun = await access('/dev/net/tun', constants.R_OK | constants.W_OK).then(() => true, () => false);
  checks.push({ name: 'TUN', ok: tun, detail: tun ? '/dev/net/tun usable' : '/dev/net/tun missing or not accessible', fix: 'modprobe tun (and run as root)' });

  const netns = root ? (await execa('unshare', ['--net', 'true'], { reject: false })).exitCode === 0 : false;
  checks.push({ name: 'network namespaces', ok: netns, detail: netns ? 'can create' : 'cannot create (needs root and CAP_SYS_ADMIN)', fix: 'run as root on a kernel with CONFIG_NET_NS' });

  for (const [name, bin, args] of [
    ['nats-server', 'nats-server', ['--version']],
    ['wireguard-go', 'wireguard-go', ['--version']],
    ['wg', 'wg', ['--version']],
    ['ip', 'ip', ['-V']],
  ] as const) {
    const v = (await which(bin)) ? await versionOf(bin, [...args]) : undefined;
    checks.push({ name, ok: v !== undefined, detail: v ?? 'not found', fix: SETUP });
  }

  const dockerd = await which('dockerd');
  const dockerUp = dockerd ? (await execa('docker', ['info', '--format', '{{.ServerVersion}}'], { reject: false })).exitCode === 0 : false;
  checks.push({
    name: 'dockerd',
    ok: dockerUp,
    detail: !dockerd ? 'not installed (only needed for --image and --engine docker)' : dockerUp ? 'running' : 'installed, not running',
    fix: dockerd ? 'start it: dockerd & (or systemctl start docker)' : SETUP,
  });
  checks.push(await udpOffloadCheck());
  checks.push(await tunOffloadCheck());
  checks.push(...(await hostEgressChecks()));
  return checks;
}

/**
 * How the WireGuard UDP socket will move datagrams here (src/conn/udp.ts): "gso" (sendmmsg + UDP GSO),
 * "mmsg" (sendmmsg/recvmmsg) or "dgram" (one syscall per datagram, with the reason). Probed on a loopback
 * socket opened and closed for the purpose. Optional: the fallback works, only slower.
 */
async function udpOffloadCheck(): Promise<Check> {
  try {
    const bind = await UdpBind.open({ host4: '127.0.0.1', host6: '::1' });
    await bind.close();
    const { mode, reason } = bind.offload;
    return {
      name: 'UDP offload', ok: mode === 'gso', optional: true,
      detail: mode === 'gso' ? 'gso: sendmmsg/recvmmsg batches + UDP GSO' : `${mode}${reason ? `: ${reason}` : ''} (WireGuard works, with more syscalls per packet)`,
      fix: mode === 'dgram' ? 'unset LATTICE_UDP_OFFLOAD=off; check that koffi loads (npm ci)' : 'a kernel >= 4.18 for UDP GSO',
    };
  } catch (err) {
    return { name: 'UDP offload', ok: false, optional: true, detail: `cannot open a loopback UDP socket: ${(err as Error).message}` };
  }
}

/**
 * How lattice's TUNs move packets here (src/tun/linux.ts): "coalesce" (opened with IFF_VNET_HDR; the TCP
 * segments one UDP receive burst decrypts are written as one GSO super-packet, which pays in the download
 * direction) or "off" (LATTICE_TUN_OFFLOAD=off: no header, one write per packet); with "coalesce", also
 * whether the kernel accepts TUNSETOFFLOAD (CSUM, TSO4, TSO6), which offloaded reads would need (lattice
 * does not ask for them: runsc's GSO never reaches a TUN whole, see README "TUN offloads"). Probed on a TUN
 * opened as a sandbox's is (openLinuxTun: the environment decides) in this netns and closed at once, so
 * it vanishes (name ltdoc + 6 random hex digits). Optional: the fallback works, only with more writes.
 */
async function tunOffloadCheck(): Promise<Check> {
  const name = 'TUN offload';
  let tun: Awaited<ReturnType<typeof openLinuxTun>>;
  try {
    tun = await openLinuxTun(`ltdoc${randomBytes(3).toString('hex')}`);
  } catch (err) {
    return {
      name, ok: false, optional: true, detail: `cannot open a TUN: ${errorMessage(err)}`,
      fix: 'run as root with the tun module loaded; if only IFF_VNET_HDR is refused, LATTICE_TUN_OFFLOAD=off',
    };
  }
  try {
    if (tun.offload === 'off') {
      return {
        name, ok: false, optional: true,
        detail: 'off: LATTICE_TUN_OFFLOAD=off, no IFF_VNET_HDR, one TUN write per packet (works, with more writes per download)',
        fix: 'unset LATTICE_TUN_OFFLOAD',
      };
    }
    const refused = setTunOffload(tun.fd, TunConst.TUN_F_CSUM | TunConst.TUN_F_TSO4 | TunConst.TUN_F_TSO6);
    return {
      name, ok: true, optional: true,
      detail: 'coalesce: IFF_VNET_HDR, TCP segments of one receive burst written as one GSO super-packet; ' +
        `TUNSETOFFLOAD (CSUM/TSO4/TSO6) ${refused ? `refused (${refused})` : 'accepted'}, not used: reads stay one packet each`,
    };
  } finally {
    await tun.close();
  }
}

/**
 * What host egress (`sandbox run --policy` without WireGuard) needs: nftables, IPv4 forwarding, a
 * default route, and a forward path that a filtering FORWARD chain does not silently drop.
 */
export async function hostEgressChecks(): Promise<Check[]> {
  const checks: Check[] = [];
  const nftMissing = !(await which('nft'));
  const nft = nftMissing ? { exitCode: 127, stderr: '' } : await execa('nft', ['list', 'tables'], { reject: false });
  checks.push({
    name: 'nftables',
    ok: nft.exitCode === 0,
    detail: nftMissing ? 'nft not found (host egress needs it)' : nft.exitCode === 0 ? 'nft works' : `nft fails: ${String(nft.stderr).trim().split('\n')[0]}`,
    fix: nftMissing ? 'apt-get install nftables (or: make setup)' : 'run as root on a kernel with nf_tables (modprobe nf_tables)',
    optional: true,
  });
  const fwd = (await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8').catch(() => '')).trim();
  checks.push({
    name: 'IPv4 forwarding',
    ok: fwd === '1',
    detail: fwd === '1' ? 'on' : 'off: the first host-egress sandbox turns it on (as Docker does) and leaves it on',
    fix: 'sysctl -w net.ipv4.ip_forward=1 (persist it in /etc/sysctl.d/ if you want)',
    optional: true,
  });
  const route = await execa('ip', ['-4', 'route', 'show', 'default'], { reject: false });
  const hasDefault = route.exitCode === 0 && String(route.stdout).trim() !== '';
  checks.push({
    name: 'default route',
    ok: hasDefault,
    detail: hasDefault ? String(route.stdout).trim().split('\n')[0]! : 'none: host egress has nowhere to send allowed flows',
    fix: 'give the host a default route (ip route add default via GATEWAY)',
    optional: true,
  });
  const dockerUser = await execa('iptables', ['-w', '-S', 'DOCKER-USER'], { reject: false });
  const forward = await execa('iptables', ['-w', '-S', 'FORWARD'], { reject: false });
  const drops = forward.exitCode === 0 && /^-P FORWARD DROP/m.test(String(forward.stdout));
  checks.push({
    name: 'forward filter',
    ok: true,
    detail:
      dockerUser.exitCode === 0
        ? "Docker's DOCKER-USER chain: each host-egress sandbox adds two ACCEPT rules for its egress TUN there (comment lattice-egress)"
        : drops
          ? 'iptables FORWARD drops by default: each host-egress sandbox inserts two ACCEPT rules for its egress TUN (comment lattice-egress)'
          : 'FORWARD not filtered by iptables',
  });
  return checks;
}
