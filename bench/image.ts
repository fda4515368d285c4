/**
 * Image unpack benchmark: a ~100 MB, 4-layer gzip OCI image (random + compressible files, many
 * small ones), unpacked by resolveRootfs (safe extractor, digest + diff_id verification) versus
 * GNU `tar -xzf` of the same layers in order, measured in the same run; then the cached start
 * (second resolveRootfs of the same image). Run: npx tsx bench/image.ts
 */
import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { execa } from 'execa';
import { resolveRootfs } from '../src/image/rootfs.js';
import { makeImage, writeOciLayout } from '../test/image/fixtures.js';
import { makeTar, type EntrySpec } from '../test/image/helpers.js';

const LAYERS = 4;
const RUNS = 3;

function words(n: number): Buffer {
  const vocab = ['agent', 'sandbox', 'lattice', 'gvisor', 'wireguard', 'policy', 'egress', 'audit', 'flow', 'packet'];
  let s = '';
  while (s.length < n) s += `${vocab[(s.length * 7) % vocab.length]} ${s.length}\n`;
  return Buffer.from(s.slice(0, n));
}

async function makeLayer(i: number): Promise<Buffer> {
  const e: EntrySpec[] = [{ name: `usr/`, type: 'directory' }, { name: `usr/l${i}/`, type: 'directory' }];
  // ~25 MB per layer: 12 MB random in 3 big files, 8 MB compressible text in 400 files, 1500 tiny files, symlinks
  for (let f = 0; f < 3; f++) e.push({ name: `usr/l${i}/blob${f}.bin`, body: randomBytes(4 << 20), mode: 0o644 });
  for (let f = 0; f < 400; f++) e.push({ name: `usr/l${i}/text/${Math.floor(f / 50)}/f${f}.txt`, body: words(20_000), mode: 0o644 });
  for (let f = 0; f < 1500; f++) e.push({ name: `usr/l${i}/small/${f % 30}/s${f}`, body: randomBytes(512).toString('hex'), mode: 0o600 });
  for (let f = 0; f < 200; f++) e.push({ name: `usr/l${i}/links/k${f}`, type: 'symlink', linkname: `../small/0/s${f}` });
  return makeTar(e);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function main() {
  const tmp = await fsp.mkdtemp(join(tmpdir(), 'ltimage-bench-'));
  try {
    process.stdout.write('generating layers... ');
    const layers = [];
    for (let i = 0; i < LAYERS; i++) layers.push(await makeLayer(i));
    const img = makeImage(layers, { Entrypoint: ['/bin/sh'] });
    const layout = join(tmp, 'layout');
    await writeOciLayout(layout, img, { gzip: true });
    const gzPaths: string[] = [];
    for (let i = 0; i < LAYERS; i++) {
      const p = join(tmp, `layer${i}.tar.gz`);
      await fsp.writeFile(p, gzipSync(layers[i]));
      gzPaths.push(p);
    }
    const raw = layers.reduce((a, l) => a + l.length, 0);
    const gz = (await Promise.all(gzPaths.map((p) => fsp.stat(p)))).reduce((a, s) => a + s.size, 0);
    console.log(`${LAYERS} layers, ${(raw / 1e6).toFixed(1)} MB uncompressed, ${(gz / 1e6).toFixed(1)} MB gzip`);

    const tarTimes: number[] = [];
    const oursTimes: number[] = [];
    const cachedTimes: number[] = [];
    for (let run = 0; run < RUNS; run++) {
      const dest = join(tmp, `tarx-${run}`);
      await fsp.mkdir(dest);
      await execa('sync'); // start each measurement without the previous one's dirty pages
      let t = performance.now();
      for (const p of gzPaths) await execa('tar', ['-xzf', p, '-C', dest, '--same-owner', '-p']);
      tarTimes.push(performance.now() - t);

      const stateDir = join(tmp, `state-${run}`);
      await execa('sync');
      t = performance.now();
      const r = await resolveRootfs({ kind: 'oci-layout', ref: layout }, { stateDir });
      oursTimes.push(performance.now() - t);
      if (r.cached) throw new Error('first resolve should not be cached');

      t = performance.now();
      const c = await resolveRootfs({ kind: 'oci-layout', ref: layout }, { stateDir });
      cachedTimes.push(performance.now() - t);
      if (!c.cached) throw new Error('second resolve should be cached');
      await fsp.rm(dest, { recursive: true, force: true });
      await fsp.rm(stateDir, { recursive: true, force: true });
    }
    const tarMs = median(tarTimes);
    const oursMs = median(oursTimes);
    console.log(`tar -xzf (baseline)            median ${tarMs.toFixed(0)} ms  runs ${tarTimes.map((x) => x.toFixed(0)).join(' ')}`);
    console.log(`resolveRootfs (safe, verified) median ${oursMs.toFixed(0)} ms  runs ${oursTimes.map((x) => x.toFixed(0)).join(' ')}`);
    console.log(`ratio ours / tar -x            ${(oursMs / tarMs).toFixed(2)}x`);
    console.log(`throughput ours                ${(raw / 1e6 / (oursMs / 1000)).toFixed(0)} MB/s uncompressed`);
    console.log(`cached start (2nd resolve)     median ${median(cachedTimes).toFixed(1)} ms  (${((median(cachedTimes) / oursMs) * 100).toFixed(2)}% of unpack)`);
  } finally {
    await fsp.rm(tmp, { recursive: true, force: true });
  }
}

await main();
