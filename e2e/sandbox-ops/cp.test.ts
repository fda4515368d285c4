/**
 * `lattice sandbox cp` both ways against a running sandbox (issue 19 item 3), with hostile symlinks planted
 * in the sandbox that must not make the host read or write outside DST, also while a directory is swapped
 * for a symlink to / in a loop during the copies.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { lstat, mkdir, readFile, readdir, readlink, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { busyboxRootfs, lattice, requireBinary, requireRoot, tempDir } from '../support/env.js';
import { startBox, type Box } from './helpers.js';

let work: Awaited<ReturnType<typeof tempDir>>;
let stateDir: string;
let box: Box;
const name = `ops-cp-${randomBytes(3).toString('hex')}`;

// Planted by the sandbox itself: links out (absolute, ../), a setuid file, and /tmp/sw/d swapped between a
// directory and a symlink to / for as long as the sandbox runs.
const HOSTILE = [
  'mkdir -p /tmp/h/sub; echo inside > /tmp/h/file; chmod 4755 /tmp/h/file; echo deep > /tmp/h/sub/deep',
  'ln -s /etc/passwd /tmp/h/passwd; ln -s ../../../../../../ /tmp/h/up; ln -s / /tmp/h/root',
  'mkdir -p /tmp/sw; i=0; while true; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/c;',
  '  rm -rf /tmp/sw/d; mkdir /tmp/sw/d; echo swapped > /tmp/sw/d/f; rm -rf /tmp/sw/d; ln -s / /tmp/sw/d; done',
].join('\n');

beforeAll(async () => {
  requireRoot();
  await requireBinary('runsc');
  work = await tempDir('lt-e2e-cp');
  stateDir = join(work.path, 'state');
  box = await startBox(stateDir, await busyboxRootfs(work.path), name, HOSTILE);
});

afterAll(async () => {
  await box?.stop();
  await work?.remove();
});

async function cp(src: string, dst: string) {
  const r = await lattice(stateDir, ['sandbox', 'cp', src, dst]);
  return { code: r.exitCode, stderr: String(r.stderr).trim() };
}

describe('sandbox cp out', () => {
  it('copies a directory; symlinks arrive as symlinks (not followed), setuid is cleared, nothing lands outside DST', async () => {
    const outer = join(work.path, 'outer');
    const dst = join(outer, 'dst');
    await mkdir(dst, { recursive: true });
    const passwd = await readFile('/etc/passwd');
    const r = await cp(`${name}:/tmp/h`, dst);
    expect(r.code, r.stderr).toBe(0);
    expect((await readdir(outer)).sort()).toEqual(['dst']);
    expect((await readdir(join(dst, 'h'))).sort()).toEqual(['file', 'passwd', 'root', 'sub', 'up']);
    expect(await readFile(join(dst, 'h/file'), 'utf8')).toBe('inside\n');
    expect((await stat(join(dst, 'h/file'))).mode & 0o7777).toBe(0o755);
    expect(await readFile(join(dst, 'h/sub/deep'), 'utf8')).toBe('deep\n');
    for (const [link, target] of [['passwd', '/etc/passwd'], ['up', '../../../../../../'], ['root', '/']]) {
      expect((await lstat(join(dst, 'h', link!))).isSymbolicLink()).toBe(true);
      expect(await readlink(join(dst, 'h', link!))).toBe(target);
    }
    expect(await readFile('/etc/passwd')).toEqual(passwd);
  });

  it('a symlink named as SRC is copied as the link; DST as a new name; a missing SRC fails with tar\'s reason', async () => {
    const dst = join(work.path, 'single');
    await mkdir(dst);
    const link = await cp(`${name}:/tmp/h/passwd`, join(dst, 'pw'));
    expect(link.code, link.stderr).toBe(0);
    expect(await readlink(join(dst, 'pw'))).toBe('/etc/passwd');
    const renamed = await cp(`${name}:/tmp/h/file`, join(dst, 'renamed'));
    expect(renamed.code, renamed.stderr).toBe(0);
    expect(await readFile(join(dst, 'renamed'), 'utf8')).toBe('inside\n');
    const missing = await cp(`${name}:/tmp/nonexist`, dst);
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/^lattice: copying .*:\/tmp\/nonexist failed in the sandbox: tar: .*No such file or directory$/);
    expect((await readdir(dst)).sort()).toEqual(['pw', 'renamed']);
  });

  it('a directory swapped for a symlink to / during copies never brings the host\'s files into DST', async () => {
    for (let i = 0; i < 5; i++) {
      const dst = join(work.path, `swap-${i}`);
      await mkdir(dst);
      const r = await cp(`${name}:/tmp/sw/d`, dst);
      if (r.code !== 0) continue; // the copy met the directory half-removed: a failure, not an escape
      const st = await lstat(join(dst, 'd'));
      if (st.isSymbolicLink()) expect(await readlink(join(dst, 'd'))).toBe('/');
      else expect(await readdir(join(dst, 'd'))).toEqual(expect.arrayContaining([]));
      if (st.isDirectory()) for (const f of await readdir(join(dst, 'd'))) expect(f).toBe('f');
    }
  });
});

describe('sandbox cp in', () => {
  it('copies a file and a directory (its symlinks as links) into the sandbox, into a dir or as a new name', async () => {
    const src = join(work.path, 'src');
    await mkdir(join(src, 'tree/sub'), { recursive: true });
    await writeFile(join(src, 'tree/sub/a.txt'), 'alpha\n');
    await symlink('/etc/shadow', join(src, 'tree/link'));
    await writeFile(join(src, 'one.txt'), 'one\n');
    expect((await cp(join(src, 'tree'), `${name}:/tmp`)).code).toBe(0);
    expect((await cp(join(src, 'one.txt'), `${name}:/tmp/renamed.txt`)).code).toBe(0);
    const r = await lattice(stateDir, ['sandbox', 'exec', name, '--', 'sh', '-c', 'cat /tmp/tree/sub/a.txt /tmp/renamed.txt; readlink /tmp/tree/link']);
    expect(String(r.stdout)).toBe('alpha\none\n/etc/shadow');
  });

  it('writing where the sandbox cannot (its read-only root) fails with the sandbox\'s reason', async () => {
    const src = join(work.path, 'ro.txt');
    await writeFile(src, 'x');
    const r = await cp(src, `${name}:/etc/`);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/Read-only file system/);
  });

  it('refuses two host paths and two sandbox paths', async () => {
    expect((await cp('a', 'b')).stderr).toMatch(/^lattice: sandbox cp needs one side as NAME:\/absolute\/path/);
    expect((await cp(`${name}:/a`, `${name}:/b`)).stderr).toMatch(/^lattice: sandbox cp copies between the host and one sandbox/);
  });
});
