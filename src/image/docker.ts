import { createWriteStream } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import Docker from 'dockerode';
import { PrerequisiteError } from '../errors.js';
import { ImageNotFoundError } from './errors.js';
import type { ImageProgress } from './progress.js';
import { ImagePhase } from './progress.js';

/** The part of dockerode we use: small enough to fake, real in e2e. */
export interface DockerImageApi {
  getImage(ref: string): {
    inspect(): Promise<{ Id: string; Size?: number }>;
    get(): Promise<NodeJS.ReadableStream>;
  };
}

export function defaultDocker(): DockerImageApi {
  return new Docker() as unknown as DockerImageApi; // DOCKER_HOST or /var/run/docker.sock
}

function dockerError(ref: string, err: unknown): Error {
  const e = err as { statusCode?: number; code?: string; message?: string };
  if (e.statusCode === 404) return new ImageNotFoundError(`docker image ${ref} not found in the local engine; docker pull or docker load it first`, { cause: err });
  if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED' || e.code === 'EACCES') {
    return new PrerequisiteError(`cannot reach dockerd (${e.code}); start docker or use --rootfs / an image archive`, { cause: err });
  }
  return err instanceof Error ? err : new Error(String(err));
}

/** The engine's image ID ("sha256:..."): the config digest with the classic store, the manifest digest with containerd's. */
export async function dockerImageId(docker: DockerImageApi, ref: string): Promise<{ id: string; size?: number }> {
  try {
    const info = await docker.getImage(ref).inspect();
    return { id: info.Id, size: info.Size };
  } catch (err) {
    throw dockerError(ref, err);
  }
}

/**
 * Export an image as a `docker save` tarball into `dir` (a scratch dir on the cache's filesystem).
 * The export stream has no useful order (manifest.json may come last), so it is spooled to disk and
 * then read by offset like any image archive.
 */
export async function exportDockerImage(
  docker: DockerImageApi,
  ref: string,
  dir: string,
  onProgress?: (p: ImageProgress) => void,
  sizeHint?: number,
): Promise<string> {
  let stream: NodeJS.ReadableStream;
  try {
    stream = await docker.getImage(ref).get();
  } catch (err) {
    throw dockerError(ref, err);
  }
  const out = join(dir, 'image.tar');
  let bytes = 0;
  let last = 0;
  onProgress?.({ phase: ImagePhase.Export, bytes: 0, total: sizeHint, name: ref, done: false });
  await pipeline(
    stream as unknown as AsyncIterable<Buffer>,
    async function* (src: AsyncIterable<Buffer>) {
      for await (const c of src) {
        bytes += c.length;
        if (bytes - last >= 1 << 20) {
          last = bytes;
          onProgress?.({ phase: ImagePhase.Export, bytes, total: sizeHint, name: ref, done: false });
        }
        yield c;
      }
    },
    createWriteStream(out, { mode: 0o600 }),
  );
  onProgress?.({ phase: ImagePhase.Export, bytes, total: sizeHint, name: ref, done: true });
  await fsp.chmod(out, 0o600);
  return out;
}
