import { createUser } from '@nats-io/jwt';
import { connect, type NatsConnection } from 'nats';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureAuditStream } from '../../src/audit/stream.js';
import { BUCKETS, SUBJECTS, parseJoinToken, startControlPlane, type StartedControlPlane } from '../../src/controlplane/index.js';
import { DirectoryWatcher, enroll, fetchDirectory, natsUserOptions, type NatsUser } from '../../src/enroll/index.js';
import { requireBinary } from '../support/env.js';
import { cleanup, tempDir, wgKey } from './helpers.js';

/**
 * NATS authentication and authorization of the embedded server (operator mode), each refusal made by
 * nats-server itself: the client sees a permissions violation, not an answer from our code.
 */
let dir: string;
let cp: StartedControlPlane;
const conns: NatsConnection[] = [];
const enc = new TextEncoder();

beforeAll(async () => {
  await requireBinary('nats-server');
  dir = await tempDir('auth');
  cp = await startControlPlane({ stateDir: dir, natsPort: 0, http: false });
  await ensureAuditStream(await cp.nc.jetstreamManager());
});
afterAll(async () => {
  for (const c of conns) await c.close().catch(() => undefined);
  await cp?.stop();
  await cleanup(dir);
});

async function as(user: NatsUser | undefined): Promise<NatsConnection> {
  const nc = await connect({ servers: cp.natsUrl, maxReconnectAttempts: 0, timeout: 5000, ...natsUserOptions(user) });
  conns.push(nc);
  return nc;
}

async function joinToken(namespace: string, limit = 1) {
  const { token } = await cp.service.createToken({ namespace, limit });
  const j = parseJoinToken(token);
  expect(j.nats).toBeDefined();
  return { token: j.token, boot: j.nats! };
}

/** Enroll an agent the way a launcher does; returns its NATS user and identity. */
async function enrollAgent(namespace: string, name: string) {
  const { token, boot } = await joinToken(namespace);
  const kp = createUser();
  const publicKey = wgKey();
  const r = await enroll({ controlPlaneUrl: cp.natsUrl, user: boot, token, name, publicKey, natsPublicKey: kp.getPublicKey() });
  expect(r.nats).toBeDefined();
  const user: NatsUser = { jwt: r.nats!.jwt, seed: new TextDecoder().decode(kp.getSeed()), inboxPrefix: r.nats!.inboxPrefix };
  return { r, user, publicKey };
}

const VIOLATION = /Permissions Violation/i;

/** A subscription the server refuses: its callback gets the permissions violation. */
function refusedSubscription(nc: NatsConnection, subject: string): Promise<string> {
  return new Promise((resolve) => {
    nc.subscribe(subject, { callback: (err) => resolve(String(err?.message ?? 'delivered a message')) });
  });
}

/** A publish the server refuses (sent as a request with its own reply subscription, so the error reaches us). */
async function refusedPublish(nc: NatsConnection, subject: string, data = '{}'): Promise<string> {
  try {
    await nc.request(subject, enc.encode(data), { timeout: 5000, noMux: true });
    return 'answered';
  } catch (err) {
    return (err as Error).message;
  }
}

async function refusedKvRead(nc: NatsConnection, bucket: string, key: string): Promise<string> {
  try {
    const kv = await nc.jetstream().views.kv(bucket, { bindOnly: true });
    const e = await kv.get(key);
    return `read ${e?.key ?? 'nothing'}`;
  } catch (err) {
    return (err as Error).message;
  }
}

describe('anonymous and bootstrap users', () => {
  it('refuses an anonymous connection', async () => {
    await expect(connect({ servers: cp.natsUrl, maxReconnectAttempts: 0, timeout: 5000 })).rejects.toThrow(/Authorization Violation/i);
  });

  it('lets the bootstrap user only request enrollment and read its own replies', async () => {
    const { boot } = await joinToken('boot');
    const nc = await as(boot);
    expect(await refusedKvRead(nc, BUCKETS.config, 'cluster')).toMatch(VIOLATION);
    expect(await refusedKvRead(nc, BUCKETS.tokens, 'x')).toMatch(VIOLATION);
    expect(await refusedKvRead(nc, BUCKETS.agents, 'a.boot.x')).toMatch(VIOLATION);
    expect(await refusedSubscription(nc, '_INBOX.>')).toMatch(VIOLATION);
    expect(await refusedSubscription(nc, 'lattice.cp.>')).toMatch(VIOLATION);
    expect(await refusedSubscription(nc, '>')).toMatch(VIOLATION);
    expect(await refusedPublish(nc, SUBJECTS.directory)).toMatch(VIOLATION);
    // What it may do: ask for enrollment (a bad request, answered by the control plane).
    const reply = await nc.request(SUBJECTS.enroll, enc.encode('{}'), { timeout: 5000 });
    expect(new TextDecoder().decode(reply.data)).toContain('EBADREQ');
  });

  it('refuses an enrollment without the launcher NATS key when auth is on', async () => {
    const { token, boot } = await joinToken('nokey');
    await expect(enroll({ controlPlaneUrl: cp.natsUrl, user: boot, token, name: 'n1', publicKey: wgKey() })).rejects.toThrow(/natsPublicKey is required/);
  });
});

