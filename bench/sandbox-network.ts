/**
 * Sandbox network throughput: `npx tsx bench/sandbox-network.ts` (root; build first: npm run build).
 *
 * TCP throughput (iperf3, sandbox -> peer) from inside a gVisor sandbox, three ways, interleaved in one run:
 *   lattice  runsc on lattice's TUN -> pump (policy, flows) -> TypeScript WireGuard -> UDP -> wireguard-go peer
 *   veth     runsc on a plain veth to a peer netns: the same gVisor netstack without TUN/WireGuard/policy (ceiling)
 *   wg-wg    wireguard-go <-> wireguard-go, two netns over a veth: what WireGuard in userspace costs natively
 * All three carry 1420-byte inner packets (the veth is set to the WireGuard MTU) and runsc runs with the same
 * flags (lattice's Runsc client: --gso=false etc.). Prints medians, both ratios, and where the time goes:
 * the launcher's CPU per run and the top self-time functions of one profiled lattice run (node --cpu-prof).
 *
 * In the same rounds, lattice against wg-wg only (one sandbox run per round does all three):
 *   UDP   iperf3 -u, 1392-byte datagrams (one inner MTU), at UDP_MBPS offered (default 100) and at max (-b 0):
 *         delivered Mbit/s (receiver side) and loss %;
 *   ping  PINGS (default 200) echo requests 20 ms apart, the first (handshake, ARP-free warm-up) left out: RTT p50/p99;
 *   floors UDP and ping on the plain veth too (gVisor's netstack alone), and a kernel-to-kernel ping over wg-wg's
 *         underlay ("native"): what each WireGuard hop adds is lattice - veth against wg-wg - native;
 *   CPU   launcher CPU-seconds per GB moved (TCP runs) next to the sending wireguard-go's and both ends'; and the
 *         whole machine's CPU in each TCP transfer's window (bench/support/cpu.ts): per GB, less the background
 *         load, with and without the launcher, and from that an estimate of what a launcher that cost nothing
 *         could reach on this machine (if CPU were the only limit).
 *
 * Download (iperf3 -R: the peer sends, the sandbox receives), in the same rounds: lattice, veth and wg-wg, and
 * lattice once more with LATTICE_TUN_OFFLOAD=off (no virtio-net header: one TUN write per decrypted segment,
 * where "on" coalesces the segments of one receive burst into one GSO super-packet write, src/tun/offload.ts).
 * Printed as medians, ratios (lattice / wg-wg, lattice / veth, coalescing on / off) and the launcher's CPU-s
 * per GB next to the receiving wireguard-go's.
 * Figures and ratios only; nothing here passes or fails.
 *
 * Everything lives in namespaces/links named ltbench-*; all are removed in finally. ROUNDS (3) and SECS (5).
 * ~8 min with the defaults (each round: 8 TCP runs, 3 UDP/ping runs and a native ping; 9 runs in a fresh sandbox).
 */
import { execa, type ResultPromise } from 'execa';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildSpec } from '../src/oci/spec.js';
import { writeBundle } from '../src/oci/bundle.js';
import { Runsc } from '../src/runsc/client.js';
import { REPO, CLI } from '../e2e/support/env.js';
import { startWgPeer, genKeypair, waitFor, type WgPeer } from '../e2e/support/wgpeer.js';
import { addIperf3, iperfArgs as iperfClientArgs, parseIperf, type Iperf } from './support/iperf.js';
import { firstChild, processTicks, sampleTransfer, type TransferCpu } from './support/cpu.js';

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const SECS = Number(process.env.SECS ?? 5);
const UDP_MBPS = Number(process.env.UDP_MBPS ?? 100);
const PINGS = Number(process.env.PINGS ?? 200);
const MTU = 1420;
/** iperf3 -u payload: a 1420-byte inner packet minus the IPv4 and UDP headers, so nothing fragments. */
const UDP_LEN = MTU - 20 - 8;
const CORES = availableParallelism();
const P = 'ltbench';
const SANDBOX_PORT = 51995;
const SANDBOX_IP = '10.127.0.2';
const PEER_IP = '10.127.0.10';
// veth ceiling: sandbox netns <-> peer netns
const VS = `${P}-vs`;
const VP = `${P}-vp`;
const VETH_S = '10.128.0.1';
const VETH_P = '10.128.0.2';
// wireguard-go <-> wireguard-go
const WA = `${P}-wa`;
const WB = `${P}-wb`;
const WG_A = `${P}wa`;
const WG_B = `${P}wb`;
const WG_A_IP = '10.130.0.1';
const WG_B_IP = '10.130.0.2';

if (process.getuid?.() !== 0) {
  console.log('sandbox-network bench: needs root (netns, runsc); skipped');
  process.exit(0);
}

const sh = (cmd: string[]) => execa(cmd[0]!, cmd.slice(1));
const children: ResultPromise[] = [];
/** A long-lived helper process, killed in finally; only its pid is handed out. */
const spawnKeep = (cmd: string[], env?: Record<string, string>): { pid: number | undefined } => {
  const c = execa(cmd[0]!, cmd.slice(1), { reject: false, env, stdout: 'ignore', stderr: 'ignore' });
  children.push(c);
  return { pid: c.pid };
};

const iperfArgs = (server: string) => iperfClientArgs(server, SECS);
/** The download direction: iperf3 -R, the server (peer) sends and the client (sandbox / A) receives. */
const iperfDownArgs = (server: string) => [...iperfArgs(server), '-R'];
/** iperf3 -u at `mbps` offered (0: as fast as it can send). */
const iperfUdpArgs = (server: string, mbps: number) => [...iperfArgs(server), '-u', '-l', String(UDP_LEN), '-b', mbps ? `${mbps}M` : '0'];
/** busybox ping (the same tool inside the sandbox and on the host): PINGS requests, 20 ms apart. */
const pingArgs = (server: string) => ['busybox', 'ping', '-c', String(PINGS), '-i', '0.02', '-W', '5', server];

