/**
 * WireGuard benchmarks (figures, not pass/fail). Run: npx tsx bench/wg.ts [--no-net]
 *
 * 1. Transport encryption of a 1500-byte packet through Device.sendPacket (allowed-IPs lookup, header,
 *    padding, in-place ChaCha20-Poly1305, timers, counters) against the bare sodium AEAD call measured in
 *    the same run. Seed target < 15 us/op, goal < 3 us/op. Twice: to a Bind that keeps the buffer (a fresh
 *    one per packet) and to one that copies (Bind.sendCopies: the device's reused buffer), as a ratio.
 * 2. The receive side: Device.receive of the same packets (index lookup, open in place, replay window,
 *    allowed-IPs source check).
 * 2b. The UDP send path alone: bursts of 64 datagrams of 1452 bytes (a full WireGuard transport message) to a
 *    loopback socket through UdpBind with offload off (one send each), mmsg (one sendmmsg per burst) and auto
 *    (sendmmsg + UDP GSO), launcher CPU per datagram, as ratios against "off" measured in the same run.
 * 3. (root, wireguard-go and iperf3 present) TCP throughput TS peer <-> wireguard-go against
 *    wireguard-go <-> wireguard-go, same netns + veth layout, same run, printed as a ratio.
 */
import sodium from 'sodium-native';
import { execa, type ResultPromise } from 'execa';
import { mkdtemp, rm, writeFile, access } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { ManualClock } from '../src/clock.js';
import type { Bind, Endpoint } from '../src/conn/bind.js';
import { MemoryNetwork } from '../src/conn/memory.js';
import { UdpBind } from '../src/conn/udp.js';
import { Device } from '../src/wg/device.js';
import { SodiumCrypto } from '../src/wg/crypto.js';
import { createNetns, deleteNetns, ip } from '../src/netns/ip.js';

const c = new SodiumCrypto();

function time(label: string, n: number, fn: () => void): number {
  for (let i = 0; i < Math.min(n, 20_000); i++) fn(); // warm up
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < n; i++) fn();
  const us = Number(process.hrtime.bigint() - t0) / 1e3 / n;
  console.log(`${label.padEnd(58)} ${us.toFixed(2).padStart(7)} us/op`);
  return us;
}

function ipv4(len: number): Uint8Array {
  const p = new Uint8Array(len);
  p[0] = 0x45;
  p[2] = len >> 8;
  p[3] = len & 0xff;
  p[9] = 17;
  p.set([10, 0, 0, 1], 12);
  p.set([10, 0, 0, 2], 16);
  return p;
}

