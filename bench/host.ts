/**
 * A host joining, and traffic through an exit node: `npx tsx bench/host.ts` (root; build first: npm run build).
 *
 * (a) Joining. `lattice up` of a host H (its own netns) while the exit node E is already up: from the
 *     start of the process to the first completed handshake with E (the handshake time E's status reports
 *     in H's `lattice status --json`) and to the first packet answered (a TCP connect from H's own stack to
 *     E's overlay address, tried from the start, every 10 ms, each attempt bounded to 1 s). Round 1 enrolls
 *     with the token; later rounds reuse the stored identity (`down` between rounds).
 *     Baseline, same run: a wireguard-go interface brought up by hand (wireguard-go, wg set, ip addr/link)
 *     against a running wireguard-go peer, timed the same way to its first answered connect.
 * (b) Throughput. iperf3 from a gVisor sandbox started with `--exit-node exit` through E to the test's
 *     "internet" namespace (203.0.113.10), beside wireguard-go <-> wireguard-go over a veth, interleaved.
 *
 *   ns <p>-pub: br0 198.18.0.1/24          nats-server, control plane (startLab, e2e/routes/lab.ts)
 *   ns <p>-r:   eth0 198.18.0.21, wan0      E: `lattice up --name exit --exit-node`; busybox httpd :8080
 *   ns <p>-s:   203.0.113.10 (lo)           the "internet": iperf3 -s
 *   ns <p>-b:   eth0 198.18.0.22            the sandbox's host (`sandbox start --exit-node exit`)
 *   ns <p>-h:   eth0 198.18.0.23            H: `lattice up --name h` (the joining host)
 *   ns <p>-w1, <p>-w2: a veth, wireguard-go each (10.130.0.1 <-> 10.130.0.2), iperf3 -s and httpd in w2
 *
 * Prints every round, medians, ratios against the baselines and the load average. ROUNDS (3), SECS (5).
 * Every namespace carries the random prefix and is removed in finally (startLab's stop() and ours).
 */
import { execa, type ResultPromise } from 'execa';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { busyboxRootfs, waitFor, waitForListener } from '../e2e/support/env.js';
import { genKeypair } from '../e2e/support/wgpeer.js';
import { startLab, collect, wireInternet, NATS, type Lab } from '../e2e/routes/lab.js';
import { createNetns, deleteNetns, ip } from '../src/netns/ip.js';
import { addIperf3, iperfArgs, parseIperf, type Iperf } from './support/iperf.js';
import type { HostStatus } from '../src/host/up.js';

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const SECS = Number(process.env.SECS ?? 5);
const MTU = 1420;
const P = `ltbh${randomBytes(2).toString('hex')}`;
const H = `${P}-h`;
const W1 = `${P}-w1`;
const W2 = `${P}-w2`;
const WG1 = `${P}w1`;
const WG2 = `${P}w2`;
const NSP = 'bench';
const POLICY = {
  version: 1,
  mode: 'enforce',
  egress: [
    { id: 'iperf', action: 'allow', cidrs: ['203.0.113.10/32'], ports: [5201], protocol: 'tcp' },
    { id: 'probe', action: 'allow', cidrs: ['10.77.0.0/16'], ports: [8080], protocol: 'tcp' },
  ],
  // The exit node's side: forwarded flows and the probe are ingress to it, from the overlay.
  ingress: [{ id: 'in', action: 'allow', cidrs: ['10.77.0.0/16'], ports: [5201, 8080], protocol: 'tcp' }],
};

if (process.getuid?.() !== 0) {
  console.log('host bench: needs root (netns, runsc, nftables); skipped');
  process.exit(0);
}

const children: ResultPromise[] = [];
const keep = (c: ResultPromise): ResultPromise => (children.push(c), c);
const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const ms = (x: number) => `${x.toFixed(0).padStart(6)} ms`;

/**
 * From netns `ns`, TCP connects to addr:port until one succeeds (every 10 ms, each bounded to 1 s);
 * resolves with the wall-clock ms of the success (the shell's own clock, so spawn latency of this
 * process does not count).
 */
