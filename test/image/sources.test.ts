import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { resolveRootfs, rootfsSourceFromArg, type ResolvedRootfs } from '../../src/image/rootfs.js';
import { processFromImage, parseImageConfig } from '../../src/image/config.js';
import { createProgressReporter, type ImageProgress } from '../../src/image/progress.js';
import type { DockerImageApi } from '../../src/image/docker.js';
import { dockerSaveTar, sampleImage, writeOciLayout, type ImageFixture } from './fixtures.js';
import { makeTar, sha256 } from './helpers.js';

let tmp: string;
let stateDir: string;
let img: ImageFixture;

beforeEach(async () => {
  tmp = await fsp.mkdtemp(join(tmpdir(), 'ltimage-src-'));
  stateDir = join(tmp, 'state');
  img = await sampleImage();
});
afterEach(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

async function expectSampleRootfs(r: ResolvedRootfs): Promise<void> {
  expect(r.digest).toBe(img.configDigest);
  expect(r.rootfsDir).toBe(join(stateDir, 'images', img.configDigest.slice(7), 'rootfs'));
  expect(await fsp.readFile(join(r.rootfsDir, 'app/entry.sh'), 'utf8')).toContain('exec /bin/tool');
  expect((await fsp.stat(join(r.rootfsDir, 'app/entry.sh'))).mode & 0o777).toBe(0o755);
  expect(await fsp.readFile(join(r.rootfsDir, 'etc/agent.conf'), 'utf8')).toBe('mode=strict\n');
  expect(await fsp.readdir(join(r.rootfsDir, 'etc'))).toEqual(['agent.conf']);
  expect(await fsp.readlink(join(r.rootfsDir, 'bin/sh'))).toBe('tool');
  expect(r.config).toEqual({
    env: ['PATH=/bin', 'AGENT_MODE=strict'],
    entrypoint: ['/app/entry.sh'],
    cmd: ['--serve'],
    workingDir: '/app',
    user: '1000:1000',
    exposedPorts: ['8080/tcp'],
    labels: {},
  });
  // no scratch or partial directories left behind
  expect((await fsp.readdir(join(stateDir, 'images'))).filter((n) => n.startsWith('tmp-'))).toEqual([]);
  expect(await fsp.readdir(join(stateDir, 'images', img.configDigest.slice(7)))).toEqual(['image.json', 'rootfs']);
}

describe('resolveRootfs', () => {
  it('oci-layout (gzip layers): unpacks once, then serves the cache', async () => {
    const dir = join(tmp, 'layout');
    await writeOciLayout(dir, img, { gzip: true, refName: 'v1' });
    const events: ImageProgress[] = [];
    const r1 = await resolveRootfs({ kind: 'oci-layout', ref: dir }, { stateDir, onProgress: (p) => events.push(p) });
    expect(r1.cached).toBe(false);
    await expectSampleRootfs(r1);
    expect(events.filter((e) => e.phase === 'extract' && e.done).map((e) => e.layer)).toEqual([0, 1, 2]);
    const r2 = await resolveRootfs({ kind: 'oci-layout', ref: `${dir}:v1` }, { stateDir });
    expect(r2).toEqual({ ...r1, cached: true });
  });

  it('oci-layout: a tampered layer blob is rejected and nothing is cached', async () => {
    const dir = join(tmp, 'layout');
    await writeOciLayout(dir, img);
    const d = sha256(img.layers[2]).slice(7);
    const evil = await makeTar([{ name: 'app/entry.sh', body: 'evil' }]);
    await fsp.writeFile(join(dir, 'blobs/sha256', d), evil);
    const err = await resolveRootfs({ kind: 'oci-layout', ref: dir }, { stateDir }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'EIMAGE_REJECTED' });
    expect((err as Error).message).toContain(`sha256:${d}`);
    expect(await fsp.readdir(join(stateDir, 'images', img.configDigest.slice(7)))).toEqual(['image.json']);
  });

  it('oci-layout: a digest that is a path is refused', async () => {
    const dir = join(tmp, 'layout');
    await writeOciLayout(dir, img);
    await fsp.writeFile(join(dir, 'index.json'), JSON.stringify({ manifests: [{ digest: 'sha256:../../../etc/passwd', size: 1 }] }));
    await expect(resolveRootfs({ kind: 'oci-layout', ref: dir }, { stateDir })).rejects.toMatchObject({ code: 'EIMAGE_FORMAT' });
  });

  it('docker-archive: follows manifest.json, not archive order, and verifies diff_ids', async () => {
    const path = join(tmp, 'img.tar');
    await fsp.writeFile(path, await dockerSaveTar(img, 'agent:1'));
    const r = await resolveRootfs({ kind: 'docker-archive', ref: path }, { stateDir });
    await expectSampleRootfs(r);
    expect((await resolveRootfs({ kind: 'docker-archive', ref: path }, { stateDir })).cached).toBe(true);
  });

  it('docker-archive: a layer that does not match its diff_id is rejected', async () => {
    const swapped = { ...img, layers: [img.layers[0], img.layers[2], img.layers[1]] };
    const bad = await dockerSaveTar({ ...swapped, configBytes: img.configBytes, configDigest: img.configDigest }, 'x:1');
    const path = join(tmp, 'bad.tar');
    await fsp.writeFile(path, bad);
    await expect(resolveRootfs({ kind: 'docker-archive', ref: path }, { stateDir })).rejects.toMatchObject({ code: 'EIMAGE_REJECTED' });
    expect(await fsp.readdir(join(stateDir, 'images', img.configDigest.slice(7)))).toEqual(['image.json']);
  });

  it('concurrent resolves of one image share one cache entry', async () => {
    const dir = join(tmp, 'layout');
    await writeOciLayout(dir, img);
    const rs = await Promise.all([1, 2, 3].map(() => resolveRootfs({ kind: 'oci-layout', ref: dir }, { stateDir })));
    for (const r of rs) await expectSampleRootfs(r);
  });

  it('tar (--rootfs x.tar.gz): keyed by the file sha256; dir: used as-is', async () => {
    const t = await makeTar([{ name: './', type: 'directory', mode: 0o755 }, { name: './bin/', type: 'directory' }, { name: './bin/x', body: 'x' }]);
    const path = join(tmp, 'rootfs.tar.gz');
    await fsp.writeFile(path, gzipSync(t));
    const src = await rootfsSourceFromArg(path);
    expect(src.kind).toBe('tar');
    const r = await resolveRootfs(src, { stateDir });
    const digest = sha256(await fsp.readFile(path));
    expect(r.digest).toBe(digest);
    expect(r.rootfsDir).toBe(join(stateDir, 'images', `tar-${digest.slice(7)}`, 'rootfs'));
    expect(await fsp.readFile(join(r.rootfsDir, 'bin/x'), 'utf8')).toBe('x');
    expect(r.config).toBeUndefined();
    expect((await resolveRootfs(src, { stateDir })).cached).toBe(true);

    const dsrc = await rootfsSourceFromArg(r.rootfsDir);
    expect(dsrc.kind).toBe('dir');
    expect((await resolveRootfs(dsrc, { stateDir })).rootfsDir).toBe(r.rootfsDir);
    await expect(rootfsSourceFromArg(join(tmp, 'nope'))).rejects.toMatchObject({ code: 'EUSAGE' });
  });

  it('docker (engine twin): exports once, cached by ID afterwards', async () => {
    const save = await dockerSaveTar(img, 'agent:1');
    let exports = 0;
    const docker: DockerImageApi = {
      getImage: (ref) => ({
        inspect: async () => {
          if (ref !== 'agent:1') throw Object.assign(new Error('no such image'), { statusCode: 404 });
          return { Id: 'sha256:' + 'ab'.repeat(32) }; // containerd-store style ID: not the config digest
        },
        get: async () => {
          exports++;
          return Readable.from([save]);
        },
      }),
    };
    const r1 = await resolveRootfs({ kind: 'docker', ref: 'agent:1' }, { stateDir, docker });
    await expectSampleRootfs(r1);
    const r2 = await resolveRootfs({ kind: 'docker', ref: 'agent:1' }, { stateDir, docker });
    expect(r2.cached).toBe(true);
    expect(exports).toBe(1);
    await expect(resolveRootfs({ kind: 'docker', ref: 'missing:1' }, { stateDir, docker })).rejects.toMatchObject({ code: 'EIMAGE_NOT_FOUND' });
  });
});

