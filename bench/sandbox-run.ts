/**
 * Launcher overhead: `lattice sandbox run -- /bin/true` versus bare `runsc run` of the same bundle,
 * and the same run through the daemon's API (the typed client's run: create, wait, logs; then remove),
 * interleaved in one run so all see the same machine. Goals: lattice/bare <= 1.5, daemon/bare <= 1.2.
 * Then 100 sandboxes through the daemon, 10 at a time: p50/p99 per request against the bare median.
 */
import { execa } from 'execa';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildSpec } from '../src/oci/spec.js';
import { REPO, CLI, waitFor } from '../e2e/support/env.js';
import { LatticeClient, socketAnswers } from '../src/client/index.js';

const ROUNDS = Number(process.env.ROUNDS ?? 15);

const work = await mkdtemp(join(tmpdir(), 'lt-bench-run-'));
try {
  const rootfs = join(work, 'rootfs');
  await execa('sh', [join(REPO, 'bundles/demo/build-rootfs.sh'), rootfs]);
  const bundle = join(work, 'bundle');
  await execa('mkdir', ['-p', bundle]);
  await writeFile(join(bundle, 'config.json'), JSON.stringify(buildSpec({ args: ['/bin/true'], rootfs })));
  const state = join(work, 'state');

  const socket = join(state, 'daemon.sock');
  await execa('mkdir', ['-p', '-m', '700', state]);
  const daemon = execa(process.execPath, [CLI, '--state-dir', state, 'daemon'], { reject: false, stdin: 'ignore' });
  await waitFor(() => socketAnswers(socket), 60_000, 'the daemon answers');
  const client = new LatticeClient({ socket });
  const viaDaemon = async () => {
    const r = await client.run({ rootfs, cmd: ['/bin/true'] });
    await client.remove(r.sandbox.id);
  };
  const bare: number[] = [];
  const launcher: number[] = [];
  const daemonRuns: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const d = performance.now();
    await viaDaemon();
    daemonRuns.push(performance.now() - d);
    let t = performance.now();
    await execa('runsc', ['--root', join(work, 'runsc'), '--network=none', 'run', '--bundle', bundle, `bare-${i}`]);
    bare.push(performance.now() - t);
    t = performance.now();
    await execa(process.execPath, [CLI, '--state-dir', state, 'sandbox', 'run', '--rootfs', rootfs, '--', '/bin/true']);
    launcher.push(performance.now() - t);
  }
  const pct = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))]!;
  const med = (xs: number[]) => pct(xs, 0.5);
  const b = med(bare);
  const l = med(launcher);
  const dm = med(daemonRuns);
  const many: number[] = [];
  for (let batch = 0; batch < 10; batch++) {
    await Promise.all(
      Array.from({ length: 10 }, async () => {
        const t = performance.now();
        await viaDaemon();
        many.push(performance.now() - t);
      }),
    );
  }
  daemon.kill('SIGTERM');
  await daemon;
  console.log(`runsc run (bare)            median ${b.toFixed(0)} ms over ${ROUNDS}`);
  console.log(`lattice sandbox run         median ${l.toFixed(0)} ms over ${ROUNDS}`);
  console.log(`through the daemon (API)    median ${dm.toFixed(0)} ms over ${ROUNDS}`);
  console.log(`ratio lattice/bare          ${(l / b).toFixed(2)}  (goal <= 1.50)`);
  console.log(`ratio daemon/bare           ${(dm / b).toFixed(2)}  (goal <= 1.20)`);
  console.log(`100 via daemon, 10 at once  p50 ${med(many).toFixed(0)} ms (${(med(many) / b).toFixed(2)}x bare), p99 ${pct(many, 0.99).toFixed(0)} ms (${(pct(many, 0.99) / b).toFixed(2)}x bare)`);
} finally {
  await rm(work, { recursive: true, force: true });
}
