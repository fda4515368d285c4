import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extractLayers } from '../../src/image/extract.js';
import { lgetxattr, lsetxattr } from '../../src/image/xattr.js';
import { layer } from './helpers.js';

// Differential test: for a seeded corpus of trees packed by GNU tar in every header format it writes
// (v7, ustar, GNU, old-GNU, pax), the tree lattice unpacks equals the tree `tar -x` unpacks: names
// byte for byte, types, modes (setuid/setgid/sticky included), numeric owners, sizes, contents,
// link targets, hardlink groups, mtimes, and user.* xattrs. Needs root (owners are applied).

const SEED = Number(process.env.LATTICE_DIFF_SEED ?? 1414);

/** mulberry32: a small seeded PRNG, so a failure can be replayed with LATTICE_DIFF_SEED. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return { next, int: (n: number) => Math.floor(next() * n), pick: <T>(xs: readonly T[]) => xs[Math.floor(next() * xs.length)] };
}

type Format = 'v7' | 'ustar' | 'gnu' | 'oldgnu' | 'pax';
interface Caps {
  maxName: number;
  maxComp: number;
  maxLink: number;
  maxId: number;
  xattrs: boolean;
  sparse: boolean;
  fracTime: boolean;
}
const CAPS: Record<Format, Caps> = {
  v7: { maxName: 99, maxComp: 40, maxLink: 99, maxId: 0o7777777, xattrs: false, sparse: false, fracTime: false },
  ustar: { maxName: 200, maxComp: 90, maxLink: 100, maxId: 0o7777777, xattrs: false, sparse: false, fracTime: false },
  gnu: { maxName: 400, maxComp: 200, maxLink: 300, maxId: 2 ** 31 - 2, xattrs: false, sparse: true, fracTime: false },
  oldgnu: { maxName: 400, maxComp: 200, maxLink: 300, maxId: 2 ** 31 - 2, xattrs: false, sparse: true, fracTime: false },
  pax: { maxName: 400, maxComp: 200, maxLink: 300, maxId: 2 ** 31 - 2, xattrs: true, sparse: true, fracTime: true },
};

const B = (s: string | Buffer) => (typeof s === 'string' ? Buffer.from(s, 'latin1') : s);

/** Build a random tree under root (paths handled as byte strings so names need not be UTF-8). */
async function makeTree(root: string, format: Format, seed: number): Promise<void> {
  const r = rng(seed);
  const caps = CAPS[format];
  const alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789._-+=,@ ~';
  const comp = (): string => {
    const kind = r.int(10);
    const len = kind === 0 ? Math.min(caps.maxComp, 60 + r.int(caps.maxComp)) : 1 + r.int(12);
    let s = '';
    for (let i = 0; i < len; i++) s += r.pick(alphabet.split(''));
    if (format !== 'v7' && kind === 1) s += 'é'; // UTF-8 (as latin1 bytes below)
    if (format !== 'v7' && kind === 2) s += '\xff\xfe'; // not UTF-8 at all
    s = Buffer.from(s, 'utf8').toString('latin1'); // byte string
    s = s.length > caps.maxComp ? s.slice(0, caps.maxComp) : s;
    return s === '.' || s === '..' ? `${s}x` : s;
  };
  const rootB = Buffer.from(root, 'utf8').toString('latin1');
  const abs = (rel: string) => B(`${rootB}/${rel}`);
  const dirs: string[] = [''];
  const files: string[] = [];
  const all: string[] = [];
  const meta = (rel: string, isLink = false) => {
    const uid = r.int(3) === 0 ? r.int(caps.maxId) : r.int(2000);
    const gid = r.int(3) === 0 ? r.int(caps.maxId) : r.int(2000);
    fs.lchownSync(abs(rel), uid, gid);
    if (!isLink) fs.chmodSync(abs(rel), r.pick([0o644, 0o755, 0o600, 0o4755, 0o2755, 0o1777, 0o444, 0o640, 0o700]));
    const t = 1_000_000_000 + r.int(900_000_000) + (caps.fracTime ? r.int(1000) / 1000 : 0);
    fs.lutimesSync(abs(rel), t, t);
  };
  const n = 60;
  for (let i = 0; i < n; i++) {
    const parent = r.pick(dirs);
    const rel = parent === '' ? comp() : `${parent}/${comp()}`;
    if (rel.length > caps.maxName || all.includes(rel)) continue;
    const kind = r.int(10);
    if (kind < 3) {
      fs.mkdirSync(abs(rel));
      dirs.push(rel);
    } else if (kind < 7) {
      const size = r.pick([0, 1, 511, 512, 513, 4096, 70_000]);
      const data = Buffer.alloc(size);
      for (let j = 0; j < size; j++) data[j] = r.int(256);
      fs.writeFileSync(abs(rel), data);
      files.push(rel);
      if (caps.xattrs && r.int(3) === 0) lsetxattr(abs(rel), `user.k${r.int(5)}`, Buffer.from([0, 255, r.int(256), 10, 61]));
    } else if (kind < 8 && caps.sparse) {
      const fd = fs.openSync(abs(rel), 'w');
      fs.writeSync(fd, Buffer.alloc(5000, 'q'), 0, 5000, 1 << 20);
      fs.ftruncateSync(fd, 3 << 20);
      fs.closeSync(fd);
      files.push(rel);
    } else if (kind < 9) {
      let target = r.int(2) === 0 ? `../${comp()}/${comp()}` : comp();
      if (r.int(4) === 0) target = `/abs/${comp()}`;
      target = target.slice(0, caps.maxLink);
      fs.symlinkSync(B(target), abs(rel));
      meta(rel, true);
      all.push(rel);
      continue;
    } else {
      const linkable = files.filter((f) => f.length + 2 <= caps.maxLink); // "./" + name must fit the link field
      if (linkable.length === 0 || rel.length + 2 > caps.maxLink) continue; // tar may store either name as the target
      fs.linkSync(abs(r.pick(linkable)), abs(rel));
      all.push(rel);
      continue;
    }
    meta(rel);
    all.push(rel);
  }
  for (const d of dirs.slice(1).reverse()) meta(d); // after children: their creation moved the mtimes
}