describe('image config', () => {
  it('command-line flags override the image', () => {
    const { config } = parseImageConfig(img.configBytes);
    expect(processFromImage(config)).toEqual({
      args: ['/app/entry.sh', '--serve'],
      env: ['PATH=/bin', 'AGENT_MODE=strict'],
      cwd: '/app',
      user: '1000:1000',
    });
    expect(processFromImage(config, { cmd: ['--once'], env: ['AGENT_MODE=lax', 'X=1'], cwd: '/tmp', user: '0' })).toEqual({
      args: ['/app/entry.sh', '--once'],
      env: ['PATH=/bin', 'AGENT_MODE=lax', 'X=1'],
      cwd: '/tmp',
      user: '0',
    });
    expect(processFromImage(config, { entrypoint: ['/bin/sh'] }).args).toEqual(['/bin/sh']);
    expect(processFromImage(undefined, { cmd: ['/bin/true'] })).toMatchObject({ args: ['/bin/true'], cwd: '/' });
  });

  it('rejects malformed configs', () => {
    expect(() => parseImageConfig('{')).toThrow(/JSON/);
    expect(() => parseImageConfig(JSON.stringify({ rootfs: { type: 'layers', diff_ids: ['x'] } }))).toThrow(/diff_ids/);
    expect(() => parseImageConfig(JSON.stringify({ config: { Env: [1] }, rootfs: { type: 'layers', diff_ids: [] } }))).toThrow(/Env/);
  });
});