async function micro(): Promise<void> {
  const N = 200_000;
  const key = c.randomBytes(32);
  const nonce = new Uint8Array(12);
  const buf = new Uint8Array(1500 + 16);
  const baseline = time('baseline: sodium chacha20poly1305 seal 1500 B (detached)', N, () => {
    sodium.crypto_aead_chacha20poly1305_ietf_encrypt_detached(buf.subarray(0, 1500), buf.subarray(1500), buf.subarray(0, 1500), null, null, nonce, key);
  });

  // A handshaken pair over the memory network, then a capturing Bind for the measured side.
  const clock = new ManualClock();
  const net = new MemoryNetwork();
  const ka = c.generatePrivateKey();
  const kb = c.generatePrivateKey();
  const a = new Device({ privateKey: ka, bind: net.bind('192.0.2.1', 1), clock, crypto: c, mtu: 1500 });
  const b = new Device({ privateKey: kb, bind: net.bind('192.0.2.2', 1), clock, crypto: c, mtu: 1500 });
  a.addPeer({ publicKey: c.publicKey(kb), allowedIPs: ['10.0.0.2/32'], endpoint: { address: '192.0.2.2', port: 1 } });
  b.addPeer({ publicKey: c.publicKey(ka), allowedIPs: ['10.0.0.1/32'], endpoint: { address: '192.0.2.1', port: 1 } });
  a.up();
  b.up();
  a.sendPacket(ipv4(100));
  net.flush();

  let last: Uint8Array = new Uint8Array(0);
  const sink: Bind = { port: 1, start: () => undefined, send: (d: Uint8Array) => { last = d; }, close: async () => undefined };
  (a as unknown as { bind: Bind }).bind = sink;
  const pkt = ipv4(1500);
  const send = time('Device.sendPacket 1500 B (encrypt + frame, fresh buffer)', N, () => {
    a.sendPacket(pkt);
  });
  // A Bind that copies on send, as UdpBind's sendmmsg arena does: the device seals into its reused buffer.
  const slot = new Uint8Array(2048);
  const copying: Bind = { port: 1, sendCopies: true, start: () => undefined, send: (d: Uint8Array) => slot.set(d), close: async () => undefined };
  (a as unknown as { bind: Bind }).bind = copying;
  const sendReused = time('Device.sendPacket 1500 B (reused buffer, Bind copies)', N, () => {
    a.sendPacket(pkt);
  });
  console.log(`reused send buffer / fresh buffer per packet: ${(sendReused / send).toFixed(2)}x the time`);
  (a as unknown as { bind: Bind }).bind = sink;

  // Receive: pre-encrypt distinct counters, then feed them (copies, since receive decrypts in place).
  const M = 100_000;
  const frames: Uint8Array[] = [];
  for (let i = 0; i < M; i++) {
    a.sendPacket(pkt);
    frames.push(last);
  }
  let delivered = 0;
  b.attach(() => {
    delivered++;
  });
  const from: Endpoint = { address: '192.0.2.1', port: 1 };
  let i = 0;
  const t0 = process.hrtime.bigint();
  for (; i < M; i++) b.receive(frames[i], from);
  const recv = Number(process.hrtime.bigint() - t0) / 1e3 / M;
  console.log(`${'Device.receive 1500 B (decrypt + replay + allowed IPs)'.padEnd(58)} ${recv.toFixed(2).padStart(7)} us/op`);
  if (delivered !== M) console.log(`  (warning: ${M - delivered} not delivered; dropped=${b.droppedTotal()})`);
  console.log(`encrypt path / bare AEAD: ${(send / baseline).toFixed(2)}x; seed target 15 us: ${send < 15 ? 'met' : 'missed'}; goal 3 us: ${send < 3 ? 'met' : 'missed'}`);
  console.log(`=> ${(1500 * 8 / send).toFixed(0)} Mbit/s single-core ceiling for encryption alone`);
}

// ------------------------------------------------------------------ throughput (netns)

const trace = (m: string) => {
  if (process.env.BENCH_TRACE) console.error(`[trace] ${m}`);
};
interface NsOpts {
  reject?: boolean;
  env?: Record<string, string>;
  cwd?: string;
}
const inNs = (ns: string, cmd: string, args: string[], o: NsOpts = {}) =>
  execa('ip', ['netns', 'exec', ns, cmd, ...args], { stdin: 'ignore', reject: o.reject ?? true, env: o.env, cwd: o.cwd });

async function have(cmd: string): Promise<boolean> {
  return execa('sh', ['-c', `command -v ${cmd}`]).then(() => true, () => false);
}

async function genkey(): Promise<{ priv: string; pub: string }> {
  const priv = (await execa('wg', ['genkey'])).stdout.trim();
  return { priv, pub: (await execa('wg', ['pubkey'], { input: priv })).stdout.trim() };
}

