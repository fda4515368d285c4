import { connect } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane, type StartedControlPlane, type EnrollResponse } from '../../src/controlplane/index.js';
import type { StartedNatsServer } from '../../src/natsserver/server.js';
import { enroll } from '../../src/enroll/index.js';
import { cleanup, startCpProcess, tempDir, wgKey, withNats } from './helpers.js';

let dirA: string;
let dirB: string;
let nats: StartedNatsServer;
let cpA: StartedControlPlane;
let cpB: Awaited<ReturnType<typeof startCpProcess>>;

beforeAll(async () => {
  dirA = await tempDir('clusterA');
  dirB = await tempDir('clusterB');
  nats = await withNats(dirA);
  cpA = await startControlPlane({ stateDir: dirA, natsUrl: nats.url, http: false });
  // The second control plane is a separate OS process on the same NATS.
  cpB = await startCpProcess(['--nats', nats.url, '--http', 'off', '--state-dir', dirB]);
});
afterAll(async () => {
  await cpB?.stop();
  await cpA?.stop();
  await nats?.stop();
  await cleanup(dirA, dirB);
});

describe('two control-plane processes on one NATS', () => {
  it('share one cluster identity', () => {
    expect(cpB.info.clusterId).toBe(cpA.service.info.clusterId);
  });

  it('serve 200 concurrent enrollments: 200 distinct addresses, none lost', async () => {
    const { token } = await cpA.service.createToken({ namespace: 'swarm', limit: 200, ttl: '10m' });
    const before = cpA.natsStats.requests;
    const conns = await Promise.all(Array.from({ length: 4 }, () => connect({ servers: nats.url })));
    try {
      const t0 = performance.now();
      const res = await Promise.allSettled(
        Array.from({ length: 200 }, (_, i) => enroll({ nc: conns[i % conns.length], token, name: `agent-${i}`, publicKey: wgKey(), timeoutMs: 60_000 })),
      );
      const ms = performance.now() - t0;
      const failed = res.filter((r) => r.status === 'rejected');
      expect(failed.map((r) => String((r as PromiseRejectedResult).reason))).toEqual([]);
      const ok = res.map((r) => (r as PromiseFulfilledResult<EnrollResponse>).value);
      expect(new Set(ok.map((r) => r.address.ipv4)).size).toBe(200);
      expect(new Set(ok.map((r) => r.address.ipv6)).size).toBe(200);
      const servedByA = cpA.natsStats.requests - before;
      console.log(`200 enrollments in ${ms.toFixed(0)} ms; control plane A served ${servedByA}, B served ${200 - servedByA}`);
      expect(servedByA).toBeGreaterThan(0);
      expect(servedByA).toBeLessThan(200);
      const agents = await cpA.service.listAgents('swarm');
      expect(agents).toHaveLength(200);
      expect(agents.every((a) => a.status === 'active')).toBe(true);
      expect(new Set(agents.map((a) => a.ipv4)).size).toBe(200);
      // The token is used up exactly.
      await expect(enroll({ nc: conns[0], token, name: 'one-more', publicKey: wgKey() })).rejects.toMatchObject({ code: 'ETOKEN_EXHAUSTED' });
    } finally {
      await Promise.all(conns.map((c) => c.close()));
    }
  });
});
