import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { extractLayers, safeComponents } from '../../src/image/extract.js';
import { lgetxattr, lsetxattr } from '../../src/image/xattr.js';
import { layer, makeTar, sha256 } from './helpers.js';
import { requireCapability } from '../../e2e/support/env.js';

let tmp: string;
let target: string;

beforeEach(async () => {
  tmp = await fsp.mkdtemp(join(tmpdir(), 'ltimage-extract-'));
  target = join(tmp, 'rootfs');
});
afterEach(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

const ls = async (rel: string) => (await fsp.readdir(join(target, rel))).sort();
const read = (rel: string) => fsp.readFile(join(target, rel), 'utf8');
const exists = (rel: string) => fsp.lstat(join(target, rel)).then(() => true, () => false);

describe('safeComponents', () => {
  it('drops . and empty parts, refuses .. and absolute', () => {
    expect(safeComponents('./a//b/./c/')).toEqual(['a', 'b', 'c']);
    expect(safeComponents('./')).toEqual([]);
    expect(safeComponents('a/../b')).toHaveProperty('reason');
    expect(safeComponents('/etc/passwd')).toHaveProperty('reason');
    expect(safeComponents('a\0b')).toHaveProperty('reason');
    expect(safeComponents('a/..b/c..')).toEqual(['a', '..b', 'c..']);
  });
});

describe('layer application', () => {
  it('applies whiteouts and opaque directories across 3 layers, only against lower layers', async () => {
    const l0 = await makeTar([
      { name: 'a/', type: 'directory' },
      { name: 'a/1', body: 'a1' },
      { name: 'a/2', body: 'a2' },
      { name: 'b/', type: 'directory' },
      { name: 'b/x', body: 'bx' },
      { name: 'b/sub/', type: 'directory' },
      { name: 'b/sub/deep', body: 'deep' },
      { name: 'c/', type: 'directory' },
      { name: 'c/keep', body: 'c' },
      { name: 'd/', type: 'directory' },
      { name: 'd/file', body: 'd' },
    ]);
    const l1 = await makeTar([
      { name: 'a/.wh.1' },
      { name: 'b/', type: 'directory' },
      { name: 'b/y', body: 'by' }, // written before the opaque marker: must survive it
      { name: 'b/sub/', type: 'directory' },
      { name: 'b/sub/new', body: 'new' },
      { name: 'b/.wh..wh..opq' },
      { name: 'e', body: 'e1' },
    ]);
    const l2 = await makeTar([
      { name: '.wh.c' }, // a whole directory
      { name: 'd/.wh.file' },
      { name: 'a/3', body: 'a3' },
      { name: 'f', body: 'f2' },
      { name: '.wh.f' }, // same layer: does not hide f
      { name: '.wh.nonexistent' },
      { name: 'gone/.wh.x' }, // whiteout below a missing dir: nothing to do
      { name: '.wh..wh.plnk' }, // aufs bookkeeping: ignored
    ]);
    await extractLayers([layer('l0', l0), layer('l1', l1), layer('l2', l2)], target);
    expect(await ls('')).toEqual(['a', 'b', 'd', 'e', 'f']);
    expect(await ls('a')).toEqual(['2', '3']);
    expect(await ls('b')).toEqual(['sub', 'y']);
    expect(await ls('b/sub')).toEqual(['new']);
    expect(await ls('d')).toEqual([]);
    expect(await read('e')).toBe('e1');
    expect(await read('f')).toBe('f2');
    expect(await fsp.readdir(tmp)).toEqual(['rootfs']); // no partial left
  });

  it('replaces files by directories and directories by files', async () => {
    const l0 = await makeTar([{ name: 'x', body: 'file' }, { name: 'y/', type: 'directory' }, { name: 'y/z', body: 'z' }]);
    const l1 = await makeTar([{ name: 'x/', type: 'directory' }, { name: 'x/in', body: 'in' }, { name: 'y', body: 'now a file' }]);
    await extractLayers([layer('l0', l0), layer('l1', l1)], target);
    expect(await read('x/in')).toBe('in');
    expect(await read('y')).toBe('now a file');
  });

  it('keeps hardlinks as one inode, also across layers, and a rewrite breaks the link', async () => {
    const l0 = await makeTar([{ name: 'bin/', type: 'directory' }, { name: 'bin/busybox', body: 'BB', mode: 0o755 }]);
    const l1 = await makeTar([
      { name: 'bin/sh', type: 'link', linkname: 'bin/busybox' },
      { name: 'bin/ls', type: 'link', linkname: './bin/busybox' },
    ]);
    const l2 = await makeTar([{ name: 'bin/ls', body: 'new ls' }]);
    await extractLayers([layer('l0', l0), layer('l1', l1), layer('l2', l2)], target);
    const bb = await fsp.stat(join(target, 'bin/busybox'));
    const sh = await fsp.stat(join(target, 'bin/sh'));
    expect(sh.ino).toBe(bb.ino);
    expect(bb.nlink).toBe(2);
    expect(await read('bin/busybox')).toBe('BB');
    expect(await read('bin/ls')).toBe('new ls');
  });

  it('creates symlinks verbatim (absolute, relative, dangling) without following them', async () => {
    const l0 = await makeTar([
      { name: 'etc/', type: 'directory' },
      { name: 'abs', type: 'symlink', linkname: '/etc/shadow' },
      { name: 'rel', type: 'symlink', linkname: '../../../../etc' },
      { name: 'dangling', type: 'symlink', linkname: 'nowhere' },
      { name: 'hl-to-link', type: 'link', linkname: 'abs' },
    ]);
    await extractLayers([layer('l0', l0)], target);
    expect(await fsp.readlink(join(target, 'abs'))).toBe('/etc/shadow');
    expect(await fsp.readlink(join(target, 'rel'))).toBe('../../../../etc');
    expect(await fsp.readlink(join(target, 'dangling'))).toBe('nowhere');
    // a hardlink to a symlink is a second name for the link itself, not for what it points at
    expect((await fsp.lstat(join(target, 'hl-to-link'))).isSymbolicLink()).toBe(true);
    expect((await fsp.lstat(join(target, 'abs'))).nlink).toBe(2);
  });

  it('preserves modes (setuid, sticky), ownership and mtimes of files and directories', async () => {
    const t1 = new Date('2021-02-03T04:05:06Z');
    const t2 = new Date('2019-01-01T00:00:00Z');
    const l0 = await makeTar([
      { name: 'usr/', type: 'directory', mode: 0o755 },
      { name: 'usr/bin/', type: 'directory', mode: 0o750, mtime: t2, uid: 0, gid: 50 },
      { name: 'usr/bin/su', body: 'su', mode: 0o4755, uid: 0, gid: 0, mtime: t1 },
      { name: 'usr/bin/agent', body: 'a', mode: 0o2710, uid: 1000, gid: 1001, mtime: t1 },
      { name: 'tmp/', type: 'directory', mode: 0o1777 },
      { name: 'home/u/', type: 'directory', mode: 0o700, uid: 1000, gid: 1000 },
      { name: 'lnk', type: 'symlink', linkname: 'usr', uid: 1000, gid: 1000, mtime: t1 },
    ]);
    await extractLayers([layer('l0', l0)], target);
    const st = (p: string) => fsp.lstat(join(target, p));
    expect((await st('usr/bin/su')).mode & 0o7777).toBe(0o4755);
    const agent = await st('usr/bin/agent');
    expect([agent.mode & 0o7777, agent.uid, agent.gid]).toEqual([0o2710, 1000, 1001]);
    expect(agent.mtime.getTime()).toBe(t1.getTime());
    const bin = await st('usr/bin');
    expect([bin.mode & 0o7777, bin.gid, bin.mtime.getTime()]).toEqual([0o750, 50, t2.getTime()]);
    expect((await st('tmp')).mode & 0o7777).toBe(0o1777);
    const home = await st('home/u');
    expect([home.mode & 0o7777, home.uid]).toEqual([0o700, 1000]);
    expect((await st('home')).mode & 0o7777).toBe(0o755); // implicit parent
    const lnk = await st('lnk');
    expect([lnk.uid, lnk.mtime.getTime()]).toEqual([1000, t1.getTime()]);
    expect((await st('')).mode & 0o7777).toBe(0o755);
  });

  it('applies user.* xattrs from pax headers and skips trusted.* ones', async () => {
    const probe = join(tmp, 'probe');
    await fsp.writeFile(probe, '');
    await requireCapability(`user xattrs on ${tmp}`, () => (lsetxattr(probe, 'user.probe', Buffer.from('1')), true),
      'point TMPDIR at a filesystem with user xattrs (ext4, xfs, btrfs)');
    const l0 = await makeTar([
      { name: 'f', body: 'x', pax: { 'SCHILY.xattr.user.lattice': 'hello', 'SCHILY.xattr.trusted.overlay.opaque': 'y' } },
      { name: 'g', body: 'y', pax: { 'LIBARCHIVE.xattr.user.bin': Buffer.from([0, 1, 2, 255]).toString('base64') } },
    ]);
    const stats = await extractLayers([layer('l0', l0)], target);
    expect(lgetxattr(join(target, 'f'), 'user.lattice')?.toString()).toBe('hello');
    expect(lgetxattr(join(target, 'f'), 'trusted.overlay.opaque')).toBeUndefined();
    expect(lgetxattr(join(target, 'g'), 'user.bin')).toEqual(Buffer.from([0, 1, 2, 255]));
    expect(stats.xattrsSkipped).toBe(1);
  });

  it('reads gzip layers, verifying blob digest and diff_id', async () => {
    const t0 = await makeTar([{ name: 'hello', body: 'world' }]);
    const t1 = await makeTar([{ name: 'big', body: Buffer.alloc(3 << 20, 7) }]);
    const { gzipSync } = await import('node:zlib');
    const gz0 = gzipSync(t0);
    const progress: number[] = [];
    const stats = await extractLayers(
      [layer('l0', t0, { gzip: true, digest: sha256(gz0), diffId: sha256(t0) }), layer('l1', t1, { diffId: sha256(t1) })],
      target,
      { onProgress: (p) => progress.push(p.layer) },
    );
    expect(await read('hello')).toBe('world');
    expect((await fsp.stat(join(target, 'big'))).size).toBe(3 << 20);
    expect(stats.bytes).toBe(t0.length + t1.length);
    expect(progress).toContain(0);
    expect(progress).toContain(1);
  });

  it('a second extractor of the same target loses the race cleanly', async () => {
    const t0 = await makeTar([{ name: 'a', body: '1' }]);
    const t1 = await makeTar([{ name: 'b', body: '2' }]);
    const [r0, r1] = await Promise.all([extractLayers([layer('l0', t0)], target), extractLayers([layer('l0', t1)], target)]);
    expect([r0.raced, r1.raced].sort()).toEqual([false, true]);
    const names = await ls('');
    expect(names.length).toBe(1);
    expect(await fsp.readdir(tmp)).toEqual(['rootfs']);
    expect(await exists(names[0])).toBe(true);
  });
});