interface Node {
  type: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  content?: string;
  link?: string;
  inode?: string;
  xattrs?: string;
}

/** name (byte string) -> what a user can observe of it; hardlinks become equal inode classes. */
async function snapshot(root: string, xattrNames: readonly string[]): Promise<Map<string, Node>> {
  const out = new Map<string, Node>();
  const inodes = new Map<number, string>();
  const rootB = Buffer.from(root, 'utf8');
  const walk = (relB: Buffer) => {
    const here = relB.length === 0 ? rootB : Buffer.concat([rootB, Buffer.from('/'), relB]);
    for (const nb of fs.readdirSync(here, { encoding: 'buffer' }).sort(Buffer.compare)) {
      const rel = relB.length === 0 ? nb : Buffer.concat([relB, Buffer.from('/'), nb]);
      const p = Buffer.concat([rootB, Buffer.from('/'), rel]);
      const st = fs.lstatSync(p);
      const name = rel.toString('latin1');
      const node: Node = {
        type: st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'other',
        mode: st.mode,
        uid: st.uid,
        gid: st.gid,
        size: st.isDirectory() ? 0 : st.size,
        mtime: Math.floor(st.mtimeMs),
      };
      if (st.isFile()) {
        node.content = createHash('sha256').update(fs.readFileSync(p)).digest('hex');
        if (st.nlink > 1) {
          if (!inodes.has(st.ino)) inodes.set(st.ino, name);
          node.inode = inodes.get(st.ino);
        }
        const xs = xattrNames.map((x) => `${x}=${lgetxattr(p, x)?.toString('hex') ?? '-'}`).join(',');
        if (xs.includes('=') && !/^(user\.k\d=-,?)*$/.test(xs)) node.xattrs = xs;
      }
      if (st.isSymbolicLink()) node.link = (fs.readlinkSync(p, { encoding: 'buffer' }) as Buffer).toString('latin1');
      out.set(name, node);
      if (st.isDirectory()) walk(rel);
    }
  };
  walk(Buffer.alloc(0));
  return out;
}

let tmp: string;
beforeAll(async () => {
  tmp = await fsp.mkdtemp(join(tmpdir(), 'ltimage-diff-'));
});
afterAll(async () => {
  if (!process.env.LATTICE_DIFF_KEEP) await fsp.rm(tmp, { recursive: true, force: true });
});

const XATTRS = ['user.k0', 'user.k1', 'user.k2', 'user.k3', 'user.k4'];

describe(`differential: lattice vs tar -x over generated layers (seed ${SEED})`, () => {
  for (const format of ['v7', 'ustar', 'gnu', 'oldgnu', 'pax'] as const) {
    it(`${format}: the trees are equal`, async () => {
      const seed = SEED + format.length * 7919 + format.charCodeAt(0);
      const src = join(tmp, `src-${format}`);
      await fsp.mkdir(src);
      await makeTree(src, format, seed);
      const archive = join(tmp, `${format}.tar`);
      const extra = format === 'pax' ? ['--xattrs', '--xattrs-include=user.*'] : [];
      const sparse = CAPS[format].sparse ? ['--sparse'] : [];
      const packed = await execa('tar', ['-c', '-f', archive, `--format=${format}`, '--numeric-owner', ...sparse, ...extra, '-C', src, '.'], { reject: false });
      expect(packed.stderr, `seed ${seed}: the corpus must fit the format`).toBe('');
      const viaTar = join(tmp, `tar-${format}`);
      await fsp.mkdir(viaTar);
      await execa('tar', ['-x', '-f', archive, '-C', viaTar, '--numeric-owner', '--same-owner', '-p', ...extra]);
      const viaUs = join(tmp, `lattice-${format}`);
      await extractLayers([layer(format, await fsp.readFile(archive))], viaUs);
      const want = await snapshot(viaTar, XATTRS);
      const got = await snapshot(viaUs, XATTRS);
      expect(want.size, `seed ${seed}: corpus too small`).toBeGreaterThan(20);
      expect([...got.keys()], `seed ${seed}`).toEqual([...want.keys()]);
      for (const [name, w] of want) expect(JSON.stringify(got.get(name)), `seed ${seed}: ${JSON.stringify(name)}`).toBe(JSON.stringify(w));
    });
  }
});
