import { createReadStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { extract as tarExtract } from 'tar-stream';
import { ImageFormatError, ImageNotFoundError } from './errors.js';
import { archiveName, resolveImage, type ImageFiles, type ResolvedImage } from './manifest.js';

/**
 * A `docker save` tarball on disk (either format; newer ones hold an OCI layout). One scan with
 * tar-stream records where each regular file's data starts; layers are then read by offset, in
 * the manifest's order, whatever the order inside the archive. Names inside the archive are only
 * used as lookup keys, never as host paths.
 */
export async function indexTar(path: string): Promise<Map<string, { offset: number; size: number }>> {
  const index = new Map<string, { offset: number; size: number }>();
  const ex = tarExtract();
  const done = pipeline(createReadStream(path), ex as unknown as NodeJS.WritableStream);
  try {
    for await (const entry of ex) {
      const h = entry.header as typeof entry.header & { byteOffset?: number };
      if ((h.type === 'file' || h.type === 'contiguous-file') && typeof h.byteOffset === 'number') {
        index.set(archiveName(h.name), { offset: h.byteOffset, size: h.size });
      }
      entry.resume();
    }
    await done;
  } catch (err) {
    ex.destroy();
    await done.catch(() => undefined);
    throw new ImageFormatError(`${path}: not a readable tar archive (${(err as Error).message})`, { cause: err });
  }
  return index;
}

export async function tarFiles(path: string): Promise<ImageFiles> {
  const st = await fsp.stat(path).catch((err: unknown) => {
    throw new ImageNotFoundError(`image archive ${path} not found`, { cause: err });
  });
  if (!st.isFile()) throw new ImageNotFoundError(`image archive ${path} is not a file`);
  const index = await indexTar(path);
  const get = (name: string) => {
    const e = index.get(name);
    if (!e) throw new ImageFormatError(`${path}: ${name} is missing`);
    return e;
  };
  return {
    label: path,
    has: async (name) => index.has(name),
    size: async (name) => get(name).size,
    open: async (name): Promise<Readable> => {
      const e = get(name);
      if (e.size === 0) return Readable.from([]);
      return createReadStream(path, { start: e.offset, end: e.offset + e.size - 1 });
    },
  };
}

/** Read the image (config + layer list) out of a docker save tarball; `ref` picks a RepoTag. */
export async function resolveDockerArchive(path: string, ref?: string): Promise<ResolvedImage> {
  return resolveImage(await tarFiles(path), ref);
}
