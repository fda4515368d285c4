import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { extractLayers } from '../../src/image/extract.js';
import { ImageRejectedError } from '../../src/image/errors.js';
import { layer, makeTar, sha256, treeChecksum, type EntrySpec } from './helpers.js';

// Every case: a temp tree with an "outside" victim directory next to the images directory. The
// rootfs target is <tmp>/images/rootfs, so "../../outside" from it (or from its partial sibling)
// lands on the victim. After a rejected extraction the whole temp tree must hash the same as
// before (only the images directory's own mtime may move: the partial dir came and went) and
// no rootfs or partial rootfs may remain.

let tmp: string;
let outside: string;
let images: string;
let target: string;

beforeEach(async () => {
  tmp = await fsp.mkdtemp(join(tmpdir(), 'ltimage-hostile-'));
  outside = join(tmp, 'outside');
  images = join(tmp, 'images');
  target = join(images, 'rootfs');
  await fsp.mkdir(join(outside, 'etc'), { recursive: true });
  await fsp.writeFile(join(outside, 'secret'), 'do not touch\n', { mode: 0o600 });
  await fsp.writeFile(join(outside, 'etc', 'passwd'), 'root:x:0:0::/root:/bin/sh\n');
  await fsp.mkdir(images);
});

afterEach(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

type Layers = EntrySpec[][];

async function expectRejected(layers: Layers, badLayer: number, badEntry: string): Promise<ImageRejectedError> {
  const before = await treeChecksum(tmp, [], [images]);
  const passwdBefore = await fsp.stat('/etc/passwd');
  const inputs = await Promise.all(layers.map(async (l, i) => layer(`layer${i}`, await makeTar(l))));
  const err = await extractLayers(inputs, target).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ImageRejectedError);
  const r = err as ImageRejectedError;
  expect(r.code).toBe('EIMAGE_REJECTED');
  expect(r.layer).toBe(`layer${badLayer}`);
  expect(r.entry).toBe(badEntry);
  expect(r.message).toContain(`layer${badLayer}`);
  expect(r.message).toContain(JSON.stringify(badEntry));
  expect(await treeChecksum(tmp, [], [images])).toBe(before);
  expect(await fsp.readdir(images)).toEqual([]); // no rootfs, no partial
  const passwdAfter = await fsp.stat('/etc/passwd');
  expect([passwdAfter.nlink, passwdAfter.mtimeMs, passwdAfter.size]).toEqual([passwdBefore.nlink, passwdBefore.mtimeMs, passwdBefore.size]);
  return r;
}

/** Extraction succeeds, and nothing outside the images directory changed. */
async function expectContained(layers: Layers): Promise<void> {
  const before = await treeChecksum(tmp, [images]);
  const inputs = await Promise.all(layers.map(async (l, i) => layer(`layer${i}`, await makeTar(l))));
  await extractLayers(inputs, target);
  expect(await treeChecksum(tmp, [images])).toBe(before);
  expect(await fsp.readdir(images)).toEqual(['rootfs']);
}

const file = (name: string, body = 'pwned\n'): EntrySpec => ({ name, type: 'file', mode: 0o644, body });
const dir = (name: string): EntrySpec => ({ name, type: 'directory', mode: 0o755 });
const symlink = (name: string, linkname: string): EntrySpec => ({ name, type: 'symlink', linkname });
const hardlink = (name: string, linkname: string): EntrySpec => ({ name, type: 'link', linkname });