interface IperfUdp {
  /** What arrived (receiver side) and what was offered (sender side), Mbit/s. */
  mbps: number;
  sentMbps: number;
  lossPct: number;
}

/** iperf3 -u -J client output: the receiver's rate and loss (iperf3 3.12 reports both in end.sum_received). */
function parseIperfUdp(out: string, what: string): IperfUdp {
  const start = out.indexOf('{');
  if (start < 0) throw new Error(`${what}: no iperf3 JSON in output: ${out.slice(0, 400)}`);
  type Sum = { bits_per_second: number; lost_percent?: number };
  const j = JSON.parse(out.slice(start)) as { error?: string; end?: { sum?: Sum; sum_sent?: Sum; sum_received?: Sum } };
  const rx = j.end?.sum_received;
  if (j.error || !rx) throw new Error(`${what}: iperf3 -u failed: ${j.error ?? 'no summary'}`);
  return { mbps: rx.bits_per_second / 1e6, sentMbps: (j.end?.sum_sent?.bits_per_second ?? NaN) / 1e6, lossPct: rx.lost_percent ?? j.end?.sum?.lost_percent ?? NaN };
}

/** Round-trip times (ms) of `ping` output, the first reply left out (it may carry a handshake). */
function parsePing(out: string, what: string): number[] {
  const rtts = [...out.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  if (rtts.length < 2) throw new Error(`${what}: ${rtts.length} ping replies: ${out.slice(-400)}`);
  return rtts.slice(1);
}

/** The q-quantile (0..1) of `xs`, nearest rank. */
const quantile = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.ceil(q * xs.length) - 1)]!;

/** The JSON documents and ping output of one "UDP fixed; UDP max; ping" run, split at the marker lines. */
const SPLIT = '--- lattice-bench-split ---';
function udpPingScript(server: string): string[] {
  const q = (a: string[]) => a.join(' ');
  return ['sh', '-c', `${q(iperfUdpArgs(server, UDP_MBPS))}; echo '${SPLIT}'; ${q(iperfUdpArgs(server, 0))}; echo '${SPLIT}'; ${q(pingArgs(server))}`];
}
function parseUdpPing(out: string, what: string): { fixed: IperfUdp; max: IperfUdp; rtts: number[] } {
  const [a = '', b = '', c = ''] = out.split(SPLIT);
  return { fixed: parseIperfUdp(a, `${what} udp ${UDP_MBPS}M`), max: parseIperfUdp(b, `${what} udp max`), rtts: parsePing(c, `${what} ping`) };
}

/** /proc/PID/stat utime+stime in seconds (USER_HZ ticks); 0 when it is gone. */
const procCpu = async (pid: number | undefined): Promise<number> => ((await processTicks(pid)) ?? 0) / 100;

