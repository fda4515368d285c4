import { createHash } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { pack, type Header } from 'tar-stream';
import type { LayerInput } from '../../src/image/extract.js';

export type EntrySpec = Partial<Header> & { name: string; body?: string | Buffer };

/** Build a layer tar in memory with tar-stream (the same library family an attacker could use). */
export async function makeTar(entries: readonly EntrySpec[]): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of p as unknown as AsyncIterable<Buffer>) chunks.push(Buffer.from(c));
  })();
  for (const e of entries) {
    const { body, ...h } = e;
    await new Promise<void>((resolve, reject) =>
      p.entry({ mtime: new Date(1_600_000_000_000), ...h }, body ?? '', (err) => (err ? reject(err) : resolve())),
    );
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

export function layer(name: string, buf: Buffer, opts: { gzip?: boolean; digest?: string; diffId?: string } = {}): LayerInput {
  const raw = opts.gzip ? gzipSync(buf) : buf;
  return {
    name,
    size: raw.length,
    digest: opts.digest,
    diffId: opts.diffId,
    open: async () => Readable.from([raw]),
  };
}

export const sha256 = (b: Uint8Array | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Checksum of a whole tree (never following symlinks): names, types, modes, owners, sizes, mtimes, contents, link targets. */
export async function treeChecksum(
  root: string,
  exclude: readonly string[] = [],
  ignoreMtimeOf: readonly string[] = [],
): Promise<string> {
  const h = createHash('sha256');
  const walk = async (dir: string, rel: string): Promise<void> => {
    const names = (await fsp.readdir(dir)).sort();
    for (const n of names) {
      const abs = join(dir, n);
      const r = rel ? `${rel}/${n}` : n;
      if (exclude.includes(abs)) continue;
      const st = await fsp.lstat(abs);
      const mtime = ignoreMtimeOf.includes(abs) ? 0 : st.mtimeMs;
      h.update(`${r}\0${st.mode}\0${st.uid}\0${st.gid}\0${st.isDirectory() ? 0 : st.size}\0${mtime}\0${st.nlink}\0`);
      if (st.isSymbolicLink()) h.update(await fsp.readlink(abs));
      else if (st.isFile()) h.update(await fsp.readFile(abs));
      else if (st.isDirectory()) await walk(abs, r);
    }
  };
  const st = await fsp.lstat(root);
  h.update(`.\0${st.mode}\0${st.mtimeMs}\0`);
  await walk(root, '');
  return h.digest('hex');
}

/** Fields of one raw tar header block; strings are byte strings (latin1) so any byte can be placed. */
export interface RawHeader {
  name: string;
  typeflag: string;
  size?: number;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  linkname?: string;
  prefix?: string;
  uname?: string;
  gname?: string;
  devmajor?: number;
  devminor?: number;
  format?: 'ustar' | 'gnu' | 'v7';
  /** Write these numeric fields in GNU base-256 instead of octal. */
  base256?: ReadonlyArray<'uid' | 'gid' | 'size' | 'mtime'>;
}

/** One 512-byte tar header, written by hand (any typeflag, any format, any bytes) with a valid checksum. */
export function rawHeader(h: RawHeader): Buffer {
  const b = Buffer.alloc(512);
  const put = (s: string, off: number, len: number) => b.write(s.slice(0, len), off, 'latin1');
  const oct = (n: number, off: number, len: number, field: 'uid' | 'gid' | 'size' | 'mtime' | 'other' = 'other') => {
    if (field !== 'other' && h.base256?.includes(field)) {
      b[off] = 0x80;
      let v = BigInt(n);
      for (let i = off + len - 1; i > off; i--) {
        b[i] = Number(v & 0xffn);
        v >>= 8n;
      }
      return;
    }
    put(`${n.toString(8).padStart(len - 1, '0')}\0`, off, len);
  };
  put(h.name, 0, 100);
  oct(h.mode ?? 0o644, 100, 8);
  oct(h.uid ?? 0, 108, 8, 'uid');
  oct(h.gid ?? 0, 116, 8, 'gid');
  oct(h.size ?? 0, 124, 12, 'size');
  oct(h.mtime ?? 1_600_000_000, 136, 12, 'mtime');
  b.write(h.typeflag, 156, 'latin1');
  put(h.linkname ?? '', 157, 100);
  const format = h.format ?? 'ustar';
  if (format === 'ustar') b.write('ustar\x0000', 257, 'latin1');
  if (format === 'gnu') b.write('ustar  \0', 257, 'latin1');
  if (format !== 'v7') {
    put(h.uname ?? '', 265, 32);
    put(h.gname ?? '', 297, 32);
    oct(h.devmajor ?? 0, 329, 8);
    oct(h.devminor ?? 0, 337, 8);
  }
  if (format === 'ustar' && h.prefix) put(h.prefix, 345, 155);
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const c of b) sum += c;
  b.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
  return b;
}

/** Data padded to a 512-byte boundary. */
export function padded(data: Buffer | string): Buffer {
  const d = typeof data === 'string' ? Buffer.from(data, 'latin1') : data;
  return Buffer.concat([d, Buffer.alloc((512 - (d.length % 512)) % 512)]);
}

/** A pax extended header ('x', or 'g' for global) carrying `records` (values are byte strings or bytes). */
export function paxHeader(records: ReadonlyArray<[string, string | Buffer]>, typeflag: 'x' | 'g' = 'x'): Buffer {
  const parts = records.map(([k, v]) => {
    const body = Buffer.concat([Buffer.from(` ${k}=`, 'latin1'), typeof v === 'string' ? Buffer.from(v, 'latin1') : v, Buffer.from('\n')]);
    let len = body.length + 1;
    while (String(len).length + body.length !== len) len = String(len).length + body.length;
    return Buffer.concat([Buffer.from(String(len)), body]);
  });
  const data = Buffer.concat(parts);
  return Buffer.concat([rawHeader({ name: 'PaxHeaders/x', typeflag, size: data.length }), padded(data)]);
}

/** Two zero blocks: the end of an archive. */
export const tarEnd = () => Buffer.alloc(1024);
