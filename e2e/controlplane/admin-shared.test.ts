import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API_BASE, startControlPlane, type StartedControlPlane } from '../../src/controlplane/index.js';
import type { StartedNatsServer } from '../../src/natsserver/server.js';
import { cleanup, tempDir, withNats } from './helpers.js';

/**
 * Issue #20: two control-plane instances of one cluster (one NATS, two state dirs, as behind one load
 * balancer) accept the same admin token, and each one's admin-token file holds it.
 */
let dirA: string;
let dirB: string;
let nats: StartedNatsServer;
let cpA: StartedControlPlane;
let cpB: StartedControlPlane;

beforeAll(async () => {
  dirA = await tempDir('adminA');
  dirB = await tempDir('adminB');
  nats = await withNats(dirA);
  cpA = await startControlPlane({ stateDir: dirA, natsUrl: nats.url, http: { host: '127.0.0.1', port: 0 } });
  cpB = await startControlPlane({ stateDir: dirB, natsUrl: nats.url, http: { host: '127.0.0.1', port: 0 } });
});
afterAll(async () => {
  await cpB?.stop();
  await cpA?.stop();
  await nats?.stop();
  await cleanup(dirA, dirB);
});

const get = (base: string, token: string) => fetch(`${base}${API_BASE}/agents`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.status);
const fileToken = async (dir: string) => (await readFile(join(dir, 'control-plane', 'admin-token'), 'utf8')).trim();

describe('admin token shared by a cluster', () => {
  it('the token of either instance works on both; both state dirs hold the same one', async () => {
    expect(cpB.adminToken).toBe(cpA.adminToken);
    const a = await fileToken(dirA);
    const b = await fileToken(dirB);
    expect(b).toBe(a);
    for (const base of [cpA.httpUrl!, cpB.httpUrl!]) {
      expect(await get(base, a)).toBe(200);
      expect(await get(base, 'x'.repeat(43))).toBe(401);
    }
  });

  it('a restarted instance keeps the cluster token, whatever its file held', async () => {
    await cpB.stop();
    cpB = await startControlPlane({ stateDir: dirB, natsUrl: nats.url, http: { host: '127.0.0.1', port: 0 } });
    expect(cpB.adminToken).toBe(cpA.adminToken);
    expect(await get(cpB.httpUrl!, await fileToken(dirA))).toBe(200);
  });
});
