import { rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { connect, type NatsConnection } from 'nats';
import { SignJWT, jwtVerify } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane, SUBJECTS, API_BASE, type StartedControlPlane, type EnrollResponse } from '../../src/controlplane/index.js';
import { freePort, type StartedNatsServer } from '../../src/natsserver/server.js';
import { DirectoryWatcher, enroll, fetchDirectory, loadCredentials, obtainIdentity, saveCredentials, updateEndpoint, type Credentials } from '../../src/enroll/index.js';
import type { Peer, RevocationRecord } from '../../src/controlplane/types.js';
import { cleanup, tempDir, nextEvent, wgKey, wgKeyPair, withNats } from './helpers.js';

let dir: string;
let nats: StartedNatsServer;
let cp: StartedControlPlane;
let nc: NatsConnection;

beforeAll(async () => {
  dir = await tempDir('enroll');
  nats = await withNats(dir);
  cp = await startControlPlane({ stateDir: dir, natsUrl: nats.url, http: { host: '127.0.0.1', port: 0 } });
  nc = await connect({ servers: nats.url });
});
afterAll(async () => {
  await nc?.close();
  await cp?.stop();
  await nats?.stop();
  await cleanup(dir);
});

async function token(body: Record<string, unknown>): Promise<string> {
  const r = await fetch(`${cp.httpUrl}${API_BASE}/enrollment-tokens`, {
    method: 'POST',
    headers: { authorization: `Bearer ${cp.adminToken}` },
    body: JSON.stringify(body),
  });
  expect(r.status).toBe(201);
  return ((await r.json()) as { token: string }).token;
}

