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
