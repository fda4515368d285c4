/**
 * Warm pools of an image (real runsc and dockerd): `lattice daemon --pool image=REF,size=1` keeps a sandbox of
 * the image parked; a request for the image takes it and runs with the image's environment and working
 * directory; when the tag moves to another image, the next request runs cold from the new one (never the
 * parked sandbox of the old digest), the old parked sandbox ends, and the pool refills from the new image.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execa, type ResultPromise } from 'execa';
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ourContainers as leftovers } from '../support/daemon-leftovers.js';
import { CLI, requireBinary, requireRoot, tempDir, busyboxRootfs, lattice, waitFor } from '../support/env.js';
import { ensureDockerd, type DockerdHandle } from '../image/dockerd.js';
import { LatticeClient, socketAnswers, type PoolState } from '../../src/client/index.js';

const TAG = `lt-e2e-pool-${randomBytes(4).toString('hex')}:latest`;
let work: Awaited<ReturnType<typeof tempDir>>;
let rootfs: string;
let stateDir: string;
let daemon: ResultPromise | undefined;
let dockerd: DockerdHandle | undefined;
let c: LatticeClient;

/** `docker import` the busybox rootfs with /etc/version = `version` as TAG (ENV MODE=pooled, WORKDIR /tmp). */
async function importImage(version: string): Promise<void> {
  await writeFile(join(rootfs, 'etc/version'), `${version}\n`);
  const tar = join(work.path, `rootfs-${version}.tar`);
  await execa('tar', ['-C', rootfs, '-cf', tar, '.']);
  await execa('docker', ['import', '--change', 'ENV MODE=pooled', '--change', 'WORKDIR /tmp', tar, TAG]);
}

async function parked(): Promise<string[]> {
  return ((await c.pool()) as PoolState[]).find((p) => p.image === TAG)?.warm ?? [];
}

beforeAll(async () => {
  requireRoot();
  await requireBinary('runsc');
  await requireBinary('docker');
  work = await tempDir('lt-e2e-pool-image');
  dockerd = await ensureDockerd(join(work.path, 'dockerd.log'));
  rootfs = await busyboxRootfs(work.path);
  await importImage('v1');
  stateDir = join(work.path, 'state');
  await execa('mkdir', ['-p', '-m', '700', stateDir]);
  daemon = execa(process.execPath, [CLI, '--state-dir', stateDir, 'daemon', '--pool', `image=${TAG},size=1`], { reject: false, stdin: 'ignore' });
  // The image is unpacked before the daemon listens.
  await waitFor(() => socketAnswers(join(stateDir, 'daemon.sock')), 300_000, 'the daemon answers on its socket');
  c = new LatticeClient({ socket: join(stateDir, 'daemon.sock') });
});

afterAll(async () => {
  daemon?.kill('SIGTERM');
  await daemon;
  if (stateDir) await lattice(stateDir, ['gc', '--kept']);
  await execa('docker', ['rmi', '--force', TAG], { reject: false });
  await dockerd?.stop();
  await work?.remove();
});

describe('warm pools of an image (real runsc, dockerd)', () => {
  it('a request for the image takes the parked sandbox; after the tag moves, never the old one', async () => {
    await waitFor(async () => (await parked()).length === 1, 300_000, 'the image pool is full');
    const [first] = await parked();
    const pooled = await c.run({ image: TAG, cmd: ['sh', '-c', 'echo "$MODE $(pwd) $(cat /etc/version)"'] });
    expect(pooled.sandbox.id).toBe(first);
    expect(pooled.output.toString()).toBe('pooled /tmp v1\n');
    await c.remove(pooled.sandbox.id);

    await waitFor(async () => (await parked()).length === 1, 300_000, 'the image pool refilled');
    const [old] = await parked();
    await importImage('v2');
    const cold = await c.run({ image: TAG, cmd: ['cat', '/etc/version'] });
    expect(cold.sandbox.id).not.toBe(old);
    expect(cold.output.toString()).toBe('v2\n');
    await c.remove(cold.sandbox.id);
    // The parked sandbox of v1 ended (no container left) and the pool refilled from v2.
    await waitFor(async () => !(await leftovers(stateDir)).includes(old!), 120_000, 'the old parked sandbox ended');
    await waitFor(async () => (await parked()).length === 1, 300_000, 'the image pool refilled from the new image');
    const [fresh] = await parked();
    expect(fresh).not.toBe(old);
    const next = await c.run({ image: TAG, cmd: ['cat', '/etc/version'] });
    expect(next.sandbox.id).toBe(fresh);
    expect(next.output.toString()).toBe('v2\n');
    await c.remove(next.sandbox.id);
  });
});
