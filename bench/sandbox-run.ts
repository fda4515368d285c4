/**
 * Launcher overhead: `lattice sandbox run -- /bin/true` versus bare `runsc run` of the same bundle,
 * interleaved in one run so both see the same machine. Compass goal: ratio <= 1.5.
 */
import { execa } from 'execa';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildSpec } from '../src/oci/spec.js';
import { REPO, CLI } from '../e2e/support/env.js';

const ROUNDS = Number(process.env.ROUNDS ?? 15);

const work = await mkdtemp(join(tmpdir(), 'lt-bench-run-'));
try {
  const rootfs = join(work, 'rootfs');
  await execa('sh', [join(REPO, 'bundles/demo/build-rootfs.sh'), rootfs]);
  const bundle = join(work, 'bundle');
  await execa('mkdir', ['-p', bundle]);
  await writeFile(join(bundle, 'config.json'), JSON.stringify(buildSpec({ args: ['/bin/true'], rootfs })));
  const state = join(work, 'state');

  const bare: number[] = [];
  const launcher: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    let t = performance.now();
    await execa('runsc', ['--root', join(work, 'runsc'), '--network=none', 'run', '--bundle', bundle, `bare-${i}`]);
    bare.push(performance.now() - t);
    t = performance.now();
    await execa(process.execPath, [CLI, '--state-dir', state, 'sandbox', 'run', '--rootfs', rootfs, '--', '/bin/true']);
    launcher.push(performance.now() - t);
  }
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const b = med(bare);
  const l = med(launcher);
  console.log(`runsc run (bare)            median ${b.toFixed(0)} ms over ${ROUNDS}`);
  console.log(`lattice sandbox run         median ${l.toFixed(0)} ms over ${ROUNDS}`);
  console.log(`ratio lattice/bare          ${(l / b).toFixed(2)}  (goal <= 1.50)`);
} finally {
  await rm(work, { recursive: true, force: true });
}
