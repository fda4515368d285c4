import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { busyboxRootfs, lattice, requireBinary } from '../support/env.js';
import { ensureDockerd, type DockerdHandle } from './dockerd.js';

// Debian 12's docker (20.10) writes an image that holds the same layer twice as a legacy
// `docker save` archive whose second copy is a symlink entry `<id2>/layer.tar -> ../<id1>/layer.tar`.
// The image is built here by docker itself (legacy builder: the same COPY twice gives the same
// layer), saved, and run under gVisor from the archive and from the engine.

const tag = randomBytes(4).toString('hex');
const BASE = `ltimage-e2e-rep-base:${tag}`;
const IMAGE = `ltimage-e2e-rep:${tag}`;
let tmp: string;
let dockerd: DockerdHandle | null = null;
let n = 0;
const freshState = () => join(tmp, `state-${n++}`);

beforeAll(async () => {
  await requireBinary('runsc');
  await requireBinary('dockerd');
  tmp = await fsp.mkdtemp(join(tmpdir(), 'ltimage-e2e-rep-'));
  dockerd = await ensureDockerd(join(tmp, 'dockerd.log'));
  if (!dockerd) throw new Error(`dockerd is not running and could not be started (log: ${join(tmp, 'dockerd.log')})`);
  const root = await busyboxRootfs(tmp);
  await execa('tar', ['-C', root, '-cf', join(tmp, 'rootfs.tar'), '.']);
  await execa('docker', ['import', join(tmp, 'rootfs.tar'), BASE]);
  const ctx = join(tmp, 'ctx');
  await fsp.mkdir(ctx);
  await fsp.writeFile(join(ctx, 'a'), 'first\n');
  await fsp.writeFile(join(ctx, 'b'), 'second\n');
  await fsp.writeFile(join(ctx, 'Dockerfile'), `FROM ${BASE}\nCOPY a /a\nCOPY b /b\nCOPY a /a\nCMD ["cat", "/a", "/b"]\n`);
  await execa('docker', ['build', '-q', '-t', IMAGE, ctx], { env: { DOCKER_BUILDKIT: '0' } });
}, 180_000);

afterAll(async () => {
  if (dockerd) {
    await execa('docker', ['rmi', '-f', IMAGE, BASE], { reject: false });
    await dockerd.stop();
  }
  if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
});

describe('legacy docker save with a repeated layer (real docker, real runsc)', () => {
  it('the saved archive stores the repeated layer as a symlink, and the image runs from it', async () => {
    const archive = join(tmp, 'save.tar');
    await execa('docker', ['save', '-o', archive, IMAGE]);
    const listing = (await execa('tar', ['-tvf', archive])).stdout;
    expect(listing).toMatch(/^l.* [0-9a-f]{64}\/layer\.tar -> \.\.\/[0-9a-f]{64}\/layer\.tar$/m);
    const r = await lattice(freshState(), ['sandbox', 'run', '--image-archive', archive]);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stdout)).toBe('first\nsecond');
  });

  it('the same image straight from the engine runs too', async () => {
    const r = await lattice(freshState(), ['sandbox', 'run', '--image', IMAGE]);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stdout)).toBe('first\nsecond');
  });
});
