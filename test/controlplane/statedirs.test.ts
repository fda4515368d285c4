import { chown, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { assertStateDirs } from '../../src/controlplane/secrets.js';

let dir: string | undefined;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('assertStateDirs', () => {
  it('accepts a private state dir whose subdirectories exist or not', async () => {
    dir = await mkdtemp(join(tmpdir(), 'ltsd-'));
    await mkdir(join(dir, 'credentials'), { mode: 0o700 });
    await expect(assertStateDirs(dir)).resolves.toBeUndefined();
  });

  it('refuses an outbox/ that others may write', async () => {
    dir = await mkdtemp(join(tmpdir(), 'ltsd-'));
    await mkdir(join(dir, 'outbox'), { mode: 0o777 });
    const { chmod } = await import('node:fs/promises');
    await chmod(join(dir, 'outbox'), 0o777);
    await expect(assertStateDirs(dir)).rejects.toMatchObject({ code: 'ESTATE_PERM', message: expect.stringContaining('outbox') });
  });

  it('refuses an outbox/ owned by another user (tests run as root, like lattice)', async () => {
    dir = await mkdtemp(join(tmpdir(), 'ltsd-'));
    await mkdir(join(dir, 'outbox'), { mode: 0o700 });
    await chown(join(dir, 'outbox'), 65534, 65534);
    await expect(assertStateDirs(dir)).rejects.toMatchObject({ code: 'ESTATE_PERM', message: expect.stringContaining('uid 65534') });
  });
});
