import { connect, type NatsConnection } from 'nats';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AUDIT_STREAM, ensureAuditStream } from '../../src/audit/stream.js';
import { BUCKETS, startControlPlane } from '../../src/controlplane/index.js';
import { requireBinary } from '../support/env.js';
import { startNatsCluster, type NatsCluster } from '../support/nats-cluster.js';
import { cleanup, cli, tempDir, withNats } from './helpers.js';

/**
 * Replication as configuration (issue #20 item 1): the control plane creates every KV bucket and the audit
 * stream with 3 replicas on a cluster (detected), 1 on a single server, and raises existing ones (logged).
 */
let dir: string;
let cluster: NatsCluster;

beforeAll(async () => {
  await requireBinary('nats-server');
  dir = await tempDir('replication');
  cluster = await startNatsCluster(dir);
  await cluster.waitJetStream();
});
afterAll(async () => {
  await cluster?.stop();
  if (dir) await cleanup(dir);
});

/** `lattice control-plane start --json` as a child; resolves with its JSON line and its stderr so far. */
async function startCli(args: string[]): Promise<{ info?: Record<string, unknown>; code?: number; stderr: () => string; stop(): Promise<void> }> {
  const proc = cli(['control-plane', 'start', '--json', '--http', 'off', ...args], { LATTICE_LOG_LEVEL: 'info', LATTICE_LOG_FORMAT: 'json' });
  let stderr = '';
  proc.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const rl = createInterface({ input: proc.stdout! });
  const first = await new Promise<{ line?: string; code?: number }>((resolve) => {
    rl.once('line', (line) => resolve({ line }));
    proc.once('exit', (code) => resolve({ code: code ?? -1 }));
  });
  const stop = async () => {
    if (proc.exitCode !== null) return;
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    await exited;
  };
  return { info: first.line ? (JSON.parse(first.line) as Record<string, unknown>) : undefined, code: first.code, stderr: () => stderr, stop };
}

async function replicasOf(nc: NatsConnection, stream: string): Promise<number> {
  const jsm = await nc.jetstreamManager();
  return (await jsm.streams.info(stream)).config.num_replicas;
}

describe('replication on a 3-node nats-server cluster', () => {
  it('raises an existing 1-replica bucket and audit stream to 3, logged, and creates the rest with 3', async () => {
    const nc = await connect({ servers: cluster.urls });
    try {
      // State from before: created with one replica (what every earlier version did).
      await nc.jetstream().views.kv(BUCKETS.agents, { history: 1, replicas: 1 });
      await ensureAuditStream(await nc.jetstreamManager());
      expect(await replicasOf(nc, `KV_${BUCKETS.agents}`)).toBe(1);
      expect(await replicasOf(nc, AUDIT_STREAM)).toBe(1);

      const cp = await startCli(['--nats', cluster.urls[0], '--state-dir', `${dir}/cp1`]);
      try {
        expect(cp.info, cp.stderr()).toBeDefined();
        expect(cp.info!.replicas).toBe(3);
        for (const b of Object.values(BUCKETS)) expect([b, await replicasOf(nc, `KV_${b}`)]).toEqual([b, 3]);
        expect(await replicasOf(nc, AUDIT_STREAM)).toBe(3);
        const migrations = cp
          .stderr()
          .split('\n')
          .filter((l) => l.includes('replication: raising'))
          .map((l) => JSON.parse(l) as { stream: string; from: number; to: number });
        expect(migrations.map((m) => [m.stream, m.from, m.to]).sort()).toEqual([
          [`KV_${BUCKETS.agents}`, 1, 3],
          [AUDIT_STREAM, 1, 3],
        ].sort());
      } finally {
        await cp.stop();
      }
    } finally {
      await nc.close();
    }
  });

  it('--replicas more than the cluster has: exits non-zero with a message that says what to do', async () => {
    const nc = await connect({ servers: cluster.urls });
    try {
      const jsm = await nc.jetstreamManager();
      const before = (await jsm.streams.names().next()).length;
      const cp = await startCli(['--nats', cluster.urls[1], '--replicas', '5', '--state-dir', `${dir}/cp2`]);
      await cp.stop();
      expect(cp.info).toBeUndefined();
      expect(cp.code).not.toBe(0);
      expect(cp.stderr()).toMatch(/cannot place 5 replicas of \S+.*--replicas/);
      // The existing state kept its replicas.
      expect(await replicasOf(nc, `KV_${BUCKETS.agents}`)).toBe(3);
      expect((await jsm.streams.names().next()).length).toBe(before);
    } finally {
      await nc.close();
    }
  });

  it('--replicas 0 is a usage error', async () => {
    const cp = await startCli(['--nats', cluster.urls[0], '--replicas', '0', '--state-dir', `${dir}/cp3`]);
    expect(cp.code).toBe(2);
    expect(cp.stderr()).toMatch(/--replicas 0 is not a replica count/);
  });
});

describe('replication on a single nats-server', () => {
  it('defaults to 1 replica', async () => {
    const d = await tempDir('replication-single');
    const nats = await withNats(d);
    try {
      const cp = await startControlPlane({ stateDir: d, natsUrl: nats.url, http: false });
      try {
        expect(cp.replicas).toBe(1);
        expect(await replicasOf(cp.nc, `KV_${BUCKETS.tokens}`)).toBe(1);
      } finally {
        await cp.stop();
      }
    } finally {
      await nats.stop();
      await cleanup(d);
    }
  });
});