interface CpuProfile {
  nodes: Array<{ id: number; children?: number[]; callFrame: { functionName: string; url: string; lineNumber: number } }>;
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/**
 * Self time by function and by module, counted only inside the transfer window: from the first to the last
 * sample in the WireGuard data crypto (start-up, module loading and teardown would otherwise dilute it).
 */
function summariseProfile(name: string, p: CpuProfile): void {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const where = (id: number) => {
    const cf = byId.get(id)!.callFrame;
    const url = cf.url.replace(/^file:\/\//, '').replace(REPO, '').replace(/^.*node_modules\//, 'node_modules/');
    return { text: `${cf.functionName || '(anonymous)'}  ${url}${url ? ':' + (cf.lineNumber + 1) : ''}`, url };
  };
  const label = (id: number) => {
    const name = byId.get(id)!.callFrame.functionName;
    const { text, url } = where(id);
    // A native frame (a binding: the syscall itself) is named with its JS caller, so one sees whose syscall it is.
    const up = parent.get(id);
    const fn = !url && !name.startsWith('(') && up !== undefined ? `${text.trim()} (native) <- ${where(up).text}` : text;
    return { fn, url, name };
  };
  const isData = (id: number) => /dist\/wg\/crypto\.js$/.test(label(id).url);
  let first = -1;
  let last = -1;
  p.samples.forEach((id, i) => {
    if (isData(id)) {
      if (first < 0) first = i;
      last = i;
    }
  });
  if (first < 0) [first, last] = [0, p.samples.length - 1];
  let t = 0;
  let windowUs = 0;
  let idle = 0;
  let busy = 0;
  const fnHits = new Map<string, number>();
  const modHits = new Map<string, number>();
  for (let i = 0; i < p.samples.length; i++) {
    t += p.timeDeltas[i] ?? 0;
    if (i < first || i > last) continue;
    windowUs += p.timeDeltas[i] ?? 0;
    const l = label(p.samples[i]!);
    if (l.name === '(idle)') {
      idle++;
      continue;
    }
    busy++;
    fnHits.set(l.fn, (fnHits.get(l.fn) ?? 0) + 1);
    const mod = l.url
      ? l.url.replace(/^(node_modules\/(?:@[^/]+\/)?[^/]+|dist\/[^/]+|node:[^/:]+).*$/, '$1')
      : l.name.startsWith('(') ? l.name : '(native: syscalls, C++ bindings)';
    modHits.set(mod, (modHits.get(mod) ?? 0) + 1);
  }
  const pct = (v: number) => `${((100 * v) / Math.max(busy, 1)).toFixed(1).padStart(5)}%`;
  console.log(`${name}: transfer window ${(windowUs / 1e6).toFixed(1)} s of ${(t / 1e6).toFixed(1)} s profiled; ` +
    `launcher main thread busy ${((100 * busy) / Math.max(busy + idle, 1)).toFixed(0)}% of it`);
  console.log('  top 10 self time (% of busy samples in the window):');
  for (const [k, v] of [...fnHits.entries()].sort((a, b) => b[1] - a[1]).slice(0, 10)) console.log(`  ${pct(v)}  ${k}`);
  console.log('  by module:');
  for (const [k, v] of [...modHits.entries()].sort((a, b) => b[1] - a[1]).slice(0, 8)) console.log(`  ${pct(v)}  ${k}`);
}

/** Thrown to end the measured part early (PROFILE=0). */
class Done extends Error {}

const work = await mkdtemp(join(tmpdir(), 'lt-bench-net-'));
let peer: WgPeer | undefined;
const runsc = new Runsc({ root: join(work, 'runsc'), network: 'sandbox' });
/** The same runsc for the one veth case that pings (raw sockets need --net-raw, as lattice passes for NET_RAW). */
const runscRaw = new Runsc({ root: join(work, 'runsc'), network: 'sandbox', netRaw: true });
const liveContainers = new Set<string>();

async function cleanupNet(): Promise<void> {
  for (const ns of [VS, VP, WA, WB]) await execa('ip', ['netns', 'del', ns], { reject: false });
  for (const s of [WG_A, WG_B, `${P}wg`]) await rm(`/var/run/wireguard/${s}.sock`, { force: true });
}

try {
  await cleanupNet();
  const t0 = performance.now();
  const rootfs = join(work, 'rootfs');
  await execa('sh', [join(REPO, 'bundles/demo/build-rootfs.sh'), rootfs]);
  await addIperf3(rootfs);

  // --- lattice: wireguard-go peer in its own netns; the sandbox's WireGuard is lattice's TS device.
  const keys = await genKeypair();
  peer = await startWgPeer({
    prefix: P, dir: work, sandboxPublicKey: keys.publicKey, sandboxPort: SANDBOX_PORT, sandboxAllowedIPs: `${SANDBOX_IP}/32`,
    overlay: PEER_IP, hostAddr: '10.126.0.1', peerAddr: '10.126.0.2', httpPorts: [],
  });
  const peerIperf = spawnKeep(['ip', 'netns', 'exec', peer.netns, 'iperf3', '-s', '-B', PEER_IP]);
  const wgConf = join(work, 'wg.conf');
  await writeFile(wgConf,
    `[Interface]\nPrivateKey = ${keys.privateKey}\nAddress = ${SANDBOX_IP}/32\nListenPort = ${SANDBOX_PORT}\nMTU = ${MTU}\n\n` +
      `[Peer]\nPublicKey = ${peer.publicKey}\nAllowedIPs = 10.127.0.0/24\nEndpoint = ${peer.endpoint}\nPersistentKeepalive = 5\n`,
    { mode: 0o600 });
  const policyFile = join(work, 'policy.json');
  await writeFile(policyFile, JSON.stringify({
    version: 1, mode: 'enforce',
    egress: [
      { id: 'iperf', action: 'allow', cidrs: [`${PEER_IP}/32`], ports: [5201], protocol: 'tcp' },
      { id: 'iperf-udp', action: 'allow', cidrs: [`${PEER_IP}/32`], ports: [5201], protocol: 'udp' },
      { id: 'ping', action: 'allow', cidrs: [`${PEER_IP}/32`], protocol: 'icmp' },
    ], ingress: [],
  }));

  // --- veth ceiling: sandbox netns with one veth to a peer netns running iperf3 -s.
  await sh(['ip', 'netns', 'add', VS]);
  await sh(['ip', 'netns', 'add', VP]);
  await sh(['ip', '-n', VS, 'link', 'add', `${P}-vs0`, 'mtu', String(MTU), 'type', 'veth', 'peer', 'name', `${P}-vp0`, 'netns', VP]);
  await sh(['ip', '-n', VP, 'link', 'set', `${P}-vp0`, 'mtu', String(MTU)]);
  await sh(['ip', '-n', VS, 'addr', 'add', `${VETH_S}/30`, 'dev', `${P}-vs0`]);
  await sh(['ip', '-n', VP, 'addr', 'add', `${VETH_P}/30`, 'dev', `${P}-vp0`]);
  for (const [ns, dev] of [[VS, `${P}-vs0`], [VP, `${P}-vp0`], [VS, 'lo'], [VP, 'lo']] as const) await sh(['ip', '-n', ns, 'link', 'set', dev, 'up']);
  const vethIperf = spawnKeep(['ip', 'netns', 'exec', VP, 'iperf3', '-s', '-B', VETH_P]);

  // --- wireguard-go <-> wireguard-go over a veth between two netns (same layout as lattice <-> peer).
  await sh(['ip', 'netns', 'add', WA]);
  await sh(['ip', 'netns', 'add', WB]);
  await sh(['ip', '-n', WA, 'link', 'add', `${P}-wa0`, 'type', 'veth', 'peer', 'name', `${P}-wb0`, 'netns', WB]);
  await sh(['ip', '-n', WA, 'addr', 'add', '10.129.0.1/30', 'dev', `${P}-wa0`]);
  await sh(['ip', '-n', WB, 'addr', 'add', '10.129.0.2/30', 'dev', `${P}-wb0`]);
  for (const [ns, dev] of [[WA, `${P}-wa0`], [WB, `${P}-wb0`], [WA, 'lo'], [WB, 'lo']] as const) await sh(['ip', '-n', ns, 'link', 'set', dev, 'up']);
  const wgA = spawnKeep(['ip', 'netns', 'exec', WA, 'wireguard-go', '-f', WG_A], { WG_PROCESS_FOREGROUND: '1' });
  const wgB = spawnKeep(['ip', 'netns', 'exec', WB, 'wireguard-go', '-f', WG_B], { WG_PROCESS_FOREGROUND: '1' });
  const ka = await genKeypair();
  const kb = await genKeypair();
  await writeFile(join(work, 'a.key'), ka.privateKey + '\n', { mode: 0o600 });
  await writeFile(join(work, 'b.key'), kb.privateKey + '\n', { mode: 0o600 });
  for (const [ns, dev, key, other, port, ep, ip] of [
    [WA, WG_A, 'a.key', kb.publicKey, '51820', '10.129.0.2:51821', WG_A_IP],
    [WB, WG_B, 'b.key', ka.publicKey, '51821', '10.129.0.1:51820', WG_B_IP],
  ] as const) {
    await waitFor(async () => (await execa('ip', ['-n', ns, 'link', 'show', dev], { reject: false })).exitCode === 0, 10_000, `${dev} up`);
    await sh(['ip', 'netns', 'exec', ns, 'wg', 'set', dev, 'private-key', join(work, key), 'listen-port', port,
      'peer', other, 'allowed-ips', '10.130.0.0/24', 'endpoint', ep]);
    await sh(['ip', '-n', ns, 'addr', 'add', `${ip}/24`, 'dev', dev]);
    await sh(['ip', '-n', ns, 'link', 'set', dev, 'mtu', String(MTU), 'up']);
  }
  spawnKeep(['ip', 'netns', 'exec', WB, 'iperf3', '-s', '-B', WG_B_IP]);
  await new Promise((r) => setTimeout(r, 500)); // iperf3 servers listening
  console.log(`setup ${((performance.now() - t0) / 1000).toFixed(1)} s; ${ROUNDS} rounds x (4 TCP cases + UDP/ping for lattice and wg-wg) x ${SECS} s iperf3, interleaved; and 4 TCP download cases (iperf3 -R) per round`);

  const state = join(work, 'state');
  // Writes the launcher's own CPU time (process.cpuUsage) on exit, without touching the CLI.
  const cpuHook = 'data:text/javascript,' + encodeURIComponent(
    'import fs from "node:fs"; process.on("exit", () => { if (process.env.LT_CPU_OUT) fs.writeFileSync(process.env.LT_CPU_OUT, JSON.stringify(process.cpuUsage())); });');

  /** One lattice run: iperf3 in the sandbox. Returns throughput, launcher CPU (s) and the whole tree's CPU (s). */
  async function latticeRun(tag: string, profileDir?: string, udpOffload = 'auto', o: { down?: boolean; tunOffload?: 'on' | 'off' } = {}): Promise<Iperf & { wall: number; nodeCpu: number; treeCpu: number; transfer: TransferCpu }> {
    const r = await latticeExec(tag, o.down ? iperfDownArgs(PEER_IP) : iperfArgs(PEER_IP), { profileDir, udpOffload, tunOffload: o.tunOffload });
    return { ...parseIperf(r.stdout, `lattice ${tag} (exit ${r.exitCode}, ${r.stderr.slice(-300)})`), ...r };
  }

  /** One lattice sandbox running `cmd`: its output, wall time, launcher CPU (s) and the whole tree's CPU (s). */
  async function latticeExec(tag: string, cmd: string[], o: { profileDir?: string; udpOffload?: string; tunOffload?: 'on' | 'off'; capAdd?: string[] } = {}) {
    const { profileDir, udpOffload = 'auto', tunOffload = 'on' } = o;
    const cpuOut = join(work, `cpu-${tag}.json`);
    const timeOut = join(work, `time-${tag}.txt`);
    const nodeArgs = ['--import', cpuHook, ...(profileDir ? ['--cpu-prof', '--cpu-prof-dir', profileDir] : []), CLI, '--state-dir', state];
    // The launcher is the node under /usr/bin/time (spawned just below); the transfer crosses the peer's netns.
    const time: { pid?: number } = {};
    const stopSampling = await sampleTransfer(peerIperf.pid!, () => firstChild(time.pid));
    const t = performance.now();
    // /usr/bin/time reports the rusage of node and everything it waited for: runsc, its sandbox and gofer.
    const sub = execa('/usr/bin/time', ['-f', '%U %S', '-o', timeOut, process.execPath, ...nodeArgs,
      'sandbox', 'run', '--rootfs', rootfs, '--wg-config', wgConf, '--policy', policyFile, '--audit-log', join(work, 'audit.ndjson'),
      ...(o.capAdd ?? []).flatMap((c) => ['--cap-add', c]),
      '--', ...cmd], { reject: false, timeout: (3 * SECS + 60) * 1000, env: { LT_CPU_OUT: cpuOut, LATTICE_UDP_OFFLOAD: udpOffload, LATTICE_TUN_OFFLOAD: tunOffload } });
    time.pid = sub.pid;
    const r = await sub;
    const transfer = await stopSampling();
    const wall = (performance.now() - t) / 1000;
    const cpu = JSON.parse(await readFile(cpuOut, 'utf8').catch(() => '{"user":NaN,"system":NaN}')) as { user: number; system: number };
    const tree = (await readFile(timeOut, 'utf8')).trim().split('\n').at(-1)!.split(' ').map(Number);
    return { stdout: String(r.stdout), stderr: String(r.stderr), exitCode: r.exitCode, wall, nodeCpu: (cpu.user + cpu.system) / 1e6, treeCpu: tree[0]! + tree[1]!, transfer };
  }

  /** UDP at UDP_MBPS and at max, then ping, in one sandbox (ping needs NET_RAW inside it). */
  async function latticeUdpPing(tag: string) {
    const r = await latticeExec(tag, udpPingScript(PEER_IP), { capAdd: ['NET_RAW'] });
    return parseUdpPing(r.stdout, `lattice ${tag} (exit ${r.exitCode}, ${r.stderr.slice(-300)})`);
  }

  let vethSeq = 0;
  /** `cmd` in a runsc sandbox on the plain veth (capabilities `caps` only): its stdout and exit code. */
  async function vethExec(cmd: string[], caps: string[] = []): Promise<{ stdout: string; stderr: string; exitCode?: number; transfer: TransferCpu }> {
    const id = `${P}-veth-${process.pid}-${vethSeq++}`;
    const bundle = join(work, 'bundles', id);
    // runsc moves the veth's address into its netstack and removes it from the link: give it back per run.
    await sh(['ip', '-n', VS, 'addr', 'replace', `${VETH_S}/30`, 'dev', `${P}-vs0`]);
    await sh(['ip', '-n', VS, 'link', 'set', `${P}-vs0`, 'up']);
    await writeBundle(bundle, buildSpec({ args: cmd, rootfs, netnsPath: `/var/run/netns/${VS}`, capabilities: caps }));
    liveContainers.add(id);
    const stopSampling = await sampleTransfer(vethIperf.pid!);
    const { child } = await (caps.length > 0 ? runscRaw : runsc).run(id, bundle, { stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' });
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((res) => (timer = setTimeout(() => res('timeout'), (3 * SECS + 60) * 1000)));
    const r = await Promise.race([child, timedOut]);
    const transfer = await stopSampling();
    clearTimeout(timer);
    await runsc.delete(id, { force: true }).catch(() => undefined);
    if (r === 'timeout') throw new Error('veth run timed out');
    liveContainers.delete(id);
    return { stdout: String(r.stdout), stderr: String(r.stderr), exitCode: r.exitCode, transfer };
  }
  async function vethRun(down = false): Promise<Iperf & { transfer: TransferCpu }> {
    const r = await vethExec(down ? iperfDownArgs(VETH_P) : iperfArgs(VETH_P));
    return { ...parseIperf(r.stdout, `veth${down ? ' down' : ''} (exit ${r.exitCode}, ${r.stderr.slice(-300)})`), transfer: r.transfer };
  }
  /** The same UDP and ping script on the plain veth: what gVisor's netstack alone costs (ping needs NET_RAW). */
  async function vethUdpPing() {
    const r = await vethExec(udpPingScript(VETH_P), ['CAP_NET_RAW']);
    return parseUdpPing(r.stdout, `veth (exit ${r.exitCode}, ${r.stderr.slice(-300)})`);
  }
  /** Kernel to kernel over wg-wg's underlay veth (no WireGuard, no gVisor): the floor of every RTT here. */
  async function nativePing(): Promise<number[]> {
    const r = await execa('ip', ['netns', 'exec', WA, ...pingArgs('10.129.0.2')], { reject: false, timeout: (SECS + 60) * 1000 });
    return parsePing(String(r.stdout), `native ping (exit ${r.exitCode})`);
  }

  /**
   * wg-wg TCP: throughput, and CPU (s) of the sending wireguard-go and of both. The iperf3 client runs in A:
   * upload, A sends; `down` (iperf3 -R), B sends and A receives (A is then the like of the launcher).
   */
  async function wgRun(down = false): Promise<Iperf & { wgCpu: number; wgSendCpu: number; wgRecvCpu: number; transfer: TransferCpu }> {
    const [a0, b0] = [await procCpu(wgA.pid), await procCpu(wgB.pid)];
    // A plays the launcher's part: it sends the upload and receives the download.
    const stopSampling = await sampleTransfer(wgB.pid!, async () => wgA.pid);
    const r = await execa('ip', ['netns', 'exec', WA, ...(down ? iperfDownArgs(WG_B_IP) : iperfArgs(WG_B_IP))], { reject: false, timeout: (SECS + 30) * 1000 });
    const transfer = await stopSampling();
    const [a, b] = [(await procCpu(wgA.pid)) - a0, (await procCpu(wgB.pid)) - b0];
    return { ...parseIperf(String(r.stdout), `wg-wg${down ? ' down' : ''} (exit ${r.exitCode})`), wgCpu: a + b, wgSendCpu: down ? b : a, wgRecvCpu: down ? a : b, transfer };
  }

  /** wg-wg: the same UDP and ping script as latticeUdpPing, from A's netns to B over wireguard-go. */
  async function wgUdpPing() {
    const r = await execa('ip', ['netns', 'exec', WA, ...udpPingScript(WG_B_IP)], { reject: false, timeout: (3 * SECS + 60) * 1000 });
    return parseUdpPing(String(r.stdout), `wg-wg (exit ${r.exitCode})`);
  }

  const lat: Array<Awaited<ReturnType<typeof latticeRun>>> = [];
  const latPlain: Array<Awaited<ReturnType<typeof latticeRun>>> = [];
  const veth: Array<Awaited<ReturnType<typeof vethRun>>> = [];
  const wg: Array<Awaited<ReturnType<typeof wgRun>>> = [];
  const latUp: Array<Awaited<ReturnType<typeof latticeUdpPing>>> = [];
  const wgUp: Array<Awaited<ReturnType<typeof wgUdpPing>>> = [];
  const vethUp: Array<Awaited<ReturnType<typeof vethUdpPing>>> = [];
  const nativeRtts: number[][] = [];
  // Download (iperf3 -R), the same rounds: lattice with coalesced TUN writes (default) and without (TUN offload off).
  const latDown: Array<Awaited<ReturnType<typeof latticeRun>>> = [];
  const latDownPlain: Array<Awaited<ReturnType<typeof latticeRun>>> = [];
  const vethDown: Array<Awaited<ReturnType<typeof vethRun>>> = [];
  const wgDown: Array<Awaited<ReturnType<typeof wgRun>>> = [];
  const udpText = (x: IperfUdp) => `${x.mbps.toFixed(0)} Mbit/s ${x.lossPct.toFixed(1)}% lost`;
  for (let i = 0; i < ROUNDS; i++) {
    lat.push(await latticeRun(`r${i}`));
    latPlain.push(await latticeRun(`p${i}`, undefined, 'off'));
    veth.push(await vethRun());
    wg.push(await wgRun());
    latUp.push(await latticeUdpPing(`u${i}`));
    wgUp.push(await wgUdpPing());
    vethUp.push(await vethUdpPing());
    nativeRtts.push(await nativePing());
    latDown.push(await latticeRun(`d${i}`, undefined, 'auto', { down: true }));
    vethDown.push(await vethRun(true));
    latDownPlain.push(await latticeRun(`dp${i}`, undefined, 'auto', { down: true, tunOffload: 'off' }));
    wgDown.push(await wgRun(true));
    const [l, p, v, w, lu, wu, vu] = [lat.at(-1)!, latPlain.at(-1)!, veth.at(-1)!, wg.at(-1)!, latUp.at(-1)!, wgUp.at(-1)!, vethUp.at(-1)!];
    console.log(`round ${i + 1}: lattice ${l.mbps.toFixed(0)} Mbit/s (retr ${l.retransmits})  lattice-dgram ${p.mbps.toFixed(0)} (retr ${p.retransmits})  ` +
      `veth ${v.mbps.toFixed(0)} (retr ${v.retransmits})  wg-wg ${w.mbps.toFixed(0)} (retr ${w.retransmits})`);
    console.log(`         udp ${UDP_MBPS}M: lattice ${udpText(lu.fixed)}, wg-wg ${udpText(wu.fixed)};  udp max: lattice ${udpText(lu.max)}, wg-wg ${udpText(wu.max)};  ` +
      `veth ${udpText(vu.fixed)} / max ${udpText(vu.max)};  ping p50/p99 ms: lattice ${quantile(lu.rtts, 0.5)}/${quantile(lu.rtts, 0.99)}, ` +
      `wg-wg ${quantile(wu.rtts, 0.5)}/${quantile(wu.rtts, 0.99)}, veth ${quantile(vu.rtts, 0.5)}/${quantile(vu.rtts, 0.99)}, ` +
      `native ${quantile(nativeRtts.at(-1)!, 0.5)}/${quantile(nativeRtts.at(-1)!, 0.99)}`);
    const [ld, lp, vd, wd] = [latDown.at(-1)!, latDownPlain.at(-1)!, vethDown.at(-1)!, wgDown.at(-1)!];
    console.log(`         download (-R): lattice ${ld.mbps.toFixed(0)} Mbit/s (retr ${ld.retransmits})  lattice-nocoalesce ${lp.mbps.toFixed(0)} (retr ${lp.retransmits})  ` +
      `veth ${vd.mbps.toFixed(0)} (retr ${vd.retransmits})  wg-wg ${wd.mbps.toFixed(0)} (retr ${wd.retransmits})`);
  }
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const mL = med(lat.map((x) => x.mbps));
  const mP = med(latPlain.map((x) => x.mbps));
  const mV = med(veth.map((x) => x.mbps));
  const mW = med(wg.map((x) => x.mbps));
  console.log('');
  console.log(`TCP throughput, sandbox -> peer, medians of ${ROUNDS} x ${SECS} s (iperf3 receiver side, inner MTU ${MTU}):`);
  console.log(`  lattice  (runsc -> TUN -> pump -> TS WireGuard -> wireguard-go)  ${mL.toFixed(0).padStart(6)} Mbit/s`);
  console.log(`  lattice-dgram (the same, UDP batching off: LATTICE_UDP_OFFLOAD=off)   ${mP.toFixed(0).padStart(6)} Mbit/s`);
  console.log(`  veth     (runsc on a plain veth: ceiling)                        ${mV.toFixed(0).padStart(6)} Mbit/s`);
  console.log(`  wg-wg    (wireguard-go <-> wireguard-go)                         ${mW.toFixed(0).padStart(6)} Mbit/s`);
  console.log(`  load average (1/5/15 min) at the end of the rounds: ${loadavg().map((x) => x.toFixed(2)).join(' ')} on ${CORES} cores`);
  console.log(`  ratio lattice / veth   ${(mL / mV).toFixed(3)}`);
  console.log(`  ratio lattice / wg-wg  ${(mL / mW).toFixed(3)}`);
  console.log(`  ratio lattice-dgram / wg-wg  ${(mP / mW).toFixed(3)}   (lattice / lattice-dgram ${(mL / mP).toFixed(3)})`);

  const mLd = med(latDown.map((x) => x.mbps));
  const mPd = med(latDownPlain.map((x) => x.mbps));
  const mVd = med(vethDown.map((x) => x.mbps));
  const mWd = med(wgDown.map((x) => x.mbps));
  console.log('');
  console.log(`TCP throughput, peer -> sandbox (download, iperf3 -R), medians of ${ROUNDS} x ${SECS} s (iperf3 receiver side, inner MTU ${MTU}):`);
  console.log(`  lattice  (wireguard-go -> TS WireGuard -> pump -> TUN, coalesced writes -> runsc)  ${mLd.toFixed(0).padStart(6)} Mbit/s`);
  console.log(`  lattice-nocoalesce (the same, LATTICE_TUN_OFFLOAD=off: one TUN write a segment)  ${mPd.toFixed(0).padStart(6)} Mbit/s`);
  console.log(`  veth     (runsc on a plain veth: ceiling)                                          ${mVd.toFixed(0).padStart(6)} Mbit/s`);
  console.log(`  wg-wg    (wireguard-go <-> wireguard-go)                                           ${mWd.toFixed(0).padStart(6)} Mbit/s`);
  console.log(`  load average (1/5/15 min) at the end of the rounds: ${loadavg().map((x) => x.toFixed(2)).join(' ')} on ${CORES} cores`);
  console.log(`  ratio download lattice / veth   ${(mLd / mVd).toFixed(3)}`);
  console.log(`  ratio download lattice / wg-wg  ${(mLd / mWd).toFixed(3)}`);
  console.log(`  ratio download coalescing on / off (lattice / lattice-nocoalesce)  ${(mLd / mPd).toFixed(3)}   (lattice-nocoalesce / wg-wg ${(mPd / mWd).toFixed(3)})`);
  console.log(`  ratio lattice download / upload  ${(mLd / mL).toFixed(3)}   (wg-wg ${(mWd / mW).toFixed(3)}, veth ${(mVd / mV).toFixed(3)})`);

  // UDP and ping: medians over the rounds (each run's own figure first, then the median across runs).
  const udpRow = (name: string, xs: IperfUdp[]) => {
    const m = { mbps: med(xs.map((x) => x.mbps)), sent: med(xs.map((x) => x.sentMbps)), loss: med(xs.map((x) => x.lossPct)) };
    console.log(`  ${name.padEnd(34)} ${m.mbps.toFixed(0).padStart(6)} Mbit/s delivered of ${m.sent.toFixed(0).padStart(5)} sent, ${m.loss.toFixed(2).padStart(6)}% lost`);
    return m;
  };
  console.log('');
  console.log(`UDP (iperf3 -u, ${UDP_LEN}-byte datagrams, sandbox/A -> peer/B), medians of ${ROUNDS} x ${SECS} s:`);
  const uLf = udpRow(`lattice at ${UDP_MBPS} Mbit/s offered`, latUp.map((x) => x.fixed));
  const uWf = udpRow(`wg-wg   at ${UDP_MBPS} Mbit/s offered`, wgUp.map((x) => x.fixed));
  const uLm = udpRow('lattice at max (-b 0)', latUp.map((x) => x.max));
  const uWm = udpRow('wg-wg   at max (-b 0)', wgUp.map((x) => x.max));
  const uVf = udpRow(`veth    at ${UDP_MBPS} Mbit/s offered`, vethUp.map((x) => x.fixed));
  const uVm = udpRow('veth    at max (-b 0)', vethUp.map((x) => x.max));
  console.log(`  ratio lattice / wg-wg delivered: at ${UDP_MBPS} Mbit/s ${(uLf.mbps / uWf.mbps).toFixed(3)}, at max ${(uLm.mbps / uWm.mbps).toFixed(3)}`);
  console.log(`  ratio lattice / veth delivered: at ${UDP_MBPS} Mbit/s ${(uLf.mbps / uVf.mbps).toFixed(3)}, at max ${(uLm.mbps / uVm.mbps).toFixed(3)}`);
  const pingRow = (name: string, runs: number[][]) => {
    const p50 = med(runs.map((r) => quantile(r, 0.5)));
    const p99 = med(runs.map((r) => quantile(r, 0.99)));
    console.log(`  ${name.padEnd(10)} p50 ${p50.toFixed(3)} ms  p99 ${p99.toFixed(3)} ms`);
    return { p50, p99 };
  };
  console.log(`ping RTT (busybox ping, ${PINGS} requests 20 ms apart, first left out; median over ${ROUNDS} runs of each run's quantile):`);
  const pL = pingRow('lattice', latUp.map((x) => x.rtts));
  const pW = pingRow('wg-wg', wgUp.map((x) => x.rtts));
  const pV = pingRow('veth', vethUp.map((x) => x.rtts));
  const pN = pingRow('native', nativeRtts);
  console.log(`  lattice - wg-wg: p50 ${(pL.p50 - pW.p50).toFixed(3)} ms, p99 ${(pL.p99 - pW.p99).toFixed(3)} ms; ratio p50 ${(pL.p50 / pW.p50).toFixed(2)}`);
  // What the WireGuard hop adds, each over its own floor: lattice over gVisor on a veth, wg-wg over the kernels' veth.
  console.log(`  added by the WireGuard hop, p50: lattice (lattice - veth) ${(pL.p50 - pV.p50).toFixed(3)} ms, ` +
    `wireguard-go (wg-wg - native) ${(pW.p50 - pN.p50).toFixed(3)} ms; difference ${(pL.p50 - pV.p50 - (pW.p50 - pN.p50)).toFixed(3)} ms`);

  // Where the time goes, from the measured runs: CPU of the launcher (node: pump + WireGuard + UDP + TUN I/O)
  // against the whole tree (node + runsc sandbox/gofer, i.e. gVisor's netstack and the iperf3 client).
  console.log('');
  console.log(`CPU per lattice run (2 cores; each run is ~${med(lat.map((x) => x.wall)).toFixed(1)} s wall, ${SECS} s of it iperf3):`);
  for (const [i, l] of lat.entries()) {
    const gb = (l.mbps * SECS) / 8000;
    console.log(`  lattice run ${i + 1}: launcher (node) ${l.nodeCpu.toFixed(2)} s, node+runsc tree ${l.treeCpu.toFixed(2)} s; ` +
      `launcher ${(l.nodeCpu / gb).toFixed(1)} CPU-s per GB moved`);
  }
  for (const [i, l] of latPlain.entries()) {
    const gb = (l.mbps * SECS) / 8000;
    console.log(`  lattice-dgram run ${i + 1}: launcher (node) ${l.nodeCpu.toFixed(2)} s; launcher ${(l.nodeCpu / gb).toFixed(1)} CPU-s per GB moved`);
  }
  for (const [i, w] of wg.entries()) {
    const gb = (w.mbps * SECS) / 8000;
    console.log(`  wg-wg run ${i + 1}: sending wireguard-go ${w.wgSendCpu.toFixed(2)} s, both ${w.wgCpu.toFixed(2)} s; ` +
      `${(w.wgSendCpu / gb).toFixed(1)} (sender) and ${(w.wgCpu / gb).toFixed(1)} (both) CPU-s per GB moved`);
  }
  // The launcher is the sending end of its tunnel: its peer is the like of wg-wg's sender, A.
  const perGb = (cpu: number, mbps: number) => cpu / ((mbps * SECS) / 8000);
  const cL = med(lat.map((l) => perGb(l.nodeCpu, l.mbps)));
  const cP = med(latPlain.map((l) => perGb(l.nodeCpu, l.mbps)));
  const cWs = med(wg.map((w) => perGb(w.wgSendCpu, w.mbps)));
  const cWb = med(wg.map((w) => perGb(w.wgCpu, w.mbps)));
  console.log(`  CPU-s per GB, medians: launcher ${cL.toFixed(1)} (dgram ${cP.toFixed(1)}); sending wireguard-go ${cWs.toFixed(1)}, both ends ${cWb.toFixed(1)}`);
  console.log(`  ratio launcher / sending wireguard-go ${(cL / cWs).toFixed(2)}   (launcher-dgram / sending wireguard-go ${(cP / cWs).toFixed(2)})`);
  // Download: the launcher is the receiving end (decrypt, pump, TUN writes); its like is wg-wg's receiver, A.
  const cLd = med(latDown.map((l) => perGb(l.nodeCpu, l.mbps)));
  const cPd = med(latDownPlain.map((l) => perGb(l.nodeCpu, l.mbps)));
  const cWr = med(wgDown.map((w) => perGb(w.wgRecvCpu, w.mbps)));
  console.log(`  download CPU-s per GB, medians: launcher ${cLd.toFixed(1)} (no coalescing ${cPd.toFixed(1)}); receiving wireguard-go ${cWr.toFixed(1)}, ` +
    `both ends ${med(wgDown.map((w) => perGb(w.wgCpu, w.mbps))).toFixed(1)}`);
  console.log(`  ratio download launcher / receiving wireguard-go ${(cLd / cWr).toFixed(2)}   (no coalescing ${(cPd / cWr).toFixed(2)})`);

  // Machine-wide CPU in each transfer's window (bench/support/cpu.ts). On 2 shared cores every stage of a path
  // (iperf3, gVisor or the kernel, the launcher or a wireguard-go, the peer) competes for the same CPU. Per GB of
  // the window (its share of the run's bytes x iperf3's GB); "net" leaves out the background the machine had in
  // the second before the run (other tenants, idle helpers), "rest" also the launcher (or A's wireguard-go).
  const machineRow = (name: string, own: string, runs: Array<Iperf & { transfer: TransferCpu }>) => {
    const perGb = (f: (t: TransferCpu) => number) =>
      med(runs.map((r) => f(r.transfer) / (r.transfer.byteShare * ((r.mbps * SECS) / 8000))).filter(Number.isFinite));
    const busy = med(runs.map((r) => r.transfer.machineCpu / r.transfer.seconds).filter(Number.isFinite));
    const bg = med(runs.map((r) => r.transfer.backgroundCores));
    const net = perGb((t) => t.machineCpu - t.backgroundCores * t.seconds);
    const ownGb = perGb((t) => t.processCpu);
    const rest = perGb((t) => t.machineCpu - t.backgroundCores * t.seconds - t.processCpu);
    console.log(`  ${name.padEnd(9)} busy ${busy.toFixed(2)} of ${CORES} cores (background before it ${bg.toFixed(2)}); ` +
      `net ${net.toFixed(1)} CPU-s per GB` + (own ? `: ${own} ${ownGb.toFixed(1)}, all the rest ${rest.toFixed(1)}` : ''));
    return { net, rest, own: ownGb };
  };
  console.log('');
  console.log(`Machine CPU in the transfer window (all ${CORES} cores, samples at >= half the peak byte rate), medians; upload:`);
  const mcL = machineRow('lattice', 'launcher', lat);
  const mcW = machineRow('wg-wg', 'sending wireguard-go', wg);
  machineRow('veth', '', veth);
  console.log(`  in the window: launcher / sending wireguard-go ${(mcL.own / mcW.own).toFixed(2)}; lattice's path without the launcher ` +
    `${mcL.rest.toFixed(1)} CPU-s per GB against wg-wg's whole path ${mcW.net.toFixed(1)}: an estimate, if CPU were the only limit and ` +
    `the rest cost the same per GB at any rate, of what a launcher that cost nothing could reach: lattice / wg-wg ${(mcW.net / mcL.rest).toFixed(2)}`);
  console.log('download:');
  const mdL = machineRow('lattice', 'launcher', latDown);
  const mdW = machineRow('wg-wg', 'receiving wireguard-go', wgDown);
  machineRow('veth', '', vethDown);
  console.log(`  in the window: launcher / receiving wireguard-go ${(mdL.own / mdW.own).toFixed(2)}; the same estimate ${(mdW.net / mdL.rest).toFixed(2)}`);

  // One more lattice run under the V8 profiler: top self-time functions of the launcher (PROFILE=0 skips it).
  if (process.env.PROFILE === '0') throw new Done();
  const profDir = join(work, 'prof');
  await mkdir(profDir);
  const prof = await latticeRun('prof', profDir);
  console.log('');
  console.log(`profiled lattice run (node --cpu-prof on the launcher): ${prof.mbps.toFixed(0)} Mbit/s`);
  const files = (await readdir(profDir)).filter((f) => f.endsWith('.cpuprofile'));
  for (const f of files) summariseProfile(f, JSON.parse(await readFile(join(profDir, f), 'utf8')) as CpuProfile);
  console.log('');
  console.log('note: shared, noisy 2-core machine (other jobs run); compare ratios from the same run, not absolute figures.');
} catch (err) {
  if (!(err instanceof Done)) console.log(`sandbox-network bench failed: ${(err as Error).stack ?? String(err)}`);
} finally {
  for (const id of liveContainers) await runsc.delete(id, { force: true }).catch(() => undefined);
  for (const c of children) c.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 300));
  for (const c of children) c.kill('SIGKILL');
  await Promise.allSettled(children);
  await peer?.stop();
  await cleanupNet();
  await rm(work, { recursive: true, force: true });
}
