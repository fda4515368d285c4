import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { resolveRootfs } from '../../src/image/rootfs.js';
import { makeImage } from './fixtures.js';
import { makeTar, sha256 } from './helpers.js';

// zstd layers (application/vnd.oci.image.layer.v1.tar+zstd), compressed by the reference `zstd`
// tool at several levels, unpack and verify like gzip ones; a corrupt stream is refused.

let tmp: string;
beforeEach(async () => {
  tmp = await fsp.mkdtemp(join(tmpdir(), 'ltimage-zstd-'));
});
afterEach(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

async function zstd(data: Buffer, args: string[]): Promise<Buffer> {
  const r = await execa('zstd', ['-c', '-q', ...args], { input: data, encoding: 'buffer' });
  return Buffer.from(r.stdout);
}

/** An OCI layout whose layers are the given blobs, with the given media type. */
async function layout(tars: Buffer[], blobs: Buffer[], mediaType: string): Promise<string> {
  const img = makeImage(tars, { Cmd: ['/bin/tool'] });
  const dir = join(tmp, 'layout');
  const b = join(dir, 'blobs', 'sha256');
  await fsp.mkdir(b, { recursive: true });
  const put = async (x: Buffer) => {
    await fsp.writeFile(join(b, sha256(x).slice(7)), x);
    return { digest: sha256(x), size: x.length };
  };
  const layers = [];
  for (const x of blobs) layers.push({ mediaType, ...(await put(x)) });
  const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...(await put(img.configBytes)) }, layers }));
  const m = await put(manifest);
  await fsp.writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  await fsp.writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...m }] }));
  return dir;
}

describe('zstd layers', () => {
  it('unpack at levels 1, 19 and in long mode, verified against their diff_ids', async () => {
    const big = Buffer.alloc(3 << 20);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7919) % 251;
    const l0 = await makeTar([{ name: 'bin/', type: 'directory' }, { name: 'bin/tool', body: '#!/bin/sh\n', mode: 0o755 }]);
    const l1 = await makeTar([{ name: 'data/big.bin', body: big }]);
    const l2 = await makeTar([{ name: 'data/.wh.big.bin' }, { name: 'data/small', body: 'small\n' }]);
    const blobs = [await zstd(l0, ['-1']), await zstd(l1, ['-19']), await zstd(l2, ['--long=24', '-3'])];
    const dir = await layout([l0, l1, l2], blobs, 'application/vnd.oci.image.layer.v1.tar+zstd');
    const r = await resolveRootfs({ kind: 'oci-layout', ref: dir }, { stateDir: join(tmp, 'state') });
    expect(await fsp.readFile(join(r.rootfsDir, 'bin/tool'), 'utf8')).toBe('#!/bin/sh\n');
    expect(await fsp.readdir(join(r.rootfsDir, 'data'))).toEqual(['small']);
  });

  it('a layer of several concatenated frames unpacks whole', async () => {
    const a = await makeTar([{ name: 'a', body: 'A'.repeat(100_000) }]);
    // Split the tar in two and compress each half: a valid zstd stream of two frames.
    const blob = Buffer.concat([await zstd(a.subarray(0, 50_000), ['-5']), await zstd(a.subarray(50_000), ['-5'])]);
    const dir = await layout([a], [blob], 'application/vnd.oci.image.layer.v1.tar+zstd');
    const r = await resolveRootfs({ kind: 'oci-layout', ref: dir }, { stateDir: join(tmp, 'state') });
    expect((await fsp.stat(join(r.rootfsDir, 'a'))).size).toBe(100_000);
  });

  it('a corrupt zstd stream is refused and nothing is kept', async () => {
    const a = await makeTar([{ name: 'a', body: 'x'.repeat(10_000) }]);
    const blob = await zstd(a, ['-3']);
    for (let i = 20; i < blob.length - 8; i += 7) blob[i] ^= 0x5a;
    const dir = await layout([a], [blob], 'application/vnd.oci.image.layer.v1.tar+zstd');
    await expect(resolveRootfs({ kind: 'oci-layout', ref: dir }, { stateDir: join(tmp, 'state') })).rejects.toMatchObject({ code: 'EIMAGE_REJECTED' });
    const left = (await fsp.readdir(join(tmp, 'state', 'images'), { recursive: true })).filter((p) => /(^|\/)rootfs/.test(p));
    expect(left).toEqual([]); // no rootfs, no partial rootfs
  });
});