describe('a launcher user', () => {
  it('is refused everything outside its own agent, by the server', async () => {
    const a = await enrollAgent('team', 'alpha');
    const b = await enrollAgent('team', 'beta');
    await enrollAgent('other', 'gamma');
    const nc = await as(a.user);

    // Allowed: its directory, its namespace's watch, its own audit subject.
    const dirSnap = await fetchDirectory({ nc, jwt: a.r.jwt });
    expect(dirSnap.peers.map((p) => p.name)).toEqual(['beta']);
    const w = await DirectoryWatcher.forConnection(nc, { namespace: 'team', name: 'alpha', publicKey: a.publicKey }).start();
    expect(w.peers.map((p) => p.name)).toEqual(['beta']);
    w.stop();
    const ack = await nc.jetstream().publish(`lattice.audit.team.${a.r.agentId}.test.event`, enc.encode('{}'));
    expect(ack.stream).toBe('LATTICE_AUDIT');

    // Refused by nats-server: the secret, the tokens bucket, another namespace, any KV write.
    expect(await refusedKvRead(nc, BUCKETS.config, 'cluster')).toMatch(VIOLATION);
    expect(await refusedKvRead(nc, BUCKETS.tokens, 'x')).toMatch(VIOLATION);
    expect(await refusedKvRead(nc, BUCKETS.agents, 'a.team.beta')).toMatch(VIOLATION);
    const kv = await nc.jetstream().views.kv(BUCKETS.agents, { bindOnly: true });
    await expect(kv.watch({ key: 'a.other.*' })).rejects.toThrow(VIOLATION);
    await expect(kv.put('a.team.beta', enc.encode('{}'))).rejects.toThrow(VIOLATION);
    expect(await refusedPublish(nc, `$KV.${BUCKETS.agents}.a.team.beta`)).toMatch(VIOLATION);
    expect(await refusedPublish(nc, `$KV.${BUCKETS.policies}.team`)).toMatch(VIOLATION);
    expect(await refusedPublish(nc, `$KV.${BUCKETS.revocations}.a.team.beta`)).toMatch(VIOLATION);
    expect(await refusedPublish(nc, '$JS.API.STREAM.PURGE.LATTICE_AUDIT')).toMatch(VIOLATION);
    // Audit in another agent's name, or in another namespace.
    expect(await refusedPublish(nc, `lattice.audit.team.${b.r.agentId}.tool.span`)).toMatch(VIOLATION);
    expect(await refusedPublish(nc, `lattice.audit.other.${a.r.agentId}.tool.span`)).toMatch(VIOLATION);
    // Sniffing: control-plane requests, other inboxes, another agent's NAT signalling.
    expect(await refusedSubscription(nc, 'lattice.cp.>')).toMatch(VIOLATION);
    expect(await refusedSubscription(nc, '_INBOX.>')).toMatch(VIOLATION);
    expect(await refusedSubscription(nc, `${b.user.inboxPrefix}.>`)).toMatch(VIOLATION);
    expect(await refusedSubscription(nc, 'lattice.nat.team.beta')).toMatch(VIOLATION);
    expect(await refusedSubscription(nc, 'lattice.audit.>')).toMatch(VIOLATION);
    // Enrollment is the bootstrap user's, not a launcher's.
    expect(await refusedPublish(nc, SUBJECTS.enroll)).toMatch(VIOLATION);
  });

  it('stops working when the agent is revoked: the server closes its connection and refuses it', async () => {
    const a = await enrollAgent('rev', 'victim');
    const nc = await connect({ servers: cp.natsUrl, maxReconnectAttempts: -1, reconnectTimeWait: 100, ...natsUserOptions(a.user) });
    conns.push(nc);
    const disconnected = (async () => {
      for await (const s of nc.status()) if (s.type === 'disconnect') return Date.now();
      return Date.now();
    })();
    const t0 = Date.now();
    await cp.service.revokeAgent('rev', 'victim');
    const at = await disconnected;
    console.log(`revoked launcher disconnected ${at - t0} ms after revocation`);
    await expect(connect({ servers: cp.natsUrl, maxReconnectAttempts: 0, timeout: 5000, ...natsUserOptions(a.user) })).rejects.toThrow(/Authorization Violation/i);
  });
});
