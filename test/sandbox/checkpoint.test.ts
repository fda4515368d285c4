/**
 * The pure and filesystem-local parts of `sandbox checkpoint`/`restore` (ops/checkpoint.ts, ops/restore.ts):
 * the checkpoint directory's rules, the meta's validation, respec() and the connected-TCP refusal's parse.
 * runsc itself is exercised in e2e/sandbox-ops/checkpoint.test.ts.
 */
import { describe, it, expect } from 'vitest';
import { mkdtemp, mkdir, readdir, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectionHeld, prepareCheckpointDir } from '../../src/sandbox/ops/checkpoint.js';
import { CHECKPOINT_FORMAT, parseMeta, readCheckpoint, respec } from '../../src/sandbox/ops/restore.js';
import { buildSpec } from '../../src/oci/spec.js';

const tmp = () => mkdtemp(join(tmpdir(), 'lt-ckpt-unit-'));

describe('prepareCheckpointDir', () => {
  it('creates a new directory 0700, and makes an empty existing one 0700', async () => {
    const base = await tmp();
    const a = await prepareCheckpointDir(join(base, 'new'));
    expect(a.created).toBe(true);
    expect((await stat(a.path)).mode & 0o777).toBe(0o700);
    await mkdir(join(base, 'empty'), { mode: 0o755 });
    const b = await prepareCheckpointDir(join(base, 'empty'));
    expect(b.created).toBe(false);
    expect((await stat(b.path)).mode & 0o777).toBe(0o700);
  });

  it('refuses a non-empty directory, a file, a symlink and a missing parent, changing nothing', async () => {
    const base = await tmp();
    await mkdir(join(base, 'full'));
    await writeFile(join(base, 'full', 'x'), 'x');
    await writeFile(join(base, 'file'), 'f');
    await mkdir(join(base, 'target'));
    await symlink(join(base, 'target'), join(base, 'link'));
    await expect(prepareCheckpointDir(join(base, 'full'))).rejects.toThrow(/is not empty; give a new or empty directory/);
    await expect(prepareCheckpointDir(join(base, 'file'))).rejects.toThrow(/exists and is not a directory/);
    await expect(prepareCheckpointDir(join(base, 'link'))).rejects.toThrow(/exists and is not a directory/);
    await expect(prepareCheckpointDir(join(base, 'no', 'dir'))).rejects.toThrow(/is not a directory; create it first/);
    expect((await readdir(base)).sort()).toEqual(['file', 'full', 'link', 'target']);
    expect(await readdir(join(base, 'full'))).toEqual(['x']);
  });
});

describe('parseMeta / readCheckpoint', () => {
  const good = { format: CHECKPOINT_FORMAT, name: 'web', sandboxId: 'lt-00000001', createdAt: '2026-01-01T00:00:00Z', network: 'enrolled', agent: 'web', stateDir: '/var/lib/lattice' };

  it('accepts what checkpoint writes', () => {
    expect(parseMeta(JSON.stringify(good), '/d')).toEqual(good);
  });

  it.each([
    ['not JSON', '{', /is not JSON/],
    ['another format', JSON.stringify({ ...good, format: 'x/9' }), /holds checkpoint format "x\/9"/],
    ['no name', JSON.stringify({ ...good, name: '' }), /lacks name/],
    ['an unknown network', JSON.stringify({ ...good, network: 'host' }), /names network "host"/],
    ['enrolled without agent', JSON.stringify({ ...good, agent: undefined }), /without its agent name/],
  ])('refuses %s with ESANDBOX_CHECKPOINT', (_what, raw, msg) => {
    expect(() => parseMeta(raw, '/d')).toThrow(msg);
    try {
      parseMeta(raw, '/d');
    } catch (err) {
      expect((err as { code: string }).code).toBe('ESANDBOX_CHECKPOINT');
    }
  });

  it('says a directory without the meta is not a checkpoint', async () => {
    const d = await tmp();
    await expect(readCheckpoint(d)).rejects.toThrow(/is not a lattice checkpoint \(no lattice-checkpoint\.json\)/);
    await expect(readCheckpoint(join(d, 'missing'))).rejects.toThrow(/is not a directory/);
  });
});

describe('respec', () => {
  const spec = buildSpec({
    args: ['sh'],
    hostname: 'web',
    rootfs: '/images/busybox',
    netnsPath: '/var/run/netns/lattice-lt-old',
    mounts: [{ destination: '/etc/resolv.conf', type: 'bind', source: '/state/sandboxes/lt-old/resolv.conf', options: ['ro', 'bind'] }],
    annotations: { 'dev.lattice.sandbox.id': 'lt-old', 'dev.lattice.sandbox.name': 'web' },
    cgroupsPath: '/lattice/lt-old',
  });

  it('re-points netns, mount sources, cgroup and annotations; keeps process, root and hostname', () => {
    const out = respec(spec, {
      id: 'lt-new',
      name: 'web2',
      netnsPath: '/var/run/netns/lattice-lt-new',
      mounts: [{ destination: '/etc/resolv.conf', type: 'bind', source: '/state/sandboxes/lt-new/resolv.conf', options: ['ro', 'bind'] }],
      cgroupsPath: '/lattice/lt-new',
    });
    expect(out.linux.namespaces.find((n) => n.type === 'network')).toEqual({ type: 'network', path: '/var/run/netns/lattice-lt-new' });
    expect(out.mounts.filter((m) => m.destination === '/etc/resolv.conf')).toEqual([expect.objectContaining({ source: '/state/sandboxes/lt-new/resolv.conf' })]);
    expect(out.mounts).toHaveLength(spec.mounts.length);
    expect(out.linux.cgroupsPath).toBe('/lattice/lt-new');
    expect(out.annotations).toEqual({ 'dev.lattice.sandbox.id': 'lt-new', 'dev.lattice.sandbox.name': 'web2' });
    expect(out.process).toEqual(spec.process);
    expect(out.root).toEqual(spec.root);
    expect(out.hostname).toBe('web');
    // The input is not changed.
    expect(spec.annotations?.['dev.lattice.sandbox.id']).toBe('lt-old');
  });
});

describe('connectionHeld', () => {
  it("reads the connection out of runsc's refusal, and nothing out of other failures", () => {
    const msg =
      'checkpoint failed: checkpointing container "lt-79521200": encoding error: save rejected due to unsupported networking state: endpoint cannot be saved in connected state: local 10.77.0.1:8080, remote 10.77.0.2:20998:';
    expect(connectionHeld(new Error(msg))).toBe('local 10.77.0.1:8080, remote 10.77.0.2:20998');
    expect(connectionHeld(new Error('checkpoint failed: no such container'))).toBeUndefined();
  });
});
