import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ensureClusterAdminToken } from '../../src/controlplane/admin-token.js';
import { encodeJson, getJson, MemoryKvStore } from '../../src/controlplane/kv.js';

describe('ensureClusterAdminToken', () => {
  it('instances racing with different local tokens all end with one, and their files hold it', async () => {
    const config = await new MemoryKvStore().bucket('lattice_config');
    await config.create('cluster', encodeJson({ clusterId: 'c1', jwtSecret: 's' }));
    const dirs = await Promise.all([0, 1, 2].map(() => mkdtemp(join(tmpdir(), 'ltcp-admintok-'))));
    try {
      const got = await Promise.all(dirs.map((d, i) => ensureClusterAdminToken(config, d, `local-token-${i}-`.padEnd(43, 'x'))));
      expect(new Set(got).size).toBe(1);
      const rec = await getJson<{ adminToken: string; clusterId: string; jwtSecret: string }>(config, 'cluster');
      expect(rec!.value).toMatchObject({ clusterId: 'c1', jwtSecret: 's', adminToken: got[0] });
      for (const [i, d] of dirs.entries()) {
        const file = join(d, 'admin-token');
        if (got[0] === `local-token-${i}-`.padEnd(43, 'x')) continue; // the contributor keeps its own file
        expect((await readFile(file, 'utf8')).trim()).toBe(got[0]);
      }
    } finally {
      for (const d of dirs) await rm(d, { recursive: true, force: true });
    }
  });
});
