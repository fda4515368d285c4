import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../fsutil.js';
import { statePaths } from '../state.js';
import type { ImageConfig } from './config.js';
import { extractLayers, type ExtractOptions, type LayerInput } from './extract.js';
import { isSha256Digest } from './config.js';

/**
 * Unpacked rootfs cache: <stateDir>/images/<key>/rootfs (+ image.json with the config). The key is
 * the hex of the image config digest (it names the diff_ids, which the extractor verifies, so it names
 * the content), or tar-<hex of the tarball's sha256> for --rootfs tarballs.
 *
 * A cached rootfs is shared by every sandbox of that image and must never be modified: sandboxes
 * mount it read-only. The rootfs directory appears by an atomic rename of a fully extracted partial
 * directory, so its existence means it is complete; concurrent populators race on the rename and the
 * loser discards its copy.
 */
export interface CachedRootfs {
  rootfsDir: string;
  config?: ImageConfig;
  digest: string;
}

interface ImageMeta {
  digest: string;
  config?: ImageConfig;
}

export function cacheKeyForDigest(digest: string): string {
  if (!isSha256Digest(digest)) throw new Error(`not a sha256 digest: ${digest}`);
  return digest.slice('sha256:'.length);
}

export function cacheDir(stateDir: string, key: string): string {
  return join(statePaths(stateDir).images, key);
}

export async function cacheLookup(stateDir: string, key: string): Promise<CachedRootfs | null> {
  const dir = cacheDir(stateDir, key);
  const rootfsDir = join(dir, 'rootfs');
  const st = await fsp.lstat(rootfsDir).catch(() => null);
  if (!st?.isDirectory()) return null;
  const meta = await fsp.readFile(join(dir, 'image.json'), 'utf8').then((s) => JSON.parse(s) as ImageMeta).catch(() => null);
  if (meta === null) return null;
  return { rootfsDir, config: meta.config, digest: meta.digest };
}

/** Extract layers into the cache entry `key` unless someone else has (or just did). */
export async function cachePopulate(
  stateDir: string,
  key: string,
  meta: ImageMeta,
  layers: readonly LayerInput[],
  opts: ExtractOptions,
): Promise<CachedRootfs> {
  const dir = cacheDir(stateDir, key);
  await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
  // image.json first: the rootfs rename is the commit point; the content of image.json is a
  // function of the key, so concurrent writers write the same bytes.
  await writeFileAtomic(join(dir, 'image.json'), JSON.stringify(meta), 0o644);
  const rootfsDir = join(dir, 'rootfs');
  await extractLayers(layers, rootfsDir, opts);
  return { rootfsDir, config: meta.config, digest: meta.digest };
}

/** A scratch directory under the images dir (same filesystem as the cache), removed by the caller. */
export async function scratchDir(stateDir: string): Promise<string> {
  const images = statePaths(stateDir).images;
  await fsp.mkdir(images, { recursive: true, mode: 0o700 });
  return fsp.mkdtemp(join(images, 'tmp-'));
}
