/**
 * Launcher overhead, in one run (every figure against bare `runsc run` of the same bundle, measured
 * interleaved in the same phase so both see the same machine):
 *
 *   phase 1, a daemon without a pool: `lattice sandbox run -- /bin/true`, the daemon's API run of
 *            /bin/true (typed client: create, wait, logs; then remove), bare `runsc run`.
 *            Goals: lattice/bare <= 1.5, daemon/bare <= 1.2.
 *   phase 2, a daemon with `--pool ROOTFS=10`: the same API run taking a parked sandbox (pooled/bare);
 *            first output of `echo hi` measured at the API (POST /v1/sandboxes to the first byte of
 *            GET .../logs?follow=true), pool full before each request: p50/p99 (goals 50 ms / 150 ms),
 *            and for a named request (the daemon renames the parked sandbox's host first: one runsc exec);
 *            the same for 100 sandboxes started 10 at a time (the pool refilled between batches);
 *            memory per idle parked sandbox: the daemon's RSS delta per parked sandbox (the launcher's
 *            share) and the RSS of its runsc processes (sandbox, gofer).
 * The machine's load average is printed with the figures.
 */
import { execa, type ResultPromise } from 'execa';
import { readFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildSpec } from '../src/oci/spec.js';
import { REPO, CLI, waitFor } from '../e2e/support/env.js';
import { LatticeClient, socketAnswers } from '../src/client/index.js';

const ROUNDS = Number(process.env.ROUNDS ?? 15);
const POOL = 10;

const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
const med = (xs: number[]) => pct(xs, 0.5);
const ms = (x: number) => `${x.toFixed(0)} ms`;

/** Resident set size of a process in KiB (/proc/PID/status VmRSS); 0 when it is gone. */
async function rssKiB(pid: number): Promise<number> {
  const s = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  return Number(/VmRSS:\s+(\d+)/.exec(s)?.[1] ?? 0);
}

