/**
 * Reading an image out of a file store shaped like `docker save` output or an OCI image layout:
 * manifest.json (docker) or index.json -> manifest -> config + layers (OCI). Both docker save
 * formats are covered: old (<id>/layer.tar, <id>.json) and new (OCI layout inside, blobs/sha256/...).
 *
 * Everything read here is untrusted: digests are validated before they become paths, small blobs
 * are size-capped and verified against their digest, layer blobs are verified while extracting.
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { parseImageConfig, isSha256Digest, type ImageConfig } from './config.js';
import { ImageFormatError, ImageNotFoundError, ImageRejectedError } from './errors.js';
import type { LayerInput } from './extract.js';

/** Random access to named files of an image store (a directory, or a tar indexed by offset). */
export interface ImageFiles {
  /** What the user named, for messages. */
  readonly label: string;
  has(name: string): Promise<boolean>;
  size(name: string): Promise<number>;
  open(name: string): Promise<Readable>;
}

export interface ResolvedImage {
  /** sha256 of the config blob: the image ID, and the cache key. */
  configDigest: string;
  config: ImageConfig;
  layers: LayerInput[];
}

const MAX_JSON = 4 << 20;

export const MediaType = {
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  DockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
} as const;

const LAYER_TYPES = new Set([
  'application/vnd.oci.image.layer.v1.tar',
  'application/vnd.oci.image.layer.v1.tar+gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd',
  'application/vnd.oci.image.layer.nondistributable.v1.tar',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd',
  'application/vnd.docker.image.rootfs.diff.tar',
  'application/vnd.docker.image.rootfs.diff.tar.gzip',
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
]);

async function readSmall(files: ImageFiles, name: string): Promise<Buffer> {
  if (!(await files.has(name))) throw new ImageFormatError(`${files.label}: ${name} is missing`);
  const size = await files.size(name);
  if (size > MAX_JSON) throw new ImageFormatError(`${files.label}: ${name} is too large (${size} bytes)`);
  const chunks: Buffer[] = [];
  for await (const c of await files.open(name)) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function parseJson(buf: Buffer, what: string, label: string): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(buf.toString('utf8'));
    if (typeof v !== 'object' || v === null) throw new Error('not an object');
    return v as Record<string, unknown>;
  } catch (err) {
    throw new ImageFormatError(`${label}: ${what} is not valid JSON`, { cause: err });
  }
}

const sha256 = (b: Uint8Array) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export function blobPath(digest: unknown, label: string): string {
  if (!isSha256Digest(digest)) throw new ImageFormatError(`${label}: unsupported or malformed digest ${JSON.stringify(digest)}`);
  return `blobs/sha256/${digest.slice(7)}`;
}

async function readBlob(files: ImageFiles, digest: unknown): Promise<Buffer> {
  const path = blobPath(digest, files.label);
  const buf = await readSmall(files, path);
  if (sha256(buf) !== digest) throw new ImageRejectedError(files.label, path, `blob does not match its digest ${String(digest)}`);
  return buf;
}

/** Normalise a name inside an archive for lookup only (never used as a host path). */
export function archiveName(name: string): string {
  return name.split('/').filter((c) => c !== '' && c !== '.').join('/');
}

/** Resolve an image from a store: docker manifest.json when present, else OCI index.json. */
export async function resolveImage(files: ImageFiles, ref?: string): Promise<ResolvedImage> {
  if (await files.has('manifest.json')) return resolveDockerManifest(files, ref);
  if (await files.has('index.json')) return resolveOciIndex(files, ref);
  throw new ImageFormatError(`${files.label}: neither manifest.json (docker save) nor index.json (OCI layout) found`);
}

async function resolveDockerManifest(files: ImageFiles, ref?: string): Promise<ResolvedImage> {
  let doc: unknown;
  try {
    doc = JSON.parse((await readSmall(files, 'manifest.json')).toString('utf8'));
  } catch (err) {
    if (err instanceof ImageFormatError) throw err;
    throw new ImageFormatError(`${files.label}: manifest.json is not valid JSON`, { cause: err });
  }
  if (!Array.isArray(doc) || doc.length === 0) throw new ImageFormatError(`${files.label}: manifest.json holds no image`);
  type Entry = { Config?: unknown; Layers?: unknown; RepoTags?: unknown };
  const entries = doc as Entry[];
  const pick =
    ref === undefined
      ? entries[0]
      : entries.find((e) => Array.isArray(e.RepoTags) && (e.RepoTags.includes(ref) || e.RepoTags.includes(`${ref}:latest`)));
  if (!pick) throw new ImageNotFoundError(`${files.label}: no image tagged ${ref} in manifest.json`);
  if (typeof pick.Config !== 'string' || !Array.isArray(pick.Layers) || !pick.Layers.every((l) => typeof l === 'string')) {
    throw new ImageFormatError(`${files.label}: manifest.json entry lacks Config/Layers`);
  }
  const configName = archiveName(pick.Config);
  const configBuf = await readSmall(files, configName);
  const configDigest = sha256(configBuf);
  const { config, diffIds } = parseImageConfig(configBuf);
  const layerNames = (pick.Layers as string[]).map(archiveName);
  if (layerNames.length !== diffIds.length) {
    throw new ImageFormatError(`${files.label}: ${layerNames.length} layers but ${diffIds.length} diff_ids in the config`);
  }
  const layers: LayerInput[] = [];
  for (let i = 0; i < layerNames.length; i++) {
    const name = layerNames[i];
    if (!(await files.has(name))) throw new ImageFormatError(`${files.label}: layer ${name} is missing`);
    layers.push({ name, diffId: diffIds[i], size: await files.size(name), open: () => files.open(name) });
  }
  return { configDigest, config, layers };
}

