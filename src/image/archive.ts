import { createReadStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { Readable } from 'node:stream';
import { ImageFormatError, ImageNotFoundError } from './errors.js';
import { readTar, TarType } from './tar.js';
import { archiveName, resolveImage, type ImageFiles, type ResolvedImage } from './manifest.js';

/**
 * A `docker save` tarball on disk (either format; newer ones hold an OCI layout). One scan records
 * where each regular file's data starts; layers are then read by offset, in the manifest's order,
 * whatever the order inside the archive. Names inside the archive are only used as lookup keys,
 * never as host paths.
 *
 * Symlink entries are recorded too: the legacy format (docker 20.10) stores a layer that appears
 * twice in an image as `<id2>/layer.tar -> ../<id1>/layer.tar`. A lookup follows such links inside
 * the archive's own namespace only (relative targets, never above the archive root, a bounded number
 * of hops) and must end at a regular file; the layer is still verified against its diff_id.
 */
export interface TarIndex {
  files: Map<string, { offset: number; size: number }>;
  links: Map<string, string>;
}

export async function indexTar(path: string): Promise<TarIndex> {
  const files = new Map<string, { offset: number; size: number }>();
  const links = new Map<string, string>();
  const src = createReadStream(path, { highWaterMark: 1 << 20 });
  try {
    for await (const { header: h, offset } of readTar(src)) {
      const name = archiveName(h.name);
      if (h.type === TarType.File && !h.sparse) files.set(name, { offset, size: h.size });
      else if (h.type === TarType.Symlink) links.set(name, h.linkname);
    }
  } catch (err) {
    throw new ImageFormatError(`${path}: not a readable tar archive (${(err as Error).message})`, { cause: err });
  } finally {
    src.destroy();
  }
  return { files, links };
}

const MAX_LINK_HOPS = 16;

/** The regular-file entry `name` designates, following symlink entries inside the archive; null if none. */
export function resolveArchiveName(index: TarIndex, name: string, label: string): string | null {
  let cur = name;
  for (let hop = 0; hop <= MAX_LINK_HOPS; hop++) {
    if (index.files.has(cur)) return cur;
    const target = index.links.get(cur);
    if (target === undefined) return null;
    if (target.startsWith('/')) {
      throw new ImageFormatError(`${label}: ${name} is a symlink to the absolute path ${target}; only links inside the archive are followed`);
    }
    const dir = cur.split('/').slice(0, -1);
    for (const c of target.split('/')) {
      if (c === '' || c === '.') continue;
      if (c === '..') {
        if (dir.length === 0) throw new ImageFormatError(`${label}: ${name} is a symlink that leaves the archive (${target})`);
        dir.pop();
      } else dir.push(c);
    }
    cur = dir.join('/');
  }
  throw new ImageFormatError(`${label}: ${name}: more than ${MAX_LINK_HOPS} symlinks in a row`);
}

export async function tarFiles(path: string): Promise<ImageFiles> {
  const st = await fsp.stat(path).catch((err: unknown) => {
    throw new ImageNotFoundError(`image archive ${path} not found`, { cause: err });
  });
  if (!st.isFile()) throw new ImageNotFoundError(`image archive ${path} is not a file`);
  const index = await indexTar(path);
  const get = (name: string) => {
    const real = resolveArchiveName(index, name, path);
    const e = real === null ? undefined : index.files.get(real);
    if (!e) throw new ImageFormatError(`${path}: ${name} is missing`);
    return e;
  };
  return {
    label: path,
    has: async (name) => resolveArchiveName(index, name, path) !== null,
    size: async (name) => get(name).size,
    open: async (name): Promise<Readable> => {
      const e = get(name);
      if (e.size === 0) return Readable.from([]);
      return createReadStream(path, { start: e.offset, end: e.offset + e.size - 1, highWaterMark: 1 << 20 });
    },
  };
}

/** Read the image (config + layer list) out of a docker save tarball; `ref` picks a RepoTag. */
export async function resolveDockerArchive(path: string, ref?: string): Promise<ResolvedImage> {
  return resolveImage(await tarFiles(path), ref);
}