describe('progress reporter (issue #22 item 8)', () => {
  const extract = (layer: number, bytes: number, done = false): ImageProgress => ({ phase: 'extract', layer, layers: 2, name: 'sha256:' + 'a'.repeat(64), bytes, total: 2e6, done });

  it('prints nothing off a terminal (piped or redirected), whatever the work', () => {
    const lines: string[] = [];
    let t = 0;
    const plain = createProgressReporter({ isTTY: false, write: (s) => lines.push(s) }, () => t);
    plain({ phase: 'hash', bytes: 0, total: 5e6, name: '/x.tar', done: false });
    t = 5000;
    plain({ phase: 'hash', bytes: 5e6, total: 5e6, name: '/x.tar', done: true });
    plain(extract(0, 0));
    t = 9000;
    plain(extract(0, 1e6));
    plain(extract(1, 2e6, true));
    plain({ phase: 'cached', bytes: 0, name: 'sha256:b', done: true });
    expect(lines).toEqual([]);
  });

  it('a cache hit prints nothing on a terminal either (no "cached: done 0.0 MB")', () => {
    const tty: string[] = [];
    const bar = createProgressReporter({ isTTY: true, write: (s) => tty.push(s) }, () => 0);
    bar({ phase: 'cached', bytes: 0, name: 'sha256:b', done: true });
    expect(tty).toEqual([]);
  });

  it('on a terminal: one unpack line redrawn in place across layers, ended with a newline after the last layer', () => {
    let t = 0;
    const tty: string[] = [];
    const bar = createProgressReporter({ isTTY: true, write: (s) => tty.push(s) }, () => t);
    bar(extract(0, 0));
    t = 100;
    bar(extract(0, 1e6)); // still within the delay: nothing drawn yet
    expect(tty).toEqual([]);
    t = 400;
    bar(extract(0, 1e6));
    t = 450;
    bar(extract(0, 1.5e6)); // within the redraw interval: skipped
    bar(extract(0, 2e6, true));
    t = 600;
    bar(extract(1, 1e6));
    t = 700;
    bar(extract(1, 2e6, true));
    expect(tty).toEqual([
      `\r\x1b[2Kunpacking image layer 1/2 [${'#'.repeat(15)}${'.'.repeat(15)}] 1.0 MB/2.0 MB`,
      `\r\x1b[2Kunpacking image layer 2/2 [${'#'.repeat(15)}${'.'.repeat(15)}] 1.0 MB/2.0 MB`,
      `\r\x1b[2Kunpacking image layer 2/2 [${'#'.repeat(30)}] 2.0 MB/2.0 MB done`,
      '\n',
    ]);
    expect(tty.join('').split('\n')).toHaveLength(2); // one line on the terminal
  });

  it('work done within the delay draws nothing, and the next phase starts its own clock', () => {
    let t = 0;
    const tty: string[] = [];
    const bar = createProgressReporter({ isTTY: true, write: (s) => tty.push(s) }, () => t);
    bar({ phase: 'hash', bytes: 0, total: 1e6, name: '/x.tar', done: false });
    t = 200;
    bar({ phase: 'hash', bytes: 1e6, total: 1e6, name: '/x.tar', done: true });
    expect(tty).toEqual([]);
    t = 10_000;
    bar({ ...extract(0, 0), layers: 1 });
    t = 10_300;
    bar({ ...extract(0, 1e6), layers: 1 });
    expect(tty).toEqual([`\r\x1b[2Kunpacking image [${'#'.repeat(15)}${'.'.repeat(15)}] 1.0 MB/2.0 MB`]);
  });
});
