import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { extractLayers } from '../../src/image/extract.js';
import { ImageRejectedError } from '../../src/image/errors.js';
import { layer, padded, paxHeader, rawHeader, tarEnd } from './helpers.js';

// Archives written by GNU tar itself (sparse files in every format it writes, volume labels,
// incremental dump directories) and by hand (any typeflag): each one is either restored exactly
// or refused by name, and a refusal leaves nothing behind.

let tmp: string;
let target: string;

beforeEach(async () => {
  tmp = await fsp.mkdtemp(join(tmpdir(), 'ltimage-formats-'));
  target = join(tmp, 'images', 'rootfs');
});

afterEach(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

/** /var/log/lastlog as useradd leaves it: mostly holes, a few data blocks, a trailing hole. */
async function makeSparseSource(): Promise<{ dir: string; content: Buffer }> {
  const dir = join(tmp, 'src');
  await fsp.mkdir(join(dir, 'var', 'log'), { recursive: true });
  const p = join(dir, 'var', 'log', 'lastlog');
  const fd = fs.openSync(p, 'w', 0o664);
  const size = 8 << 20;
  const pieces: Array<[number, Buffer]> = [
    [0, Buffer.alloc(4096, 'a')],
    [1 << 20, Buffer.from('x'.repeat(5000) + 'tail')],
    [(3 << 20) + 100, Buffer.alloc(70_000, 'q')],
  ];
  for (const [off, b] of pieces) fs.writeSync(fd, b, 0, b.length, off);
  fs.ftruncateSync(fd, size);
  fs.fchmodSync(fd, 0o664);
  fs.closeSync(fd);
  fs.utimesSync(p, 1_500_000_000, 1_500_000_000);
  return { dir, content: await fsp.readFile(p) };
}

async function gnuTar(args: string[], cwd: string): Promise<Buffer> {
  const out = join(tmp, `archive-${Math.random().toString(36).slice(2)}.tar`);
  await execa('tar', ['-c', '-f', out, '--numeric-owner', ...args], { cwd });
  return fsp.readFile(out);
}

async function rejection(tar: Buffer): Promise<ImageRejectedError> {
  const err = await extractLayers([layer('L', tar)], target).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(ImageRejectedError);
  expect(await fsp.readdir(join(tmp, 'images'))).toEqual([]); // no rootfs, no partial
  return err as ImageRejectedError;
}

describe('sparse files written by GNU tar', () => {
  const formats: Array<[string, string[]]> = [
    ['old GNU sparse (gnu format, type S)', ['--format=gnu', '--sparse']],
    ['old GNU sparse (oldgnu format, type S)', ['--format=oldgnu', '--sparse']],
    ['pax sparse 0.0', ['--format=pax', '--sparse', '--sparse-version=0.0']],
    ['pax sparse 0.1', ['--format=pax', '--sparse', '--sparse-version=0.1']],
    ['pax sparse 1.0 (GNUSparseFile.<pid>/name)', ['--format=pax', '--sparse', '--sparse-version=1.0']],
  ];
  for (const [what, args] of formats) {
    it(`${what}: restored at its real name with exact content, size, mode and time`, async () => {
      const { dir, content } = await makeSparseSource();
      const tar = await gnuTar([...args, 'var'], dir);
      await extractLayers([layer('L', tar)], target);
      const out = join(target, 'var', 'log', 'lastlog');
      const got = await fsp.readFile(out);
      expect(got.length).toBe(8 << 20);
      expect(got.equals(content)).toBe(true);
      const st = await fsp.stat(out);
      expect(st.mode & 0o7777).toBe(0o664);
      expect(st.mtimeMs).toBe(1_500_000_000_000);
      expect(st.blocks * 512).toBeLessThan(1 << 20); // holes stayed holes
      expect(await fsp.readdir(join(target, 'var', 'log'))).toEqual(['lastlog']); // no GNUSparseFile.* directory
    });
  }

  it('a sparse map that does not add up to the stored data is refused', async () => {
    const data = Buffer.alloc(100, 'z');
    const tar = Buffer.concat([
      paxHeader([['GNU.sparse.size', '4096'], ['GNU.sparse.map', '0,50,1000,60']]),
      rawHeader({ name: 'f', typeflag: '0', size: 100 }),
      padded(data),
      tarEnd(),
    ]);
    const err = await rejection(tar);
    expect(err.message).toContain('sparse map holds 110 bytes but the entry stores 100');
  });
});

describe('entry types lattice does not handle are refused, never written as files', () => {
  it("GNU volume label 'V' (tar -V)", async () => {
    const src = join(tmp, 'v');
    await fsp.mkdir(src);
    await fsp.writeFile(join(src, 'f'), 'x');
    const err = await rejection(await gnuTar(['--format=gnu', '-V', 'my label', 'f'], src));
    expect(err.message).toContain("unsupported entry type 'V' (GNU volume label)");
  });

  it("GNU dump directory 'D' (tar --listed-incremental)", async () => {
    const src = join(tmp, 'd');
    await fsp.mkdir(join(src, 'dir'), { recursive: true });
    await fsp.writeFile(join(src, 'dir', 'f'), 'x');
    const err = await rejection(await gnuTar(['--format=gnu', `--listed-incremental=${join(tmp, 'snar')}`, 'dir'], src));
    expect(err.message).toContain("unsupported entry type 'D'");
    expect(err.entry).toBe('dir/');
  });

  for (const flag of ['Z', 'M', 'N', 'X', 'A', 'q', '9']) {
    it(`hand-made typeflag '${flag}' with data`, async () => {
      const tar = Buffer.concat([rawHeader({ name: 'etc/thing', typeflag: flag, size: 5 }), padded('hello'), tarEnd()]);
      const err = await rejection(tar);
      expect(err.message).toContain(`unsupported entry type '${flag}'`);
      expect(err.entry).toBe('etc/thing');
    });
  }

  it("old GNU sparse type 'S' in a ustar header is refused (only GNU headers carry its map)", async () => {
    const tar = Buffer.concat([rawHeader({ name: 'f', typeflag: 'S', size: 0 }), tarEnd()]);
    expect((await rejection(tar)).message).toContain("unsupported entry type 'S'");
  });

  it('a header with a bad checksum is refused as corrupt', async () => {
    const h = rawHeader({ name: 'f', typeflag: '0', size: 0 });
    h[0] ^= 1;
    expect((await rejection(Buffer.concat([h, tarEnd()]))).message).toContain('checksum');
  });

  it('a size field that is not octal is refused as corrupt', async () => {
    const h = rawHeader({ name: 'f', typeflag: '0', size: 0 });
    h.write('00000000z00\0', 124, 'latin1');
    h.fill(0x20, 148, 156);
    let sum = 0;
    for (const c of h) sum += c;
    h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    expect((await rejection(Buffer.concat([h, tarEnd()]))).message).toContain('size field is not an octal number');
  });
});