function probe(ns: string, addr: string, port: number): Promise<number> {
  const loop = `until timeout 1 bash -c 'exec 3<>/dev/tcp/${addr}/${port}' 2>/dev/null; do sleep 0.01; done; date +%s%3N`;
  const c = keep(execa('ip', ['netns', 'exec', ns, 'bash', '-c', loop], { reject: false, stdin: 'ignore' }));
  return c.then((r) => Number(String(r.stdout).trim()));
}

let lab: Lab | undefined;
const made: string[] = [];
try {
  const t0 = performance.now();
  lab = await startLab(P, 8475, wireInternet);
  const L = lab;
  for (const n of [H, W1, W2]) {
    await createNetns(n);
    made.push(n);
    await ip(['link', 'set', 'lo', 'up'], n);
  }
  await ip(['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'hh', 'netns', L.pub], H);
  await ip(['link', 'set', 'hh', 'master', 'br0', 'up'], L.pub);
  await ip(['addr', 'add', '198.18.0.23/24', 'dev', 'eth0'], H);
  await ip(['link', 'set', 'eth0', 'up'], H);
  await ip(['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', W2], W1);
  await ip(['addr', 'add', '10.129.0.1/30', 'dev', 'eth0'], W1);
  await ip(['addr', 'add', '10.129.0.2/30', 'dev', 'eth0'], W2);
  for (const n of [W1, W2]) await ip(['link', 'set', 'eth0', 'up'], n);

  const www = join(L.work, 'www');
  await mkdir(www);
  await writeFile(join(www, 'index.html'), 'ok\n');
  void keep(execa('ip', ['netns', 'exec', L.r, 'busybox', 'httpd', '-f', '-p', '8080', '-h', www], { reject: false, stdin: 'ignore' }));
  void keep(execa('ip', ['netns', 'exec', L.s, 'iperf3', '-s', '-B', '203.0.113.10'], { reject: false, stdin: 'ignore', stdout: 'ignore' }));

  const policyFile = join(L.work, 'policy.json');
  await writeFile(policyFile, JSON.stringify(POLICY));
  const tk = await L.admin(['token', 'create', '--namespace', NSP, '--limit', '3', '--policy', policyFile]);
  if (tk.exitCode !== 0) throw new Error(`token create: ${String(tk.stderr)}`);
  const token = String(tk.stdout).trim();

  // The exit node, up for the whole run, with its exit routes approved.
  const exit = keep(L.inNs(L.r, 'state-r', ['up', '--name', 'exit', '--control-plane', NATS, '--token', token, '--advertise', '198.18.0.21', '--exit-node']));
  const exitErr = collect(exit, 'stderr');
  await waitFor(() => exitErr().includes('is up on lattice0'), 60_000, `the exit node up (${exitErr().slice(-400)})`);
  const ok = await L.admin(['route', 'approve', `${NSP}/exit`, 'exit']);
  if (ok.exitCode !== 0) throw new Error(`route approve: ${String(ok.stderr)}`);
  await waitFor(() => exitErr().includes('forwarding for approved routes: 0.0.0.0/0 ::/0'), 30_000, 'the exit node forwarding');
  const exitStatus = JSON.parse(String((await L.inNs(L.r, 'state-r', ['status', '--name', 'exit', '--json'])).stdout)) as HostStatus;
  const exitAddr = exitStatus.address.ipv4;
  await waitForListener(L.r, 8080);

  // wireguard-go pair: w2 runs for the whole bench; w1 is brought up per round (baseline of (a)).
  const k1 = await genKeypair();
  const k2 = await genKeypair();
  await writeFile(join(L.work, 'w1.key'), k1.privateKey + '\n', { mode: 0o600 });
  await writeFile(join(L.work, 'w2.key'), k2.privateKey + '\n', { mode: 0o600 });
  const wgUp = async (ns: string, dev: string, key: string, peerKey: string, port: number, endpoint: string, addr: string): Promise<{ proc: ResultPromise }> => {
    const proc = keep(execa('ip', ['netns', 'exec', ns, 'wireguard-go', '-f', dev], { reject: false, stdin: 'ignore', stdout: 'ignore', stderr: 'ignore', env: { WG_PROCESS_FOREGROUND: '1' } }));
    await waitFor(async () => (await execa('ip', ['-n', ns, 'link', 'show', dev], { reject: false })).exitCode === 0, 10_000, `${dev} created`);
    await execa('ip', ['netns', 'exec', ns, 'wg', 'set', dev, 'private-key', join(L.work, key), 'listen-port', String(port), 'peer', peerKey, 'allowed-ips', '10.130.0.0/24', 'endpoint', endpoint]);
    await ip(['addr', 'add', `${addr}/24`, 'dev', dev], ns);
    await ip(['link', 'set', dev, 'mtu', String(MTU), 'up'], ns);
    // Wrapped: an async function returning the subprocess itself would wait for it to exit.
    return { proc };
  };
  const wgDown = async ({ proc }: { proc: ResultPromise }) => {
    proc.kill('SIGTERM');
    await proc;
    await waitFor(async () => (await execa('ip', ['-n', W1, 'link', 'show', WG1], { reject: false })).exitCode !== 0, 10_000, `${WG1} gone`);
  };
  await wgUp(W2, WG2, 'w2.key', k1.publicKey, 51821, '10.129.0.1:51820', '10.130.0.2');
  void keep(execa('ip', ['netns', 'exec', W2, 'busybox', 'httpd', '-f', '-p', '8080', '-h', www], { reject: false, stdin: 'ignore' }));
  void keep(execa('ip', ['netns', 'exec', W2, 'iperf3', '-s', '-B', '10.130.0.2'], { reject: false, stdin: 'ignore', stdout: 'ignore' }));
  await waitForListener(W2, 8080);
  await waitForListener(W2, 5201);
  await waitForListener(L.s, 5201);

  const rootfs = await busyboxRootfs(L.work);
  await addIperf3(rootfs);
  console.log(`setup ${((performance.now() - t0) / 1000).toFixed(1)} s; ${ROUNDS} rounds each, load average ${loadavg().map((x) => x.toFixed(2)).join(' ')} on ${availableParallelism()} cores`);

  // --- (a) joining
  interface Join { upLine: number; handshake: number; answer: number }
  const joins: Join[] = [];
  const wgJoins: number[] = [];
  const cliStarts: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    // What any `lattice` command costs before it does anything (node start, module loading).
    const c0 = Date.now();
    await L.inNs(H, 'state-h', ['--version']);
    cliStarts.push(Date.now() - c0);
    const start = Date.now();
    const answered = probe(H, exitAddr, 8080);
    const up = keep(L.inNs(H, 'state-h', ['up', '--name', 'h', '--control-plane', NATS, '--token', token, '--advertise', '198.18.0.23']));
    const upErr = collect(up, 'stderr');
    await waitFor(() => upErr().includes('is up on lattice0'), 60_000, `lattice up of H (${upErr().slice(-400)})`);
    const upLine = Date.now() - start;
    const answer = (await answered) - start;
    let hs = 0;
    await waitFor(async () => {
      const s = await L.inNs(H, 'state-h', ['status', '--name', 'h', '--json']);
      if (s.exitCode !== 0) return false;
      const at = (JSON.parse(String(s.stdout)) as HostStatus).peers.find((p) => p.name === 'exit')?.latestHandshake;
      if (at) hs = Date.parse(at) - start;
      return Boolean(at);
    }, 30_000, `H's handshake with the exit node (${upErr().slice(-400)})`);
    joins.push({ upLine, handshake: hs, answer });
    const down = await L.inNs(H, 'state-h', ['down', '--name', 'h']);
    if (down.exitCode !== 0) throw new Error(`down: ${String(down.stderr)}`);
    await up;

    const wgStart = Date.now();
    const wgAnswered = probe(W1, '10.130.0.2', 8080);
    const w1 = await wgUp(W1, WG1, 'w1.key', k2.publicKey, 51820, '10.129.0.2:51821', '10.130.0.1');
    wgJoins.push((await wgAnswered) - wgStart);
    await wgDown(w1);
    console.log(`join round ${i + 1}${i === 0 ? ' (enrolls)' : ' (stored identity)'}: lattice up: "is up" ${upLine} ms, handshake ${hs} ms, first answer ${answer} ms;  wireguard-go by hand: first answer ${wgJoins.at(-1)} ms`);
  }

  // --- (b) throughput
  const w1 = await wgUp(W1, WG1, 'w1.key', k2.publicKey, 51820, '10.129.0.2:51821', '10.130.0.1');
  await probe(W1, '10.130.0.2', 8080);
  const viaExit: Iperf[] = [];
  const wgwg: Iperf[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const sbx = await L.inNs(L.b, 'state-b', ['sandbox', 'start', '--name', 'sbx', '--control-plane', NATS, '--token', token, '--advertise', '198.18.0.22', '--exit-node', 'exit', '--rootfs', rootfs, '--', ...iperfArgs('203.0.113.10', SECS)]);
    viaExit.push(parseIperf(String(sbx.stdout), `sandbox -> exit (exit ${sbx.exitCode}, ${String(sbx.stderr).slice(-400)})`));
    const w = await execa('ip', ['netns', 'exec', W1, ...iperfArgs('10.130.0.2', SECS)], { reject: false, timeout: (SECS + 30) * 1000 });
    wgwg.push(parseIperf(String(w.stdout), `wg-wg (exit ${w.exitCode})`));
    console.log(`throughput round ${i + 1}: sandbox -> exit node -> internet ${viaExit.at(-1)!.mbps.toFixed(0)} Mbit/s (retr ${viaExit.at(-1)!.retransmits});  wg-wg ${wgwg.at(-1)!.mbps.toFixed(0)} Mbit/s (retr ${wgwg.at(-1)!.retransmits})`);
  }
  await wgDown(w1);

  const restarts = joins.slice(1);
  const mA = med(joins.map((j) => j.answer));
  const mW = med(wgJoins);
  console.log('');
  console.log(`(a) joining, medians of ${ROUNDS} (round 1 enrolls; the rest reuse the identity):`);
  console.log(`  lattice up: process start -> "is up" ${ms(med(joins.map((j) => j.upLine)))}`);
  console.log(`  lattice up: process start -> handshake with the exit node ${ms(med(joins.map((j) => j.handshake)))}`);
  console.log(`  lattice up: process start -> first answered connect ${ms(mA)}${restarts.length ? `   (restarts only: ${med(restarts.map((j) => j.answer)).toFixed(0)} ms; enrolling: ${joins[0]!.answer} ms)` : ''}`);
  console.log(`  wireguard-go by hand (start, wg set, addr, up) -> first answered connect ${ms(mW)}`);
  console.log(`  \`lattice --version\` (node start and CLI load, for scale) ${ms(med(cliStarts))}`);
  console.log(`  ratio lattice up / wireguard-go, first answer: ${(mA / mW).toFixed(2)}`);
  const mX = med(viaExit.map((x) => x.mbps));
  const mG = med(wgwg.map((x) => x.mbps));
  console.log(`(b) TCP throughput, medians of ${ROUNDS} x ${SECS} s (iperf3 receiver side, inner MTU ${MTU}):`);
  console.log(`  sandbox (runsc) -> TS WireGuard -> exit node (lattice up, TS WireGuard, nft masquerade) -> internet ${mX.toFixed(0).padStart(6)} Mbit/s`);
  console.log(`  wireguard-go <-> wireguard-go                                                     ${mG.toFixed(0).padStart(6)} Mbit/s`);
  console.log(`  ratio via-exit / wg-wg: ${(mX / mG).toFixed(3)}`);
  console.log(`  load average (1/5/15 min) at the end: ${loadavg().map((x) => x.toFixed(2)).join(' ')} on ${availableParallelism()} cores`);
  console.log('note: shared, noisy 2-core machine; compare ratios from the same run, not absolute figures.');
} catch (err) {
  console.log(`host bench failed: ${(err as Error).stack ?? String(err)}`);
  process.exitCode = 1;
} finally {
  for (const c of children) c.kill('SIGTERM');
  await Promise.allSettled(children.map((c) => Promise.race([c, new Promise((r) => setTimeout(r, 5000))])));
  for (const c of children) c.kill('SIGKILL');
  await Promise.allSettled(children);
  for (const n of made.reverse()) await deleteNetns(n).catch(() => undefined);
  await lab?.stop();
}
