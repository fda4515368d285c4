import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { resolveRootfs } from '../../src/image/rootfs.js';
import { makeImage } from './fixtures.js';
import { makeTar, sha256, type EntrySpec } from './helpers.js';

// Legacy `docker save` (docker 20.10, Debian 12) stores a layer that appears twice in an image once,
// and the second copy as a symlink entry `<id2>/layer.tar -> ../<id1>/layer.tar`. The link is followed
// inside the archive only, and the layer it reaches must still match the diff_id.

let tmp: string;
beforeEach(async () => {
  tmp = await fsp.mkdtemp(join(tmpdir(), 'ltimage-archive-'));
});
afterEach(async () => {
  await fsp.rm(tmp, { recursive: true, force: true });
});

const id = (i: number) => sha256(`layer-${i}`).slice(7);

/** layers[i] is a tar, or { link } to store layer i as a symlink entry with that target. */
async function legacySave(diffLayers: Buffer[], stored: Array<Buffer | { link: string }>): Promise<string> {
  const img = makeImage(diffLayers, { Cmd: ['/a'] });
  const entries: EntrySpec[] = [];
  stored.forEach((s, i) => {
    entries.push({ name: `${id(i)}/`, type: 'directory' });
    entries.push({ name: `${id(i)}/VERSION`, body: '1.0' });
    if (Buffer.isBuffer(s)) entries.push({ name: `${id(i)}/layer.tar`, body: s });
    else entries.push({ name: `${id(i)}/layer.tar`, type: 'symlink', linkname: s.link });
  });
  const cfg = `${img.configDigest.slice(7)}.json`;
  entries.push({ name: cfg, body: img.configBytes });
  entries.push({ name: 'manifest.json', body: JSON.stringify([{ Config: cfg, RepoTags: ['rep:1'], Layers: stored.map((_, i) => `${id(i)}/layer.tar`) }]) });
  const path = join(tmp, `save-${Math.random().toString(36).slice(2)}.tar`);
  await fsp.writeFile(path, await makeTar(entries));
  return path;
}

describe('legacy docker save with a repeated layer', () => {
  it('the symlinked copy is followed inside the archive and the rootfs is complete', async () => {
    const a = await makeTar([{ name: 'a', body: 'first\n' }]);
    const b = await makeTar([{ name: 'a', body: 'second\n' }, { name: 'b', body: 'b\n' }]);
    // COPY a /a; COPY ... /a /b; COPY a /a again: the third layer is byte-identical to the first.
    const path = await legacySave([a, b, a], [a, b, { link: `../${id(0)}/layer.tar` }]);
    const r = await resolveRootfs({ kind: 'docker-archive', ref: path }, { stateDir: join(tmp, 'state') });
    expect(await fsp.readFile(join(r.rootfsDir, 'a'), 'utf8')).toBe('first\n');
    expect(await fsp.readFile(join(r.rootfsDir, 'b'), 'utf8')).toBe('b\n');
  });

  it('a chain of two links is followed', async () => {
    const a = await makeTar([{ name: 'a', body: 'x' }]);
    const path = await legacySave([a, a, a], [a, { link: `../${id(0)}/layer.tar` }, { link: `../${id(1)}/layer.tar` }]);
    const r = await resolveRootfs({ kind: 'docker-archive', ref: path }, { stateDir: join(tmp, 'state') });
    expect(await fsp.readFile(join(r.rootfsDir, 'a'), 'utf8')).toBe('x');
  });

  it('a link to a different layer than the diff_id names is rejected by the diff_id check', async () => {
    const a = await makeTar([{ name: 'a', body: 'first\n' }]);
    const b = await makeTar([{ name: 'b', body: 'b\n' }]);
    const path = await legacySave([a, b, a], [a, b, { link: `../${id(1)}/layer.tar` }]);
    await expect(resolveRootfs({ kind: 'docker-archive', ref: path }, { stateDir: join(tmp, 'state') })).rejects.toMatchObject({
      code: 'EIMAGE_REJECTED',
      message: expect.stringContaining('does not match diff_id') as unknown,
    });
  });

  for (const [what, link, msg] of [
    ['leaves the archive', '../../etc/passwd', 'leaves the archive'],
    ['is absolute', '/etc/passwd', 'symlink to the absolute path /etc/passwd'],
    ['points at nothing', `../${'0'.repeat(64)}/layer.tar`, 'is missing'],
    ['loops', 'layer.tar', 'symlinks in a row'],
  ] as const) {
    it(`a layer link that ${what} is refused and nothing outside is read`, async () => {
      const a = await makeTar([{ name: 'a', body: 'x' }]);
      const path = await legacySave([a, a], [a, { link }]);
      const err = await resolveRootfs({ kind: 'docker-archive', ref: path }, { stateDir: join(tmp, 'state') }).then(
        () => undefined,
        (e: unknown) => e as { code: string; message: string },
      );
      expect(err?.code).toBe('EIMAGE_FORMAT');
      expect(err?.message).toContain(msg);
    });
  }
});
