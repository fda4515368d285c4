import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveRootfs, type ResolvedRootfs } from '../../src/image/rootfs.js';
import { tarFiles } from '../../src/image/archive.js';
import { resolveImage } from '../../src/image/manifest.js';
import type { DockerImageApi } from '../../src/image/docker.js';
import { dockerSaveTar, makeImage, writeOciLayout } from '../../test/image/fixtures.js';
import { makeTar } from '../../test/image/helpers.js';
import { ensureDockerd, type DockerdHandle } from './dockerd.js';
import { CLI } from '../support/env.js';

// The agent image: a busybox rootfs plus an entrypoint script, made two ways:
//  - `docker import --change ...` of a rootfs tar (one layer, config written by docker itself);
//  - a two-layer image (busybox layer + a layer with a whiteout and the script) assembled as a
//    docker-save tarball by hand and `docker load`ed.
// Each is then resolved from the engine, from a `docker save` tarball and from an OCI layout.

const tag = randomBytes(4).toString('hex');
const IMPORTED = `ltimage-e2e-import:${tag}`;
const LOADED = `ltimage-e2e-load:${tag}`;
const ENTRY = '#!/bin/sh\necho "agent mode=$AGENT_MODE in $(pwd)"\n';

let tmp: string;
let dockerd: DockerdHandle | null = null;
let busyboxSize = 0;
let n = 0;
const freshState = () => join(tmp, `state-${n++}`);

beforeAll(async () => {
  tmp = await fsp.mkdtemp(join(tmpdir(), 'ltimage-e2e-'));
  dockerd = await ensureDockerd(join(tmp, 'dockerd.log'));
  // busybox rootfs: the static binary plus applet symlinks, and the entrypoint script
  const root = join(tmp, 'rootfs');
  await fsp.mkdir(join(root, 'bin'), { recursive: true });
  await fsp.mkdir(join(root, 'app'));
  await fsp.mkdir(join(root, 'etc'));
  await fsp.copyFile('/bin/busybox', join(root, 'bin/busybox'));
  await fsp.chmod(join(root, 'bin/busybox'), 0o755);
  busyboxSize = (await fsp.stat('/bin/busybox')).size;
  for (const a of ['sh', 'echo', 'cat', 'ls', 'pwd']) await fsp.symlink('busybox', join(root, 'bin', a));
  await fsp.writeFile(join(root, 'etc/old.conf'), 'old\n');
  await fsp.writeFile(join(root, 'app/entry.sh'), ENTRY, { mode: 0o755 });
  await execa('tar', ['-C', root, '-cf', join(tmp, 'rootfs.tar'), '.']);
  await execa('docker', [
    'import',
    '--change', 'ENTRYPOINT ["/app/entry.sh"]',
    '--change', 'ENV AGENT_MODE=strict',
    '--change', 'WORKDIR /app',
    join(tmp, 'rootfs.tar'),
    IMPORTED,
  ]);

  const base = await fsp.readFile(join(tmp, 'rootfs.tar'));
  const top = await makeTar([
    { name: 'etc/', type: 'directory', mode: 0o755 },
    { name: 'etc/.wh.old.conf' },
    { name: 'etc/agent.conf', body: 'mode=layered\n' },
    { name: 'app/', type: 'directory', mode: 0o755 },
    { name: 'app/entry.sh', body: ENTRY.replace('agent', 'layered-agent'), mode: 0o755 },
  ]);
  const img = makeImage([base, top], { Env: ['PATH=/bin', 'AGENT_MODE=layered'], Entrypoint: ['/app/entry.sh'], Cmd: ['--serve'], WorkingDir: '/app' });
  await fsp.writeFile(join(tmp, 'load.tar'), await dockerSaveTar(img, LOADED));
  await execa('docker', ['load', '-i', join(tmp, 'load.tar')]);
});

afterAll(async () => {
  if (dockerd) {
    await execa('docker', ['rmi', '-f', IMPORTED, LOADED], { reject: false });
    await dockerd.stop();
  }
  if (tmp) await fsp.rm(tmp, { recursive: true, force: true });
});


async function imageId(ref: string): Promise<string> {
  return (await execa('docker', ['image', 'inspect', ref, '--format', '{{.Id}}'])).stdout.trim();
}

