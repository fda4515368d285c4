import { constants as C } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { ImageFormatError, ImageNotFoundError } from './errors.js';
import { resolveImage, type ImageFiles, type ResolvedImage } from './manifest.js';

/**
 * An OCI image layout directory (oci-layout, index.json, blobs/sha256/...). Blob paths are built only
 * from validated digests; files are opened with O_NOFOLLOW and must be regular files, so a layout
 * cannot smuggle a host file in through a symlink (digest checks would catch it anyway).
 */
export async function layoutFiles(dir: string): Promise<ImageFiles> {
  const st = await fsp.stat(dir).catch((err: unknown) => {
    throw new ImageNotFoundError(`OCI layout ${dir} not found`, { cause: err });
  });
  if (!st.isDirectory()) throw new ImageNotFoundError(`OCI layout ${dir} is not a directory`);
  const layout = await fsp.readFile(join(dir, 'oci-layout'), 'utf8').catch(() => null);
  if (layout === null) throw new ImageFormatError(`${dir}: no oci-layout file; not an OCI image layout`);
  const openRegular = async (name: string) => {
    const fh = await fsp.open(join(dir, name), C.O_RDONLY | C.O_NOFOLLOW).catch((err: unknown) => {
      throw new ImageFormatError(`${dir}: cannot open ${name} (${(err as Error).message})`, { cause: err });
    });
    const s = await fh.stat();
    if (!s.isFile()) {
      await fh.close();
      throw new ImageFormatError(`${dir}: ${name} is not a regular file`);
    }
    return { fh, size: s.size };
  };
  return {
    label: dir,
    has: async (name) => (await fsp.lstat(join(dir, name)).catch(() => null))?.isFile() ?? false,
    size: async (name) => {
      const { fh, size } = await openRegular(name);
      await fh.close();
      return size;
    },
    open: async (name): Promise<Readable> => (await openRegular(name)).fh.createReadStream({ highWaterMark: 1 << 20 }),
  };
}

/** Read the image out of an OCI layout; `ref` matches org.opencontainers.image.ref.name. */
export async function resolveOciLayout(dir: string, ref?: string): Promise<ResolvedImage> {
  return resolveImage(await layoutFiles(dir), ref);
}