async function waitFor(fn: () => Promise<unknown>, ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    try {
      await fn();
      return;
    } catch (err) {
      if (Date.now() > end) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Mbit/s of a 5 s iperf3 from nsA (10.78.0.1) to nsB (10.78.0.2), and reverse. */
async function iperf(nsA: string, nsB: string): Promise<[number, number]> {
  const out: number[] = [];
  for (const reverse of [false, true]) {
    const srv = inNs(nsB, 'iperf3', ['-s', '-1'], { reject: false });
    await new Promise((r) => setTimeout(r, 300));
    const r = await inNs(nsA, 'iperf3', ['-c', '10.78.0.2', '-t', '5', '-J', ...(reverse ? ['-R'] : [])]);
    await srv;
    out.push((JSON.parse(r.stdout) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second / 1e6);
  }
  return [out[0], out[1]];
}

async function throughput(): Promise<void> {
  if (process.getuid?.() !== 0 || !(await have('wireguard-go')) || !(await have('iperf3'))) {
    console.log('throughput: skipped (needs root, wireguard-go, wg, iperf3)');
    return;
  }
  const id = randomBytes(2).toString('hex');
  const nsA = `ltwg-ba-${id}`;
  const nsB = `ltwg-bb-${id}`;
  const dir = await mkdtemp(join(tmpdir(), 'ltwg-bench-'));
  const procs: ResultPromise[] = [];
  const kA = await genkey();
  const kB = await genkey();
  const goConf = async (ns: string, ifname: string, me: { priv: string }, peer: { pub: string }, port: number, peerPort: number, addr: string, peerAddr: string, underlay: string) => {
    trace(`start wireguard-go ${ifname}`);
    const p = inNs(ns, 'wireguard-go', ['-f', ifname], { env: { WG_PROCESS_FOREGROUND: '1', LOG_LEVEL: 'error' }, reject: false });
    procs.push(p);
    await waitFor(() => access(`/var/run/wireguard/${ifname}.sock`));
    const f = join(dir, `${ifname}.conf`);
    await writeFile(f, `[Interface]\nPrivateKey = ${me.priv}\nListenPort = ${port}\n[Peer]\nPublicKey = ${peer.pub}\nAllowedIPs = ${peerAddr}/32\nEndpoint = ${underlay}:${peerPort}\n`, { mode: 0o600 });
    trace('setconf');
    await inNs(ns, 'wg', ['setconf', ifname, f]);
    trace('addr');
    await ip(['addr', 'add', `${addr}/24`, 'dev', ifname], ns);
    trace('link up');
    await ip(['link', 'set', ifname, 'mtu', '1420', 'up'], ns);
  };
  const stopAll = async () => {
    for (const p of procs.splice(0)) {
      p.kill('SIGTERM');
      await p.catch(() => undefined);
    }
  };
  try {
    await createNetns(nsA);
    await createNetns(nsB);
    await ip(['link', 'add', `ltwgba${id}`, 'netns', nsA, 'type', 'veth', 'peer', 'name', `ltwgbb${id}`, 'netns', nsB]);
    await ip(['addr', 'add', '192.168.78.1/24', 'dev', `ltwgba${id}`], nsA);
    await ip(['addr', 'add', '192.168.78.2/24', 'dev', `ltwgbb${id}`], nsB);
    for (const [ns, dev] of [[nsA, `ltwgba${id}`], [nsB, `ltwgbb${id}`]]) {
      await ip(['link', 'set', dev, 'up'], ns);
      await ip(['link', 'set', 'lo', 'up'], ns);
    }
    // Baseline: wireguard-go on both sides.
    await goConf(nsA, `ltwgg1${id}`, kA, kB, 51830, 51831, '10.78.0.1', '10.78.0.2', '192.168.78.2');
    await goConf(nsB, `ltwgg2${id}`, kB, kA, 51831, 51830, '10.78.0.2', '10.78.0.1', '192.168.78.1');
    await waitFor(() => inNs(nsA, 'busybox', ['ping', '-c', '1', '-W', '1', '10.78.0.2']));
    trace('iperf go-go');
    const [goUp, goDown] = await iperf(nsA, nsB);
    await stopAll();
    // TS peer in nsA, wireguard-go in nsB.
    await goConf(nsB, `ltwgg2${id}`, kB, kA, 51831, 51830, '10.78.0.2', '10.78.0.1', '192.168.78.1');
    const conf = join(dir, 'ts.conf');
    await writeFile(conf, `[Interface]\nPrivateKey = ${kA.priv}\nAddress = 10.78.0.1/24\nListenPort = 51830\nMTU = 1420\n[Peer]\nPublicKey = ${kB.pub}\nAllowedIPs = 10.78.0.2/32\nEndpoint = 192.168.78.2:51831\n`, { mode: 0o600 });
    const repo = new URL('../', import.meta.url).pathname;
    const prof = process.env.BENCH_PROFILE ? ['--cpu-prof', '--cpu-prof-dir', process.env.BENCH_PROFILE] : [];
    const ts = inNs(nsA, process.execPath, [...prof, '--import', 'tsx', 'src/cli/main.ts', '--state-dir', join(dir, 'state'), 'wg', 'up', conf, '--tun', `ltwgts${id}`], { cwd: repo, reject: false });
    procs.push(ts);
    await waitFor(() => inNs(nsA, 'busybox', ['ping', '-c', '1', '-W', '1', '10.78.0.2']));
    trace('iperf ts-go');
    const [tsUp, tsDown] = await iperf(nsA, nsB);
    console.log(`TCP throughput (iperf3, 5 s, same netns + veth layout):`);
    console.log(`  wireguard-go <-> wireguard-go: ${goUp.toFixed(0)} Mbit/s up, ${goDown.toFixed(0)} Mbit/s down`);
    console.log(`  TS peer      <-> wireguard-go: ${tsUp.toFixed(0)} Mbit/s up (TS encrypts), ${tsDown.toFixed(0)} Mbit/s down (TS decrypts)`);
    console.log(`  ratio TS/go: up ${(tsUp / goUp).toFixed(2)}, down ${(tsDown / goDown).toFixed(2)} (goal >= 1.0)`);
  } finally {
    await stopAll();
    await deleteNetns(nsA).catch(() => undefined);
    await deleteNetns(nsB).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

/** CPU (user+system) microseconds per datagram sent through UdpBind with `offload`, bursts of 64. */
async function udpSend(offload: 'auto' | 'mmsg' | 'off', bursts: number): Promise<{ us: number; mode: string }> {
  const rx = await UdpBind.open({ host4: '127.0.0.1', offload: 'off', bufferSize: 1 << 20 });
  const tx = await UdpBind.open({ host4: '127.0.0.1', offload });
  rx.start(() => undefined);
  tx.start(() => undefined);
  const to = { address: '127.0.0.1', port: rx.port };
  const pkt = new Uint8Array(1452).fill(7);
  const c0 = process.cpuUsage();
  for (let b = 0; b < bursts; b++) {
    for (let i = 0; i < 64; i++) tx.send(pkt, to);
    await new Promise<void>((r) => setImmediate(r)); // the burst's flush runs, the receiver drains
  }
  const c1 = process.cpuUsage(c0);
  await tx.close();
  await rx.close();
  return { us: (c1.user + c1.system) / (bursts * 64), mode: tx.offload.mode };
}

async function udpSendBench(): Promise<void> {
  console.log('\nUDP send path (bursts of 64 x 1452 B to loopback; CPU us per datagram incl. the receiver in this process):');
  const res: Record<string, { us: number; mode: string }> = {};
  for (const round of [0, 1]) {
    for (const o of ['off', 'mmsg', 'auto'] as const) {
      const r = await udpSend(o, 2000);
      if (round === 1) res[o] = r;
    }
  }
  for (const o of ['off', 'mmsg', 'auto'] as const) {
    console.log(`  offload ${o.padEnd(4)} (${res[o]!.mode.padEnd(5)}) ${res[o]!.us.toFixed(2).padStart(6)} us/datagram  ratio vs off ${(res[o]!.us / res.off!.us).toFixed(3)}`);
  }
}

if (!process.argv.includes("--no-micro")) await micro();
if (!process.argv.includes('--no-udp')) await udpSendBench();
if (!process.argv.includes('--no-net')) await throughput();