async function expectBusyboxAgent(r: ResolvedRootfs, layered: boolean): Promise<void> {
  const root = r.rootfsDir;
  expect((await fsp.stat(join(root, 'bin/busybox'))).size).toBe(busyboxSize);
  expect(await fsp.readlink(join(root, 'bin/sh'))).toBe('busybox');
  expect((await fsp.stat(join(root, 'app/entry.sh'))).mode & 0o777).toBe(0o755);
  if (layered) {
    expect(await fsp.readdir(join(root, 'etc'))).toEqual(['agent.conf']);
    expect(r.config).toMatchObject({ entrypoint: ['/app/entry.sh'], cmd: ['--serve'], workingDir: '/app', env: ['PATH=/bin', 'AGENT_MODE=layered'] });
  } else {
    expect(await fsp.readdir(join(root, 'etc'))).toEqual(['old.conf']);
    expect(r.config?.entrypoint).toEqual(['/app/entry.sh']);
    expect(r.config?.env).toContain('AGENT_MODE=strict');
    expect(r.config?.workingDir).toBe('/app');
  }
  // The entrypoint really runs from this rootfs with the image's env and workdir (runsc is the lead's part).
  const env = Object.fromEntries((r.config?.env ?? []).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  const out = await execa('/usr/sbin/chroot', [root, '/bin/sh', '-c', `cd ${r.config?.workingDir ?? '/'} && exec "$@"`, 'sh', ...(r.config?.entrypoint ?? [])], {
    env: { PATH: '/bin', ...env },
    extendEnv: false,
  });
  expect(out.stdout).toBe(`${layered ? 'layered-agent' : 'agent'} mode=${layered ? 'layered' : 'strict'} in /app`);
}

describe('agent image from the local Docker engine', () => {
  it('docker import image: from the engine, then from the cache', async () => {
    const d = dockerd!;
    const stateDir = freshState();
    const docker = d.docker as unknown as DockerImageApi;
    const r = await resolveRootfs({ kind: 'docker', ref: IMPORTED }, { stateDir, docker });
    expect(r.cached).toBe(false);
    expect(r.digest).toBe(await imageId(IMPORTED)); // classic store: the ID is the config digest
    await expectBusyboxAgent(r, false);
    const again = await resolveRootfs({ kind: 'docker', ref: IMPORTED }, { stateDir, docker });
    expect(again).toEqual({ ...r, cached: true });
  });

  it('layered image (whiteout) from the engine', async () => {
    const d = dockerd!;
    const r = await resolveRootfs({ kind: 'docker', ref: LOADED }, { stateDir: freshState(), docker: d.docker as unknown as DockerImageApi });
    await expectBusyboxAgent(r, true);
  });

  it('unknown image: EIMAGE_NOT_FOUND', async () => {
    const d = dockerd!;
    await expect(
      resolveRootfs({ kind: 'docker', ref: `ltimage-e2e-none:${tag}` }, { stateDir: freshState(), docker: d.docker as unknown as DockerImageApi }),
    ).rejects.toMatchObject({ code: 'EIMAGE_NOT_FOUND' });
  });

  it('from a `docker save` tarball', async () => {
    for (const [ref, layered] of [[IMPORTED, false], [LOADED, true]] as const) {
      const path = join(tmp, `save-${layered}.tar`);
      await execa('docker', ['save', '-o', path, ref]);
      const r = await resolveRootfs({ kind: 'docker-archive', ref: path }, { stateDir: freshState() });
      expect(r.digest).toBe(await imageId(ref));
      await expectBusyboxAgent(r, layered);
    }
  });

  it('from an OCI layout made from the saved layers', async () => {
    const dir = await ociLayoutOf(LOADED, 'oci');
    const r = await resolveRootfs({ kind: 'oci-layout', ref: `${dir}:v1` }, { stateDir: freshState() });
    expect(r.digest).toBe(await imageId(LOADED));
    await expectBusyboxAgent(r, true);
  });

  it('runs under gVisor from each source with the image\'s entrypoint, env and workdir', async () => {
    const archive = join(tmp, 'run-save.tar');
    await execa('docker', ['save', '-o', archive, IMPORTED]);
    const layout = await ociLayoutOf(IMPORTED, 'run-oci');
    for (const source of [['--image', IMPORTED], ['--image-archive', archive], ['--oci-layout', `${layout}:v1`]]) {
      const r = await execa(process.execPath, [CLI, '--state-dir', freshState(), 'sandbox', 'run', ...source], { reject: false });
      expect(r.exitCode, `${source.join(' ')}: ${r.stderr}`).toBe(0);
      expect(r.stdout).toBe('agent mode=strict in /app');
    }
    // Flags override the image: a command after -- replaces Cmd, --env and --cwd win over ENV and WORKDIR.
    const o = await execa(process.execPath, [CLI, '--state-dir', freshState(), 'sandbox', 'run', '--image', IMPORTED, '--entrypoint', '/bin/sh', '--env', 'AGENT_MODE=override', '--cwd', '/etc', '--', '-c', 'echo "$AGENT_MODE $(pwd)"'], { reject: false });
    expect(o.stdout).toBe('override /etc');
  });
});

/** An OCI image layout (gzip'd blobs, ref name v1) holding the same config and layers as `ref`. */
async function ociLayoutOf(ref: string, name: string): Promise<string> {
  const path = join(tmp, `${name}.tar`);
  await execa('docker', ['save', '-o', path, ref]);
  const files = await tarFiles(path);
  const image = await resolveImage(files);
  const manifest = JSON.parse((await readAll(await files.open('manifest.json'))).toString('utf8')) as { Config: string }[];
  const configBytes = await readAll(await files.open(manifest[0].Config));
  const layers = await Promise.all(image.layers.map(async (l) => readAll(await l.open())));
  const dir = join(tmp, name);
  await writeOciLayout(dir, { layers, configBytes, configDigest: image.configDigest, config: {} }, { gzip: true, refName: 'v1' });
  return dir;
}

async function readAll(s: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
