import * as fsp from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { makeTar, sha256 } from './helpers.js';

export interface ImageFixture {
  /** Uncompressed layer tars, bottom first. */
  layers: Buffer[];
  config: Record<string, unknown>;
  configBytes: Buffer;
  configDigest: string;
}

export function makeImage(layers: Buffer[], cfg: Record<string, unknown>): ImageFixture {
  const config = {
    architecture: 'amd64',
    os: 'linux',
    config: cfg,
    rootfs: { type: 'layers', diff_ids: layers.map((l) => sha256(l)) },
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  return { layers, config, configBytes, configDigest: sha256(configBytes) };
}

/** An OCI image layout directory, layers gzip'd or not, with a ref name annotation. */
export async function writeOciLayout(dir: string, img: ImageFixture, opts: { gzip?: boolean; refName?: string } = {}): Promise<void> {
  const blobs = join(dir, 'blobs', 'sha256');
  await fsp.mkdir(blobs, { recursive: true });
  const put = async (b: Buffer) => {
    const d = sha256(b);
    await fsp.writeFile(join(blobs, d.slice(7)), b);
    return { digest: d, size: b.length };
  };
  const layerDescs = [];
  for (const l of img.layers) {
    const raw = opts.gzip ? gzipSync(l) : l;
    layerDescs.push({ mediaType: `application/vnd.oci.image.layer.v1.tar${opts.gzip ? '+gzip' : ''}`, ...(await put(raw)) });
  }
  const cfg = await put(img.configBytes);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...cfg },
      layers: layerDescs,
    }),
  );
  const m = await put(manifest);
  await fsp.writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await fsp.writeFile(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...m,
          annotations: opts.refName ? { 'org.opencontainers.image.ref.name': opts.refName } : undefined,
        },
      ],
    }),
  );
}

/** A `docker save` tarball in the classic format: <id>/layer.tar, <config>.json, manifest.json last. */
export async function dockerSaveTar(img: ImageFixture, tag: string): Promise<Buffer> {
  const entries = [];
  const layerPaths: string[] = [];
  // Write layers in reverse order on purpose: readers must follow manifest.json, not archive order.
  for (let i = img.layers.length - 1; i >= 0; i--) {
    const id = sha256(`${i}`).slice(7);
    entries.push({ name: `${id}/`, type: 'directory' as const });
    entries.push({ name: `${id}/VERSION`, body: '1.0' });
    entries.push({ name: `${id}/layer.tar`, body: img.layers[i] });
    layerPaths[i] = `${id}/layer.tar`;
  }
  const cfgName = `${img.configDigest.slice(7)}.json`;
  entries.push({ name: cfgName, body: img.configBytes });
  entries.push({ name: 'manifest.json', body: JSON.stringify([{ Config: cfgName, RepoTags: [tag], Layers: layerPaths }]) });
  entries.push({ name: 'repositories', body: '{}' });
  return makeTar(entries);
}

/** A small agent image: 3 layers exercising whiteouts, and a config with entrypoint/env/workdir. */
export async function sampleImage(): Promise<ImageFixture> {
  const l0 = await makeTar([
    { name: 'bin/', type: 'directory', mode: 0o755 },
    { name: 'bin/tool', body: '#!/bin/sh\necho tool\n', mode: 0o755 },
    { name: 'etc/', type: 'directory' },
    { name: 'etc/old.conf', body: 'old' },
    { name: 'app/', type: 'directory' },
  ]);
  const l1 = await makeTar([
    { name: 'etc/.wh.old.conf' },
    { name: 'etc/agent.conf', body: 'mode=strict\n' },
    { name: 'bin/sh', type: 'symlink', linkname: 'tool' },
  ]);
  const l2 = await makeTar([{ name: 'app/entry.sh', body: '#!/bin/sh\nexec /bin/tool "$@"\n', mode: 0o755 }]);
  return makeImage([l0, l1, l2], {
    Env: ['PATH=/bin', 'AGENT_MODE=strict'],
    Entrypoint: ['/app/entry.sh'],
    Cmd: ['--serve'],
    WorkingDir: '/app',
    User: '1000:1000',
    ExposedPorts: { '8080/tcp': {} },
  });
}
