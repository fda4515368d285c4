import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { UsageError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import { statePaths } from '../state.js';
import { resolveDockerArchive } from './archive.js';
import { cacheKeyForDigest, cacheLookup, cachePopulate, scratchDir, type CachedRootfs } from './cache.js';
import type { ImageConfig } from './config.js';
import { isSha256Digest } from './config.js';
import { defaultDocker, dockerImageId, exportDockerImage, type DockerImageApi } from './docker.js';
import { ImageNotFoundError } from './errors.js';
import type { ExtractLimits, ExtractProgress, LayerInput } from './extract.js';
import type { ResolvedImage } from './manifest.js';
import { resolveOciLayout } from './oci-layout.js';
import { ImagePhase, type ImageProgress } from './progress.js';

export const RootfsKind = {
  /** A directory used as-is (not copied, not cached). */
  Dir: 'dir',
  /** A rootfs tarball (.tar / .tar.gz), extracted safely into the cache keyed by its sha256. */
  Tar: 'tar',
  /** An image in the local Docker engine (ref: name[:tag] or ID). */
  Docker: 'docker',
  /** A `docker save` tarball on disk. */
  DockerArchive: 'docker-archive',
  /** An OCI image layout directory; "dir:tag" picks a ref name when the index holds several. */
  OciLayout: 'oci-layout',
} as const;
export type RootfsKind = (typeof RootfsKind)[keyof typeof RootfsKind];

export interface RootfsSource {
  kind: RootfsKind;
  ref: string;
}

export interface ResolveRootfsOptions {
  stateDir: string;
  onProgress?: (p: ImageProgress) => void;
  /** Create device nodes and fifos found in layers instead of rejecting the image. */
  allowDevices?: boolean;
  /** Docker engine client (default: dockerode on DOCKER_HOST or /var/run/docker.sock). */
  docker?: DockerImageApi;
  /** Extraction limits; each one not given keeps its default (DEFAULT_EXTRACT_LIMITS). */
  limits?: Partial<ExtractLimits>;
}

export interface ResolvedRootfs {
  /** Mount this read-only: cached rootfs are shared between sandboxes. */
  rootfsDir: string;
  /** Present for images (docker, docker-archive, oci-layout). */
  config?: ImageConfig;
  /** sha256 config digest for images; sha256 of the file for tarballs; "dir:<abs path>" for directories. */
  digest: string;
  /** Served from the cache without unpacking. */
  cached: boolean;
}

/** Turn a --rootfs argument into a source: an existing directory, or a tarball file. */
export async function rootfsSourceFromArg(arg: string): Promise<RootfsSource> {
  const st = await fsp.stat(arg).catch(() => null);
  if (st === null) throw new UsageError(`--rootfs ${arg}: no such file or directory`);
  if (st.isDirectory()) return { kind: RootfsKind.Dir, ref: arg };
  if (st.isFile()) return { kind: RootfsKind.Tar, ref: arg };
  throw new UsageError(`--rootfs ${arg}: must be a directory or a .tar/.tar.gz file`);
}

/** The one entry point: a rootfs directory (and image config) for a source, unpacking at most once. */
export async function resolveRootfs(source: RootfsSource, opts: ResolveRootfsOptions): Promise<ResolvedRootfs> {
  switch (source.kind) {
    case RootfsKind.Dir: {
      const abs = resolve(source.ref);
      const st = await fsp.stat(abs).catch(() => null);
      if (!st?.isDirectory()) throw new ImageNotFoundError(`rootfs directory ${abs} not found`);
      return { rootfsDir: abs, digest: `dir:${abs}`, cached: false };
    }
    case RootfsKind.Tar:
      return fromTarball(source.ref, opts);
    case RootfsKind.DockerArchive: {
      const image = await resolveDockerArchive(source.ref);
      return fromImage(image, opts);
    }
    case RootfsKind.OciLayout: {
      const { path, tag } = await splitLayoutRef(source.ref);
      return fromImage(await resolveOciLayout(path, tag), opts);
    }
    case RootfsKind.Docker:
      return fromDocker(source.ref, opts);
    default: {
      const k: never = source.kind;
      throw new UsageError(`unknown rootfs source kind ${String(k)}`);
    }
  }
}

async function splitLayoutRef(ref: string): Promise<{ path: string; tag?: string }> {
  if (await fsp.stat(ref).catch(() => null)) return { path: ref };
  const slash = ref.lastIndexOf('/');
  const colon = ref.indexOf(':', slash + 1);
  if (colon > 0) return { path: ref.slice(0, colon), tag: ref.slice(colon + 1) };
  return { path: ref };
}

function extractProgress(opts: ResolveRootfsOptions) {
  const f = opts.onProgress;
  if (!f) return undefined;
  return (p: ExtractProgress) =>
    f({ phase: ImagePhase.Extract, bytes: p.bytes, total: p.size, layer: p.layer, layers: p.layers, name: p.name, done: p.done });
}

function hit(c: CachedRootfs, opts: ResolveRootfsOptions): ResolvedRootfs {
  opts.onProgress?.({ phase: ImagePhase.Cached, bytes: 0, name: c.digest, done: true });
  return { ...c, cached: true };
}

async function fromImage(image: ResolvedImage, opts: ResolveRootfsOptions): Promise<ResolvedRootfs> {
  const key = cacheKeyForDigest(image.configDigest);
  const c = await cacheLookup(opts.stateDir, key);
  if (c) return hit(c, opts);
  const r = await cachePopulate(opts.stateDir, key, { digest: image.configDigest, config: image.config }, image.layers, {
    allowDevices: opts.allowDevices,
    onProgress: extractProgress(opts),
    limits: opts.limits,
  });
  return { ...r, cached: false };
}

async function fromTarball(path: string, opts: ResolveRootfsOptions): Promise<ResolvedRootfs> {
  const st = await fsp.stat(path).catch(() => null);
  if (!st?.isFile()) throw new ImageNotFoundError(`rootfs tarball ${path} not found`);
  const hash = createHash('sha256');
  let bytes = 0;
  opts.onProgress?.({ phase: ImagePhase.Hash, bytes: 0, total: st.size, name: path, done: false });
  for await (const c of createReadStream(path, { highWaterMark: 1 << 20 })) {
    hash.update(c as Buffer);
    bytes += (c as Buffer).length;
  }
  opts.onProgress?.({ phase: ImagePhase.Hash, bytes, total: st.size, name: path, done: true });
  const digest = `sha256:${hash.digest('hex')}`;
  const key = `tar-${digest.slice(7)}`;
  const c = await cacheLookup(opts.stateDir, key);
  if (c) return hit(c, opts);
  // The digest is checked again while extracting: the file may change between the two reads.
  const layer: LayerInput = { name: basename(path), digest, size: bytes, open: async () => createReadStream(path, { highWaterMark: 1 << 20 }) };
  const r = await cachePopulate(opts.stateDir, key, { digest }, [layer], {
    allowDevices: opts.allowDevices,
    onProgress: extractProgress(opts),
    limits: opts.limits,
  });
  return { ...r, cached: false };
}

/** images/alias-<hex of engine ID> holds the config digest when the engine ID is something else (containerd store). */
function aliasPath(stateDir: string, id: string): string {
  return join(statePaths(stateDir).images, `alias-${id.slice(7)}`);
}

async function fromDocker(ref: string, opts: ResolveRootfsOptions): Promise<ResolvedRootfs> {
  const docker = opts.docker ?? defaultDocker();
  const { id, size } = await dockerImageId(docker, ref);
  if (isSha256Digest(id)) {
    const direct = await cacheLookup(opts.stateDir, cacheKeyForDigest(id));
    if (direct) return hit(direct, opts);
    const alias = (await fsp.readFile(aliasPath(opts.stateDir, id), 'utf8').catch(() => '')).trim();
    if (isSha256Digest(alias)) {
      const c = await cacheLookup(opts.stateDir, cacheKeyForDigest(alias));
      if (c) return hit(c, opts);
    }
  }
  const scratch = await scratchDir(opts.stateDir);
  try {
    // Export by ID, not by name: the tag may move while we read.
    const tarPath = await exportDockerImage(docker, isSha256Digest(id) ? id : ref, scratch, opts.onProgress, size);
    const image = await resolveDockerArchive(tarPath);
    const r = await fromImage(image, opts);
    if (isSha256Digest(id) && id !== image.configDigest) await writeFileAtomic(aliasPath(opts.stateDir, id), image.configDigest, 0o644);
    return r;
  } finally {
    await fsp.rm(scratch, { recursive: true, force: true });
  }
}