describe('hostile layers are rejected and nothing outside the target changes', () => {
  it('absolute path', async () => {
    const name = join(outside, 'pwned');
    const r = await expectRejected([[file('ok'), file(name)]], 0, name);
    expect(r.reason).toMatch(/absolute/);
  });

  it("'..' path", async () => {
    const r = await expectRejected([[dir('a/'), file('a/../../../outside/pwned')]], 0, 'a/../../../outside/pwned');
    expect(r.reason).toMatch(/\.\./);
  });

  it("'..' path overwriting an existing outside file", async () => {
    await expectRejected([[file('ok')], [file('../../outside/secret')]], 1, '../../outside/secret');
  });

  it('symlink parent escape (same layer)', async () => {
    const r = await expectRejected([[symlink('link', outside), file('link/pwned')]], 0, 'link/pwned');
    expect(r.reason).toMatch(/symlink/);
  });

  it('symlink to outside, then a later layer writes through it', async () => {
    await expectRejected([[symlink('evil', '../../outside')], [file('evil/secret')]], 1, 'evil/secret');
  });

  it('symlink pointing inside is not written through either', async () => {
    await expectRejected([[dir('real/'), symlink('alias', 'real')], [file('alias/x')]], 1, 'alias/x');
  });

  it('directory through a symlink (mkdir through a link)', async () => {
    await expectRejected([[symlink('evil', outside), dir('evil/newdir/')]], 0, 'evil/newdir/');
  });

  it('hardlink to an outside file (absolute target)', async () => {
    const r = await expectRejected([[hardlink('hl', join(outside, 'secret'))]], 0, 'hl');
    expect(r.reason).toMatch(/hardlink target/);
  });

  it("hardlink to /etc/passwd via '..'", async () => {
    const r = await expectRejected([[file('ok'), hardlink('etc/passwd', '../../../../../../../../etc/passwd')]], 0, 'etc/passwd');
    expect(r.reason).toMatch(/\.\./);
  });

  it('hardlink whose target path goes through a symlink', async () => {
    const r = await expectRejected([[symlink('l', outside), hardlink('hl', 'l/secret')]], 0, 'hl');
    expect(r.reason).toMatch(/symlink/);
  });

  it('hardlink to a missing target', async () => {
    await expectRejected([[hardlink('hl', 'nope')]], 0, 'hl');
  });

  it('directory replaced by a symlink, then written through', async () => {
    await expectRejected(
      [[dir('dir/'), file('dir/a')], [symlink('dir', outside)], [file('dir/secret')]],
      2,
      'dir/secret',
    );
  });

  it('directory replaced by a symlink within one layer', async () => {
    await expectRejected([[dir('d/'), symlink('d', '/'), file('d/etc/passwd')]], 0, 'd/etc/passwd');
  });

  it("whiteout escaping with '..' (../.wh.x)", async () => {
    await expectRejected([[file('ok')], [file('ok2'), { name: '../.wh.outside', type: 'file' }]], 1, '../.wh.outside');
  });

  it("whiteout naming '..' (.wh...)", async () => {
    await expectRejected([[dir('a/')], [{ name: 'a/.wh...', type: 'file' }]], 1, 'a/.wh...');
  });

  it('whiteout through a symlink', async () => {
    await expectRejected([[symlink('l', outside)], [{ name: 'l/.wh.secret', type: 'file' }]], 1, 'l/.wh.secret');
  });

  it('opaque whiteout through a symlink', async () => {
    await expectRejected([[symlink('l', outside)], [{ name: 'l/.wh..wh..opq', type: 'file' }]], 1, 'l/.wh..wh..opq');
  });

  it('character device node', async () => {
    const r = await expectRejected([[dir('dev/'), { name: 'dev/sda', type: 'block-device', devmajor: 8, devminor: 0 }]], 0, 'dev/sda');
    expect(r.reason).toMatch(/block-device/);
    await expectRejected([[{ name: 'mem', type: 'character-device', devmajor: 1, devminor: 1 }]], 0, 'mem');
  });

  it('fifo', async () => {
    const r = await expectRejected([[{ name: 'pipe', type: 'fifo' }]], 0, 'pipe');
    expect(r.reason).toMatch(/fifo/);
  });

  it('entry replacing the rootfs itself', async () => {
    await expectRejected([[symlink('./', outside)]], 0, './');
  });

  it('corrupt blob: digest mismatch names the layer', async () => {
    const before = await treeChecksum(tmp, [], [images]);
    const tarBuf = await makeTar([file('a')]);
    const err = await extractLayers([layer('sha256:bad', tarBuf, { digest: sha256('other') })], target).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ImageRejectedError);
    expect((err as Error).message).toMatch(/layer sha256:bad.*digest/);
    expect(await treeChecksum(tmp, [], [images])).toBe(before);
    expect(await fsp.readdir(images)).toEqual([]);
  });

  it('diff_id mismatch (uncompressed content swapped) is rejected', async () => {
    const tarBuf = await makeTar([file('a')]);
    const err = await extractLayers([layer('l0', tarBuf, { gzip: true, diffId: sha256('x') })], target).catch((e: unknown) => e);
    expect((err as ImageRejectedError).code).toBe('EIMAGE_REJECTED');
    expect(await fsp.readdir(images)).toEqual([]);
  });

  it('garbage instead of a tar is rejected, not half-applied', async () => {
    const good = await makeTar([file('a')]);
    const err = await extractLayers([layer('l0', good), layer('l1', Buffer.alloc(2000, 0x41))], target).catch((e: unknown) => e);
    expect((err as ImageRejectedError).code).toBe('EIMAGE_REJECTED');
    expect((err as Error).message).toContain('l1');
    expect(await fsp.readdir(images)).toEqual([]);
  });

  it('a file entry over a symlink to an outside file replaces the link, never writes through it', async () => {
    await expectContained([[dir('etc/'), symlink('etc/passwd', join(outside, 'etc/passwd')), symlink('sec', '../../outside/secret')], [file('etc/passwd', 'x'), file('sec', 'y')]]);
    expect(await fsp.readFile(join(target, 'etc/passwd'), 'utf8')).toBe('x');
    expect((await fsp.lstat(join(target, 'sec'))).isFile()).toBe(true);
  });

  it('a directory entry over a symlink to an outside dir replaces the link (no chmod/chown through it)', async () => {
    await expectContained([[symlink('d', outside)], [{ name: 'd/', type: 'directory', mode: 0o777, uid: 1234, gid: 1234 }]]);
    const st = await fsp.lstat(join(target, 'd'));
    expect([st.isDirectory(), st.mode & 0o777, st.uid]).toEqual([true, 0o777, 1234]);
  });

  it('a whiteout of a symlink removes the link, not its target', async () => {
    await expectContained([
      [symlink('s', join(outside, 'secret')), symlink('o', outside), dir('x/'), symlink('x/l', outside), hardlink('x/h', 's')],
      [{ name: '.wh.s' }, { name: '.wh.o' }, { name: '.wh.x' }],
    ]);
    expect(await fsp.readdir(target)).toEqual([]);
  });

  it('devices are created only with allowDevices', async () => {
    const inputs = [layer('l0', await makeTar([{ name: 'pipe', type: 'fifo', mode: 0o600 }, { name: 'null', type: 'character-device', devmajor: 1, devminor: 3, mode: 0o666 }]))];
    await extractLayers(inputs, target, { allowDevices: true });
    expect((await fsp.lstat(join(target, 'pipe'))).isFIFO()).toBe(true);
    const st = await fsp.lstat(join(target, 'null'));
    expect(st.isCharacterDevice()).toBe(true);
    expect(st.mode & 0o7777).toBe(0o666);
  });
});