describe('enrollment over NATS (real nats-server)', () => {
  it('happy path: address, peers, policy, HS256 JWT', async () => {
    const t = await token({ namespace: 'happy', allowedTools: ['list_peers'], limit: 2, policy: { version: 1, mode: 'enforce', egress: [], ingress: [] } });
    const pk1 = wgKey();
    const a = await enroll({ controlPlaneUrl: nats.url, token: t, name: 'one', publicKey: pk1, endpoint: '127.0.0.1:51000' });
    expect(a.address.ipv4).toMatch(/^10\.77\.\d+\.\d+$/);
    expect(a.address.ipv6).toMatch(/^fd77:/);
    expect(a.policy).toMatchObject({ version: 1, mode: 'enforce' });
    expect(a.controlPlane.clusterId).toBe(cp.service.info.clusterId);
    const pk2 = wgKey();
    const b = await enroll({ nc, token: t, name: 'two', publicKey: pk2 });
    expect(b.peers).toEqual<Peer[]>([{ name: 'one', namespace: 'happy', publicKey: pk1, allowedIPs: a.allowedIPs, endpoint: '127.0.0.1:51000' }]);
    const { payload, protectedHeader } = await jwtVerify(b.jwt, cp.service.jwtSecret, { algorithms: ['HS256'] });
    expect(protectedHeader.alg).toBe('HS256');
    expect(payload).toMatchObject({ sub: b.agentId, ns: 'happy', tools: ['list_peers'], wgpk: pk2, iss: cp.service.issuer });
    expect(typeof payload.jti).toBe('string');
    expect(payload.exp! - payload.iat!).toBe(365 * 86400);
  });

  for (const [limit, n] of [[1, 50], [10, 50]] as const) {
    it(`${n} concurrent enrollments against a token with limit ${limit}: exactly ${limit} succeed`, async () => {
      const t = await token({ namespace: `limit${limit}`, limit });
      const res = await Promise.allSettled(Array.from({ length: n }, (_, i) => enroll({ nc, token: t, name: `p${i}`, publicKey: wgKey() })));
      const ok = res.filter((r): r is PromiseFulfilledResult<EnrollResponse> => r.status === 'fulfilled');
      expect(ok).toHaveLength(limit);
      expect(new Set(ok.map((r) => r.value.address.ipv4)).size).toBe(limit);
      for (const r of res) if (r.status === 'rejected') expect((r.reason as { code: string }).code).toBe('ETOKEN_EXHAUSTED');
      expect(await cp.service.listAgents(`limit${limit}`)).toHaveLength(limit);
    });
  }

  it('an expired token is refused', async () => {
    const t = await token({ namespace: 'exp', ttl: 1, limit: 5 });
    await new Promise((r) => setTimeout(r, 1100)); // time itself is the event: the token's TTL of 1 s has passed
    await expect(enroll({ nc, token: t, name: 'late', publicKey: wgKey() })).rejects.toMatchObject({ code: 'ETOKEN_EXPIRED' });
    await expect(enroll({ nc, token: randomBytes(32).toString('base64url'), name: 'x', publicKey: wgKey() })).rejects.toMatchObject({ code: 'ETOKEN_UNKNOWN' });
  });

  it('revocation frees the address and reaches a DirectoryWatcher quickly', async () => {
    const t = await token({ namespace: 'rev', limit: 5 });
    const pkA = wgKey();
    const pkB = wgKey();
    const a = await enroll({ nc, token: t, name: 'a', publicKey: pkA });
    await enroll({ nc, token: t, name: 'b', publicKey: pkB });
    const watcherNc = await connect({ servers: nats.url });
    const wa = await DirectoryWatcher.forConnection(watcherNc, { namespace: 'rev', name: 'a', publicKey: pkA }).start();
    const wb = await DirectoryWatcher.forConnection(watcherNc, { namespace: 'rev', name: 'b', publicKey: pkB }).start();
    try {
      expect(wb.peers.map((p) => p.name)).toEqual(['a']);
      // endpoint moves reach peers
      const moved = nextEvent<Peer[]>(wb, 'peers-changed', 60_000);
      await updateEndpoint({ nc, jwt: a.jwt, endpoint: '127.0.0.1:40000' });
      expect((await moved)[0].endpoint).toBe('127.0.0.1:40000');
      // policy change
      const pol = nextEvent<unknown>(wb, 'policy-changed', 60_000);
      const put = await fetch(`${cp.httpUrl}${API_BASE}/policies/rev`, {
        method: 'PUT',
        headers: { authorization: `Bearer ${cp.adminToken}` },
        body: JSON.stringify({ version: 1, mode: 'audit' }),
      });
      expect(put.status).toBe(200);
      expect(await pol).toMatchObject({ mode: 'audit' });
      // revoke
      const revoked = nextEvent<RevocationRecord>(wa, 'revoked', 60_000);
      const gone = nextEvent<Peer[]>(wb, 'peers-changed', 60_000);
      const t0 = performance.now();
      const del = await fetch(`${cp.httpUrl}${API_BASE}/agents/a?namespace=rev`, { method: 'DELETE', headers: { authorization: `Bearer ${cp.adminToken}` } });
      expect(del.status).toBe(200);
      expect(await revoked).toMatchObject({ name: 'a', namespace: 'rev', publicKey: pkA });
      console.log(`revocation reached the watcher in ${(performance.now() - t0).toFixed(1)} ms`);
      expect(await gone).toEqual([]);
      // The key is barred everywhere; the address is handed out again.
      await expect(updateEndpoint({ nc, jwt: a.jwt, endpoint: '127.0.0.1:1' })).rejects.toMatchObject({ code: 'EREVOKED' });
      await expect(enroll({ nc, token: t, name: 'a', publicKey: pkA })).rejects.toMatchObject({ code: 'EREVOKED' });
      const c = await enroll({ nc, token: t, name: 'c', publicKey: wgKey() });
      expect(c.address).toEqual(a.address);
    } finally {
      wa.stop();
      wb.stop();
      await watcherNc.close();
    }
  });

  it('forged JWTs (alg none, HS512, wrong key) are refused over NATS', async () => {
    const t = await token({ namespace: 'jwt' });
    const a = await enroll({ nc, token: t, name: 'a', publicKey: wgKey() });
    const [, body] = a.jwt.split('.');
    const payload = JSON.parse(Buffer.from(body, 'base64url').toString()) as Record<string, unknown>;
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const forged = [
      `${b64({ alg: 'none', typ: 'JWT' })}.${body}.`,
      await new SignJWT(payload).setProtectedHeader({ alg: 'HS512' }).sign(cp.service.jwtSecret),
      await new SignJWT(payload).setProtectedHeader({ alg: 'HS256' }).sign(randomBytes(32)),
    ];
    for (const jwt of forged) {
      await expect(updateEndpoint({ nc, jwt, endpoint: '127.0.0.1:9' })).rejects.toMatchObject({ code: 'EUNAUTHORIZED' });
    }
    await expect(updateEndpoint({ nc, jwt: a.jwt, endpoint: '127.0.0.1:9' })).resolves.toEqual({ endpoint: '127.0.0.1:9' });
  });

  it('credentials persist 0600 and a restart reuses the identity without a token', async () => {
    const t = await token({ namespace: 'cred', limit: 1 });
    const { privateKey, publicKey } = wgKeyPair();
    const r = await enroll({ nc, token: t, name: 'sb', publicKey });
    const c: Credentials = {
      version: 1,
      name: 'sb',
      namespace: r.namespace,
      agentId: r.agentId,
      privateKey,
      publicKey,
      address: r.address,
      subnets: r.subnets,
      jwt: r.jwt,
      jwtExpiresAt: r.jwtExpiresAt,
      allowedTools: r.allowedTools,
      allowedNamespaces: r.allowedNamespaces,
      modes: r.modes,
      policy: r.policy,
      controlPlane: { url: nats.url, clusterId: r.controlPlane.clusterId, issuer: r.controlPlane.issuer },
      enrolledAt: Date.now(),
    };
    const path = await saveCredentials(dir, c);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    const loaded = await loadCredentials(dir, 'sb');
    expect(loaded).toEqual(c);
    // "restart": the stored JWT is enough to get the directory; the token (limit 1) is not used again.
    const d = await fetchDirectory({ controlPlaneUrl: loaded!.controlPlane.url, jwt: loaded!.jwt });
    expect(d.self).toMatchObject({ name: 'sb', publicKey, allowedIPs: [`${r.address.ipv4}/32`, `${r.address.ipv6}/128`] });
    // Re-enrolling the same name and key, the token used up, needs the private key: the public key
    // alone (every peer sees it) is refused with a challenge, a wrong answer too.
    await expect(enroll({ nc, token: t, name: 'sb', publicKey, endpoint: '192.0.2.66:1' })).rejects.toMatchObject({ code: 'ECHALLENGE' });
    await expect(enroll({ nc, token: t, name: 'sb', publicKey, privateKey: wgKeyPair().privateKey, endpoint: '192.0.2.66:1' })).rejects.toMatchObject({ code: 'ECHALLENGE' });
    expect((await fetchDirectory({ nc, jwt: r.jwt })).self.endpoint).not.toBe('192.0.2.66:1');
    const again = await enroll({ nc, token: t, name: 'sb', publicKey, privateKey });
    expect(again.address).toEqual(r.address);
    expect(again.agentId).toBe(r.agentId);
  });

  it('obtainIdentity: first start enrolls and stores, restarts reuse without using the token, revoked identities stop', async () => {
    const t = await token({ namespace: 'ident', limit: 2 });
    let generated = 0;
    const generateKeyPair = () => {
      generated++;
      return { privateKey: wgKey(), publicKey: wgKey() };
    };
    const base = { stateDir: dir, name: 'sbx', controlPlaneUrl: nats.url, generateKeyPair };
    await expect(obtainIdentity({ ...base })).rejects.toThrow(/pass --token/);
    const first = await obtainIdentity({ ...base, token: t });
    expect(first.reused).toBe(false);
    const second = await obtainIdentity({ ...base, token: t });
    expect(second.reused).toBe(true);
    expect(second.credentials.publicKey).toBe(first.credentials.publicKey);
    expect(second.credentials.address).toEqual(first.credentials.address);
    const third = await obtainIdentity({ stateDir: dir, name: 'sbx', generateKeyPair });
    expect(third.credentials.privateKey).toBe(first.credentials.privateKey);
    expect(generated).toBe(1);
    // The token had two uses and only one is gone.
    await enroll({ nc, token: t, name: 'other', publicKey: wgKey() });
    await expect(enroll({ nc, token: t, name: 'third', publicKey: wgKey() })).rejects.toMatchObject({ code: 'ETOKEN_EXHAUSTED' });
    await cp.service.revokeAgent('ident', 'sbx');
    await expect(obtainIdentity({ stateDir: dir, name: 'sbx', generateKeyPair })).rejects.toMatchObject({ code: 'EREVOKED' });
  });

  it('obtainIdentity after a crash between the answer and the credentials write: same identity, token not used twice', async () => {
    const t = await token({ namespace: 'crash', limit: 1 });
    const keys = wgKeyPair();
    const base = { stateDir: dir, name: 'crashy', controlPlaneUrl: nats.url, generateKeyPair: () => keys };
    const first = await obtainIdentity({ ...base, token: t });
    // As if the process died after the control plane answered: key file written, credentials not.
    const credDir = join(dir, 'credentials');
    await rm(join(credDir, 'crashy.json'));
    await writeFile(join(credDir, 'crashy.key-pending.json'), JSON.stringify(keys), { mode: 0o600 });
    const again = await obtainIdentity({ ...base, token: t, generateKeyPair: () => ({ privateKey: wgKey(), publicKey: wgKey() }) });
    expect(again.credentials.publicKey).toBe(keys.publicKey);
    expect(again.credentials.address).toEqual(first.credentials.address);
    expect(again.credentials.agentId).toBe(first.credentials.agentId);
  });

  it('malformed, oversized and unknown NATS requests are answered with EBADREQ and change nothing', async () => {
    const before = (await cp.service.listAgents()).length;
    const dec = new TextDecoder();
    for (const data of [new TextEncoder().encode('not json'), new Uint8Array(100 * 1024).fill(65), new TextEncoder().encode('[1,2]'), new TextEncoder().encode('{"token":5}')]) {
      const m = await nc.request(SUBJECTS.enroll, data, { timeout: 5000 });
      expect((JSON.parse(dec.decode(m.data)) as { error: { code: string } }).error.code).toBe('EBADREQ');
    }
    expect(cp.natsStats.malformed).toBeGreaterThanOrEqual(2);
    expect((await cp.service.listAgents()).length).toBe(before);
    // Still serving.
    const t = await token({ namespace: 'after' });
    await expect(enroll({ nc, token: t, name: 'ok', publicKey: wgKey() })).resolves.toMatchObject({ namespace: 'after' });
  });

  it('an unreachable control plane is a clear error naming the URL', async () => {
    const url = `nats://127.0.0.1:${await freePort()}`;
    await expect(enroll({ controlPlaneUrl: url, token: 'x'.repeat(43), name: 'a', publicKey: wgKey() })).rejects.toThrow(
      new RegExp(`cannot reach the control plane at ${url}`),
    );
    // NATS up, but nobody serving enrollment.
    const lone = await tempDir('lone');
    const other = await withNats(lone);
    try {
      await expect(enroll({ controlPlaneUrl: other.url, token: 'x'.repeat(43), name: 'a', publicKey: wgKey() })).rejects.toThrow(/no control plane is serving/);
    } finally {
      await other.stop();
      await cleanup(lone);
    }
  });

  it('HTTP API: 401 without or with a wrong token', async () => {
    for (const auth of [undefined, 'Bearer nope', `Bearer ${cp.adminToken}x`, cp.adminToken]) {
      const r = await fetch(`${cp.httpUrl}${API_BASE}/agents`, { headers: auth ? { authorization: auth } : {} });
      expect(r.status).toBe(401);
    }
    const ok = await fetch(`${cp.httpUrl}${API_BASE}/agents`, { headers: { authorization: `Bearer ${cp.adminToken}` } });
    expect(ok.status).toBe(200);
  });
});
