import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type NatsConnection, connect } from 'nats';
import { Outbox } from '../../src/audit/outbox.js';
import { OutboxPublisher } from '../../src/audit/publisher.js';
import { readAll } from '../../src/audit/readback.js';
import { AUDIT_STREAM, ensureAuditStream } from '../../src/audit/stream.js';
import { DEFAULT_IPAM, startControlPlane, type StartedControlPlane } from '../../src/controlplane/index.js';
import { CpErrorCode } from '../../src/controlplane/types.js';
import { DirectoryWatcher, connectControlPlane, controlPlaneEndpoint, enroll, fetchDirectory, loadCredentials, rememberServers, saveCredentials, type Credentials, type EnrollResponse } from '../../src/enroll/index.js';
import { ControlPlaneUnreachableError } from '../../src/enroll/client.js';
import { startNatsCluster, type NatsCluster } from '../support/nats-cluster.js';
import { busyboxRootfs, lattice, requireBinary, requireRoot, waitFor } from '../support/env.js';
import { cleanup, tempDir, wgKeyPair } from './helpers.js';

/**
 * Failover on a 3-node nats-server cluster (loopback ports), issue #20: every node is SIGKILLed once while
 * enrollments run and audit events go through a launcher's outbox; afterwards every acknowledged enrollment
 * and every audit event is there exactly once. While each node stays down: a control plane starts, `agent
 * revoke` (the service call its CLI/HTTP route makes) and a directory watcher succeed, and a launcher whose
 * stored first URL is the dead node connects through another and fetches its directory. The same through
 * the real CLI and runsc: `lattice sandbox start` enrolls while n0 is down, and the same state dir, whose
 * first stored URL is n1, starts again while n1 is down; both runs' audit events reach the stream once.
 * No timings here: bench/failover.ts measures them.
 *
 * "Succeed while down" allows the answer the control plane gives during a stream leader election (EBUSY,
 * EKV_TIMEOUT: "retry"): an operation is retried on those only, and must succeed before the node comes back.
 */

const ENROLLMENTS = 200;
const EVENTS = 50_000;
const KILLS = 3;
const log = pino({ level: 'silent' });
/** Every control-plane instance of the test gets the same IPAM (the probe instances serve enrollments too). */
const ipam = { ...DEFAULT_IPAM, v4Pool: '10.64.0.0/10', v4SubnetPrefix: 20 };
const t0 = Date.now();
/** Progress on stderr, so a run that stalls shows where. */
const step = (what: string) => process.stderr.write(`failover e2e +${((Date.now() - t0) / 1000).toFixed(1)} s: ${what}\n`);

let dir: string;
let cluster: NatsCluster;
let cp: StartedControlPlane;
let nc: NatsConnection;
let outbox: Outbox;
let publisher: OutboxPublisher;
let rootfs: string;