const work = await mkdtemp(join(tmpdir(), 'lt-bench-run-'));
const daemons: ResultPromise[] = [];
try {
  const load0 = loadavg();
  const rootfs = join(work, 'rootfs');
  await execa('sh', [join(REPO, 'bundles/demo/build-rootfs.sh'), rootfs]);
  const bundle = join(work, 'bundle');
  await execa('mkdir', ['-p', bundle]);
  await writeFile(join(bundle, 'config.json'), JSON.stringify(buildSpec({ args: ['/bin/true'], rootfs })));
  let bareN = 0;
  const bareRun = async () => {
    const t = performance.now();
    await execa('runsc', ['--root', join(work, 'runsc'), '--network=none', 'run', '--bundle', bundle, `bare-${bareN++}`]);
    return performance.now() - t;
  };

  /** A daemon on its own state dir (with `pool` flags), and its client once it answers. */
  const startDaemon = async (name: string, flags: string[]) => {
    const state = join(work, name);
    await execa('mkdir', ['-p', '-m', '700', state]);
    const d = execa(process.execPath, [CLI, '--state-dir', state, 'daemon', ...flags], { reject: false, stdin: 'ignore' });
    daemons.push(d);
    const socket = join(state, 'daemon.sock');
    await waitFor(() => socketAnswers(socket), 60_000, 'the daemon answers');
    return { state, pid: d.pid!, client: new LatticeClient({ socket }), stop: async () => (d.kill('SIGTERM'), await d) };
  };
  const runTrue = async (client: LatticeClient) => {
    const t = performance.now();
    const r = await client.run({ rootfs, cmd: ['/bin/true'] });
    const took = performance.now() - t;
    await client.remove(r.sandbox.id);
    return took;
  };

  // Phase 1: no pool.
  const cold = await startDaemon('cold', []);
  const bare1: number[] = [];
  const launcher: number[] = [];
  const daemonCold: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    daemonCold.push(await runTrue(cold.client));
    bare1.push(await bareRun());
    const t = performance.now();
    await execa(process.execPath, [CLI, '--state-dir', cold.state, 'sandbox', 'run', '--rootfs', rootfs, '--', '/bin/true']);
    launcher.push(performance.now() - t);
  }
  const coldRss = await rssKiB(cold.pid);
  await cold.stop();

  // Phase 2: a pool of POOL.
  const warm = await startDaemon('warm', ['--pool', `${rootfs}=${POOL}`]);
  const c = warm.client;
  const parked = async () => (await c.pool())[0]!.warm;
  const full = () => waitFor(async () => (await parked()).length === POOL, 300_000, 'the pool is full');
  await full();
  /** First output of `echo hi` at the API; whether a parked sandbox served it. */
  let named = 0;
  const firstOutput = async (name?: boolean): Promise<{ ms: number; pooled: boolean }> => {
    const before = new Set(await parked());
    const t = performance.now();
    const sb = await c.create({ rootfs, cmd: ['echo', 'hi'], ...(name ? { name: `bench-${named++}` } : {}) });
    for await (const chunk of c.logs(sb.id, { follow: true })) if (chunk.length) break;
    const took = performance.now() - t;
    await c.wait(sb.id);
    await c.remove(sb.id);
    return { ms: took, pooled: before.has(sb.id) };
  };
  const bare2: number[] = [];
  const pooledRuns: number[] = [];
  const first: number[] = [];
  const firstNamed: number[] = [];
  let firstPooled = 0;
  for (let i = 0; i < ROUNDS; i++) {
    await full();
    pooledRuns.push(await runTrue(c));
    bare2.push(await bareRun());
    await full();
    const f = await firstOutput();
    first.push(f.ms);
    if (f.pooled) firstPooled++;
    await full();
    firstNamed.push((await firstOutput(true)).ms);
  }
  const many: number[] = [];
  let manyPooled = 0;
  for (let batch = 0; batch < 10; batch++) {
    await full();
    const got = await Promise.all(Array.from({ length: 10 }, () => firstOutput()));
    for (const g of got) {
      many.push(g.ms);
      if (g.pooled) manyPooled++;
    }
  }
  await full();
  const warmRss = await rssKiB(warm.pid);
  const ids = await parked();
  const ps = String((await execa('ps', ['-eo', 'pid=,args='])).stdout).split('\n');
  let runscRss = 0;
  for (const line of ps) {
    const [pid, ...args] = line.trim().split(/\s+/);
    if (args.join(' ').includes('runsc') && ids.some((id) => args.includes(id))) runscRss += await rssKiB(Number(pid));
  }
  await warm.stop();
  const load1 = loadavg();

  const b1 = med(bare1);
  const b2 = med(bare2);
  console.log(`load average at start ${load0.map((x) => x.toFixed(2)).join(' ')}, at end ${load1.map((x) => x.toFixed(2)).join(' ')} (2 cores, shared)`);
  console.log(`phase 1 (no pool)`);
  console.log(`  runsc run (bare)              median ${ms(b1)} over ${ROUNDS}`);
  console.log(`  lattice sandbox run           median ${ms(med(launcher))}  ratio ${(med(launcher) / b1).toFixed(2)} (goal <= 1.50)`);
  console.log(`  daemon API run, cold          median ${ms(med(daemonCold))}  ratio ${(med(daemonCold) / b1).toFixed(2)} (goal <= 1.20)`);
  console.log(`phase 2 (--pool ROOTFS=${POOL})`);
  console.log(`  runsc run (bare)              median ${ms(b2)} over ${ROUNDS}`);
  console.log(`  daemon API run, pooled        median ${ms(med(pooledRuns))}  ratio ${(med(pooledRuns) / b2).toFixed(2)} (goal <= 1.20)`);
  console.log(`  first output, one at a time   p50 ${ms(med(first))} p99 ${ms(pct(first, 0.99))} (goals 50/150 ms); ${firstPooled}/${ROUNDS} pooled; p50/bare ${(med(first) / b2).toFixed(2)}`);
  console.log(`  first output, named           p50 ${ms(med(firstNamed))} p99 ${ms(pct(firstNamed, 0.99))}; p50/unnamed ${(med(firstNamed) / med(first)).toFixed(2)} (the hostname is set with a runsc exec before the command)`);
  console.log(`  first output, 100, 10 at once p50 ${ms(med(many))} p99 ${ms(pct(many, 0.99))}; ${manyPooled}/100 pooled; p50/bare ${(med(many) / b2).toFixed(2)}`);
  console.log(`  memory per parked sandbox     daemon RSS ${(coldRss / 1024).toFixed(0)} MiB without a pool, ${(warmRss / 1024).toFixed(0)} MiB with ${POOL} parked: ${((warmRss - coldRss) / POOL / 1024).toFixed(1)} MiB each (launcher share); runsc processes ${(runscRss / ids.length / 1024).toFixed(1)} MiB each`);
} finally {
  for (const d of daemons) if (d.exitCode === undefined) d.kill('SIGTERM');
  await Promise.all(daemons.map((d) => d.catch(() => undefined)));
  await rm(work, { recursive: true, force: true });
}