interface Descriptor {
  mediaType?: string;
  digest: string;
  size?: number;
  platform?: { os?: string; architecture?: string; variant?: string };
  annotations?: Record<string, string>;
}

function descriptors(v: unknown, label: string): Descriptor[] {
  if (!Array.isArray(v)) throw new ImageFormatError(`${label}: descriptor list missing`);
  for (const d of v) {
    if (typeof d !== 'object' || d === null || !isSha256Digest((d as Descriptor).digest)) {
      throw new ImageFormatError(`${label}: malformed descriptor ${JSON.stringify(d)?.slice(0, 200)}`);
    }
  }
  return v as Descriptor[];
}

const GOARCH: Record<string, string> = { x64: 'amd64', arm64: 'arm64', arm: 'arm', ia32: '386', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' };

function choose(list: Descriptor[], ref: string | undefined, label: string): Descriptor {
  let cands = list;
  if (ref !== undefined) {
    cands = list.filter((d) => {
      const n = d.annotations?.['org.opencontainers.image.ref.name'];
      const img = d.annotations?.['io.containerd.image.name'];
      return n === ref || img === ref || img === `${ref}:latest` || (n !== undefined && ref.endsWith(`:${n}`));
    });
    if (cands.length === 0) throw new ImageNotFoundError(`${label}: no image named ${ref} in index.json`);
  }
  const arch = GOARCH[process.arch] ?? process.arch;
  const withPlatform = cands.filter((d) => d.platform !== undefined);
  if (withPlatform.length > 0) {
    const m = withPlatform.find((d) => d.platform?.os === 'linux' && d.platform.architecture === arch);
    if (m) return m;
    const noPlat = cands.find((d) => d.platform === undefined);
    if (noPlat) return noPlat;
    throw new ImageNotFoundError(`${label}: no linux/${arch} image in the index`);
  }
  if (cands.length === 0) throw new ImageFormatError(`${label}: index.json lists no manifests`);
  return cands[0];
}

async function resolveOciIndex(files: ImageFiles, ref?: string): Promise<ResolvedImage> {
  const index = parseJson(await readSmall(files, 'index.json'), 'index.json', files.label);
  let desc = choose(descriptors(index.manifests, files.label), ref, files.label);
  // Follow nested indexes (multi-platform images) a bounded number of times.
  for (let depth = 0; ; depth++) {
    if (depth > 4) throw new ImageFormatError(`${files.label}: index nesting too deep`);
    const blob = await readBlob(files, desc.digest);
    const doc = parseJson(blob, desc.digest, files.label);
    const mt = (doc.mediaType as string | undefined) ?? desc.mediaType;
    if (mt === MediaType.OciIndex || mt === MediaType.DockerList || (mt === undefined && Array.isArray(doc.manifests))) {
      desc = choose(descriptors(doc.manifests, files.label), undefined, files.label);
      continue;
    }
    const cfgDesc = descriptors([doc.config], files.label)[0];
    const configBuf = await readBlob(files, cfgDesc.digest);
    const { config, diffIds } = parseImageConfig(configBuf);
    const layerDescs = descriptors(doc.layers, files.label);
    if (layerDescs.length !== diffIds.length) {
      throw new ImageFormatError(`${files.label}: ${layerDescs.length} layers but ${diffIds.length} diff_ids in the config`);
    }
    const layers: LayerInput[] = [];
    for (let i = 0; i < layerDescs.length; i++) {
      const d = layerDescs[i];
      if (d.mediaType !== undefined && !LAYER_TYPES.has(d.mediaType)) {
        throw new ImageFormatError(`${files.label}: layer ${d.digest} has unsupported media type ${d.mediaType}`);
      }
      const path = blobPath(d.digest, files.label);
      if (!(await files.has(path))) throw new ImageFormatError(`${files.label}: layer blob ${d.digest} is missing`);
      layers.push({
        name: d.digest,
        digest: d.digest,
        diffId: diffIds[i],
        size: typeof d.size === 'number' ? d.size : await files.size(path),
        open: () => files.open(path),
      });
    }
    return { configDigest: cfgDesc.digest, config, layers };
  }
}