beforeAll(async () => {
  requireRoot();
  for (const bin of ['nats-server', 'runsc']) await requireBinary(bin);
  dir = await tempDir('failover');
  rootfs = await busyboxRootfs(dir);
  cluster = await startNatsCluster(dir);
  await cluster.waitJetStream();
  cp = await startControlPlane({ stateDir: join(dir, 'cp'), natsUrl: cluster.urls.join(','), http: false, ipam });
  nc = await connect({ servers: cluster.urls, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
  await ensureAuditStream(await nc.jetstreamManager(), { replicas: cp.replicas });
  outbox = await Outbox.open({ dir: join(dir, 'outbox'), launcherId: 'ltfo-launcher', logger: log });
  publisher = new OutboxPublisher({ outbox, servers: cluster.urls, logger: log, ensureStream: false, publishTimeoutMs: 2000, backoff: { initialMs: 100, maxMs: 1000 } });
  publisher.start();
}, 120_000);

afterAll(async () => {
  // A node that never came back can keep a drain waiting: bounded.
  const bounded = (p: Promise<unknown> | undefined) => Promise.race([p?.catch(() => undefined), new Promise((r) => setTimeout(r, 10_000))]);
  await bounded(publisher?.stop());
  await bounded(outbox?.close());
  await bounded(nc?.close());
  await bounded(cp?.stop());
  await cluster?.stop();
  if (dir) await cleanup(dir);
}, 60_000);

/** The control plane's "retry shortly" answers while a stream elects a leader, or a reply lost with a dead node. */
function isRetryable(err: unknown): boolean {
  if (err instanceof ControlPlaneUnreachableError) return true;
  const code = (err as { code?: string }).code;
  return code === CpErrorCode.Busy || code === 'EKV_TIMEOUT' || code === 'TIMEOUT' || code === '503';
}

/**
 * `lattice sandbox start --name cli` of one state dir running `echo started-<run>` in runsc; repeated while it
 * fails with a "retry shortly" answer of the cluster (at most 5 runs), each repeat printed. Returns the stderr
 * of every run, in order, and how many runs it took (a run that enrolled and then failed, e.g. on a watch the
 * cluster did not answer, keeps its identity: the next run reuses it).
 */
async function cliStart(stateDir: string, run: string, args: string[]): Promise<{ stderr: string; runs: number }> {
  let stderr = '';
  for (let attempt = 1; ; attempt++) {
    const r = await lattice(stateDir, ['sandbox', 'start', '--name', 'cli', '--rootfs', rootfs, ...args, '--', 'echo', `started-${run}`], { env: { LATTICE_LOG_LEVEL: 'warn' } });
    stderr += String(r.stderr);
    if (r.exitCode === 0) {
      expect(String(r.stdout)).toContain(`started-${run}`);
      return { stderr, runs: attempt };
    }
    const retryable = /EBUSY|EKV_TIMEOUT|ECP_UNREACHABLE|retry/i.test(String(r.stderr));
    step(`sandbox start (${run}) attempt ${attempt} exited ${r.exitCode}${retryable ? ', retrying' : ''}: ${String(r.stderr).trim().split('\n').slice(-3).join(' | ')}`);
    if (!retryable || attempt >= 5) throw new Error(`sandbox start (${run}) failed (exit ${r.exitCode}): ${String(r.stderr)}`);
  }
}

/** Run `fn` until it succeeds, retrying only the answers of isRetryable (at most `attempts` times). */
async function untilDone<T>(what: string, fn: () => Promise<T>, attempts = 40): Promise<T> {
  let last: unknown;
  for (let i = 0; i < attempts; i++) {
    try {
      return await fn();
    } catch (err) {
      if (!isRetryable(err)) throw err;
      last = err;
    }
  }
  throw new Error(`${what}: still failing after ${attempts} attempts: ${(last as Error).message}`, { cause: last });
}

describe('control plane on a 3-node NATS cluster, each node killed once', () => {
  it('loses no acknowledged enrollment or audit event, and works while a node is down', async () => {
    const { token } = await cp.service.createToken({ namespace: 'fo', limit: 10_000, ttl: '2h' });
    const { token: victims } = await cp.service.createToken({ namespace: 'rv', limit: 100, ttl: '2h' });
    const { token: cliToken } = await cp.service.createToken({ namespace: 'cli', limit: 1, ttl: '2h' });
    const cliState = join(dir, 'cli-state');

    // A launcher with stored credentials: the first URL it holds is the node killed first.
    const roamerKeys = wgKeyPair();
    const roamer = await enroll({ nc, token, name: 'roamer', ...roamerKeys });
    const stored: Credentials = {
      version: 1,
      name: 'roamer',
      namespace: 'fo',
      agentId: roamer.agentId,
      ...roamerKeys,
      address: roamer.address,
      jwt: roamer.jwt,
      jwtExpiresAt: 0,
      allowedTools: [],
      allowedNamespaces: [],
      modes: { sandbox: 'gvisor', enforcement: 'enforce' },
      controlPlane: { url: cluster.urls[0], clusterId: 'c', issuer: 'lattice:c' },
      enrolledAt: 0,
    };
    const launcherDir = join(dir, 'launcher');
    await saveCredentials(launcherDir, stored);
    {
      const lnc = await connectControlPlane(controlPlaneEndpoint(stored), { name: 'roamer' });
      await waitFor(() => (lnc.info?.connect_urls ?? []).length >= KILLS, 30_000, 'the cluster to announce every node');
      await rememberServers(launcherDir, stored, lnc, []);
      await lnc.close();
    }
    // Every node, in whatever order the cluster announced them.
    expect([...(await loadCredentials(launcherDir, 'roamer'))!.controlPlane.urls!].sort()).toEqual([...cluster.urls].sort());

    // Agents to revoke while a node is down, one per kill.
    for (let i = 0; i < KILLS; i++) await enroll({ nc, token: victims, name: `victim${i}`, ...wgKeyPair() });

    // Enrollment as a launcher does it: repeated until acknowledged (a repeat of one that got through answers
    // ECHALLENGE, which the private key answers, so it is acknowledged once).
    const acknowledged = new Map<string, EnrollResponse>();
    const enrollOne = async (name: string) => {
      const keys = wgKeyPair();
      const r = await untilDone(`enroll ${name}`, () => enroll({ nc, token, name, ...keys, timeoutMs: 15_000 }));
      acknowledged.set(name, r);
    };
    const enrollBatch = async (from: number, to: number) => {
      let next = from;
      const worker = async () => {
        while (next < to) await enrollOne(`a${next++}`);
      };
      await Promise.all([worker(), worker(), worker()]);
    };

    // Audit events through the launcher's outbox, appended a quarter before each kill and the rest after:
    // the publisher is still working through them while the node dies.
    const ids = new Set<string>();
    let appended = 0;
    const appendEvents = async (n: number) => {
      const until = Math.min(EVENTS, appended + n);
      const pending: Promise<unknown>[] = [];
      for (; appended < until; appended++) {
        const seq = appended;
        pending.push(
          outbox
            .append({
              type: 'flow.opened', agentId: 'ltfo-agent', namespace: 'ltfo', flowId: `f${seq}`, proto: 'tcp',
              srcIp: '10.64.0.2', srcPort: 1024 + (seq % 60_000), dstIp: '10.64.0.1', dstPort: 443, direction: 'egress', verdict: 'allowed',
            })
            .then((ev) => ids.add(ev.id)),
        );
        if (pending.length >= 512) await Promise.all(pending.splice(0));
      }
      await Promise.all(pending);
    };

    const perKill = Math.floor(ENROLLMENTS / (KILLS + 1));
    for (let i = 0; i < KILLS; i++) {
      await appendEvents(EVENTS / (KILLS + 1));
      const batch = enrollBatch(i * perKill, (i + 1) * perKill);
      await cluster.kill(i);
      step(`n${i} killed`);
      // Enrollment resumes: every enrollment of the batch (some in flight at the kill) is acknowledged.
      await batch;
      step(`n${i} down: enrollments of this round acknowledged (${acknowledged.size} in all)`);

      // While node i stays down.
      const live = cluster.urls[(i + 1) % KILLS];
      await untilDone(`control plane start with n${i} down`, async () => {
        const other = await startControlPlane({ stateDir: join(dir, `cp-probe${i}`), natsUrl: live, http: false, ipam });
        await other.stop();
      });
      const revoked = await untilDone(`agent revoke with n${i} down`, () => cp.service.revokeAgent('rv', `victim${i}`));
      expect(revoked.name).toBe(`victim${i}`);
      await untilDone(`directory watcher with n${i} down`, async () => {
        const w = DirectoryWatcher.forConnection(nc, { namespace: 'fo', name: 'probe', publicKey: wgKeyPair().publicKey, allowedNamespaces: [] });
        try {
          await w.start();
        } finally {
          w.stop();
        }
      });
      const creds = (await loadCredentials(launcherDir, 'roamer'))!;
      const lnc = await connectControlPlane(controlPlaneEndpoint(creds), { name: 'roamer' });
      try {
        expect(`nats://${lnc.getServer()}`).not.toBe(cluster.urls[i]);
        const d = await untilDone(`launcher directory with n${i} down`, () => fetchDirectory({ nc: lnc, jwt: roamer.jwt }));
        expect(d.self.name).toBe('roamer');
      } finally {
        await lnc.close();
      }

      if (i === 0) {
        // The real CLI enrolls while n0 is down, given n1 (killed next) as its only URL: n1 is stored first.
        const first = await cliStart(cliState, 'first', ['--control-plane', cluster.urls[1], '--token', cliToken]);
        // Enrolled by this run; a repeat after a retryable failure reuses the identity an earlier run enrolled.
        expect(first.stderr).toMatch(first.runs === 1 ? /lattice: enrolled cli\/cli at / : /lattice: (enrolled|reusing) cli\/cli at /);
        const urls = (await loadCredentials(cliState, 'cli'))!.controlPlane.urls!;
        // n1 first, then what the cluster announced (n2 at least: a dead node is not announced).
        expect(urls[0]).toBe(cluster.urls[1]);
        expect(urls).toContain(cluster.urls[2]);
      }
      if (i === 1) {
        // Its restart (no token, no --control-plane) while n1, its first stored URL, is dead: through another node.
        const second = await cliStart(cliState, 'second', []);
        expect(second.stderr).toMatch(/lattice: reusing cli\/cli at /);
      }

      step(`n${i} down: control plane start, revoke, watcher, launcher restart, sandbox start done`);
      await cluster.start(i);
      await cluster.waitJetStream();
      // The next kill only once every stream has all its replicas current again (else it takes a quorum away).
      await waitFor(async () => {
        const jsm = await nc.jetstreamManager();
        const streams = await jsm.streams.list().next();
        return streams.every((si) => (si.cluster?.replicas ?? []).length >= cp.replicas - 1 && (si.cluster?.replicas ?? []).every((r) => r.current && !r.offline));
      }, 120_000, `every stream's replicas current after n${i} restarted`);
      step(`n${i} back, replicas current`);
    }
    await appendEvents(EVENTS);
    await enrollBatch(KILLS * perKill, ENROLLMENTS);
    step(`all enrolled; ${appended} events recorded, ${outbox.ackedThrough} acknowledged`);

    // Every acknowledged enrollment is there once, with its own address.
    expect(acknowledged.size).toBe(ENROLLMENTS);
    const agents = (await cp.service.listAgents('fo')).filter((a) => a.name !== 'roamer');
    expect(agents.map((a) => a.name).sort()).toEqual([...acknowledged.keys()].sort());
    for (const a of agents) expect(a.ipv4).toBe(acknowledged.get(a.name)!.address.ipv4);
    expect(new Set(agents.map((a) => a.ipv4)).size).toBe(ENROLLMENTS);
    expect((await cp.service.listAgents('rv')).filter((a) => a.status !== 'revoked')).toEqual([]);

    // Both CLI runs' lifecycle events reached the stream, once each (the second run's only through n0 or n2).
    const cliAgent = (await loadCredentials(cliState, 'cli'))!.agentId;
    const cliCounts = async () => (await (await nc.jetstreamManager()).streams.info(AUDIT_STREAM, { subjects_filter: `lattice.audit.cli.${cliAgent}.sandbox.started` })).state.subjects ?? {};
    await waitFor(async () => Object.values(await cliCounts()).reduce((a, b) => a + b, 0) >= 2, 60_000, 'both CLI runs\' sandbox.started in the stream');
    expect(Object.values(await cliCounts())).toEqual([2]);

    // Every audit event recorded by the outbox reaches the stream exactly once.
    expect(ids.size).toBe(EVENTS);
    await waitFor(async () => (await publisher.drained(1000)) || false, 180_000, 'the outbox to be acknowledged');
    step('outbox drained');
    const subject = 'lattice.audit.ltfo.>';
    const perSubject = (await (await nc.jetstreamManager()).streams.info(AUDIT_STREAM, { subjects_filter: subject })).state.subjects ?? {};
    const inStream = Object.values(perSubject).reduce((a, b) => a + b, 0);
    // Read them back, each once (audit/readback.ts): a fetch that ended on the client's timer while the server
    // still sent its batch used to drop the batch's tail (no acks, so never sent again) and the read-back stopped
    // at ~40,000; the reader now sees the gap in the consumer sequence and resumes from the last stream sequence.
    const seen = new Map<string, number>();
    const { read, resets } = await readAll(nc.jetstream(), await nc.jetstreamManager(), { stream: AUDIT_STREAM, filter: subject }, (m) => {
      const id = (m.json() as { id: string }).id;
      seen.set(id, (seen.get(id) ?? 0) + 1);
    });
    step(`read back ${read} events, ${seen.size} distinct, ${resets} consumer(s) replaced after a gap`);
    // The outbox holds an event until the stream acknowledged its id; the stream holds exactly as many.
    expect(outbox.ackedThrough).toBeGreaterThanOrEqual(EVENTS);
    expect(inStream).toBe(EVENTS);
    expect(read).toBe(EVENTS);
    expect([...seen.values()].filter((n) => n !== 1)).toEqual([]);
    expect([...seen.keys()].filter((id) => !ids.has(id))).toEqual([]);
    expect([...ids].filter((id) => !seen.has(id))).toEqual([]);
  }, 420_000);
});
