import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { SignJWT } from 'jose';
import { ManualClock } from '../../src/clock.js';
import { MemoryKvStore } from '../../src/controlplane/kv.js';
import { ControlPlaneService } from '../../src/controlplane/service.js';
import { verifyAgentJwt } from '../../src/controlplane/jwt.js';
import { DirectoryWatcher } from '../../src/enroll/directory.js';
import type { ControlPlaneError, ControlPlaneEvent, Peer, RevocationRecord } from '../../src/controlplane/types.js';
import { CHALLENGE_TTL_MS, answerChallenge, x25519PublicKey } from '../../src/controlplane/possession.js';

const key = () => randomBytes(32).toString('base64');

async function setup(opts: { ipam?: ConstructorParameters<typeof Object>[0] } = {}) {
  const clock = new ManualClock();
  const store = new MemoryKvStore();
  const svc = await ControlPlaneService.open({ store, clock, ...(opts.ipam ? { ipam: opts.ipam as never } : {}) });
  return { clock, store, svc };
}

describe('ControlPlaneService (in-memory KV)', () => {
  it('enrolls: address, peers, policy, JWT', async () => {
    const { svc, clock } = await setup();
    const { token } = await svc.createToken({ namespace: 'team', allowedTools: ['list_peers'], limit: 2, ttl: '1h', policy: { version: 1 } });
    const pkA = key();
    const a = await svc.enroll({ token, publicKey: pkA, name: 'alpha', endpoint: '127.0.0.1:51820' });
    expect(a.namespace).toBe('team');
    expect(a.address.ipv4).toMatch(/^10\.77\.0\.\d+$/);
    expect(a.address.ipv6).toMatch(/^fd77::[0-9a-f]+$/);
    expect(a.allowedIPs).toEqual([`${a.address.ipv4}/32`, `${a.address.ipv6}/128`]);
    expect(a.peers).toEqual([]);
    expect(a.policy).toEqual({ version: 1 });
    expect(a.modes).toEqual({ sandbox: 'gvisor', enforcement: 'enforce' });
    const b = await svc.enroll({ token, publicKey: key(), name: 'beta' });
    expect(b.peers).toEqual<Peer[]>([
      { name: 'alpha', namespace: 'team', publicKey: pkA, allowedIPs: a.allowedIPs, endpoint: '127.0.0.1:51820' },
    ]);
    const claims = await verifyAgentJwt(svc.jwtSecret, b.jwt, { issuer: svc.issuer, now: clock.now() });
    expect(claims).toMatchObject({ sub: b.agentId, ns: 'team', tools: ['list_peers'], name: 'beta', iss: svc.issuer });
    expect(claims.exp - claims.iat).toBe(365 * 86400);
  });

  it('re-enrolling the same name and key proves possession of the private key, without using the token again', async () => {
    const events: ControlPlaneEvent[] = [];
    const clock = new ManualClock();
    const svc = await ControlPlaneService.open({ store: new MemoryKvStore(), clock, onEvent: (e) => events.push(e) });
    const { token } = await svc.createToken({ namespace: 'n', limit: 1 });
    const priv = randomBytes(32);
    const pk = x25519PublicKey(priv).toString('base64');
    const first = await svc.enroll({ token, publicKey: pk, name: 'a' });
    // The public key alone: a challenge, not an identity.
    const err = await svc.enroll({ token, publicKey: pk, name: 'a', endpoint: '192.0.2.1:9' }).catch((e: ControlPlaneError) => e);
    expect(err).toMatchObject({ code: 'ECHALLENGE' });
    const c = (err as ControlPlaneError).challenge!;
    const subject = { namespace: c.namespace, name: 'a', publicKey: pk };
    // A wrong key's answer, and a late answer, are refused.
    const wrong = answerChallenge(randomBytes(32).toString('base64'), c, subject)!;
    await expect(svc.enroll({ token, publicKey: pk, name: 'a', challenge: c.nonce, proof: wrong })).rejects.toMatchObject({ code: 'ECHALLENGE' });
    const proof = answerChallenge(priv.toString('base64'), c, subject)!;
    clock.advance(CHALLENGE_TTL_MS + 1);
    await expect(svc.enroll({ token, publicKey: pk, name: 'a', challenge: c.nonce, proof })).rejects.toMatchObject({ code: 'ECHALLENGE' });
    const c2 = ((await svc.enroll({ token, publicKey: pk, name: 'a' }).catch((e: ControlPlaneError) => e)) as ControlPlaneError).challenge!;
    const again = await svc.enroll({ token, publicKey: pk, name: 'a', challenge: c2.nonce, proof: answerChallenge(priv.toString('base64'), c2, subject)! });
    expect(events.map((e) => e.type)).toEqual(['token.created', 'enrollment.enrolled', 'enrollment.reenrolled']);
    expect(again.agentId).toBe(first.agentId);
    expect(again.address).toEqual(first.address);
    // limit 1 is already used: another name is refused.
    await expect(svc.enroll({ token, publicKey: key(), name: 'b' })).rejects.toMatchObject({ code: 'ETOKEN_EXHAUSTED' });
  });

  it('refuses a taken name with another key, a reused key, unknown and malformed tokens', async () => {
    const { svc } = await setup();
    const { token } = await svc.createToken({ namespace: 'n', limit: 10 });
    const pk = key();
    await svc.enroll({ token, publicKey: pk, name: 'a' });
    await expect(svc.enroll({ token, publicKey: key(), name: 'a' })).rejects.toMatchObject({ code: 'ENAME_TAKEN' });
    await expect(svc.enroll({ token, publicKey: pk, name: 'b' })).rejects.toMatchObject({ code: 'EKEY_IN_USE' });
    await expect(svc.enroll({ token: randomBytes(32).toString('base64url'), publicKey: key(), name: 'c' })).rejects.toMatchObject({ code: 'ETOKEN_UNKNOWN' });
    await expect(svc.enroll({ token: 'x', publicKey: key(), name: 'c' })).rejects.toMatchObject({ code: 'EBADREQ' });
    await expect(svc.enroll({ token, publicKey: 'not-a-key', name: 'c' })).rejects.toMatchObject({ code: 'EBADREQ' });
    await expect(svc.enroll({ token, publicKey: key(), name: '../etc' })).rejects.toMatchObject({ code: 'EBADREQ' });
    await expect(svc.enroll('garbage')).rejects.toMatchObject({ code: 'EBADREQ' });
    // The failed attempts left nothing behind.
    const agents = await svc.listAgents();
    expect(agents.map((x) => x.name)).toEqual(['a']);
  });

  it('an expired token never works, not even for a re-enrollment', async () => {
    const { svc, clock } = await setup();
    const { token } = await svc.createToken({ namespace: 'n', limit: 5, ttl: '1m' });
    const pk = key();
    await svc.enroll({ token, publicKey: pk, name: 'a' });
    clock.advance(60_000);
    await expect(svc.enroll({ token, publicKey: key(), name: 'b' })).rejects.toMatchObject({ code: 'ETOKEN_EXPIRED' });
    await expect(svc.enroll({ token, publicKey: pk, name: 'a' })).rejects.toMatchObject({ code: 'ETOKEN_EXPIRED' });
  });

  it('concurrent enrollments use a token exactly limit times', async () => {
    const { svc } = await setup();
    for (const limit of [1, 7]) {
      const { token } = await svc.createToken({ namespace: `n${limit}`, limit });
      const res = await Promise.allSettled(Array.from({ length: 30 }, (_, i) => svc.enroll({ token, publicKey: key(), name: `p${i}` })));
      const ok = res.filter((r) => r.status === 'fulfilled');
      expect(ok).toHaveLength(limit);
      for (const r of res) if (r.status === 'rejected') expect(r.reason).toMatchObject({ code: 'ETOKEN_EXHAUSTED' });
      expect((await svc.listAgents(`n${limit}`)).length).toBe(limit);
    }
  });

  it('revocation frees name and address, bars the key, and reaches a watcher', async () => {
    const clock = new ManualClock();
    const store = new MemoryKvStore();
    const events: ControlPlaneEvent[] = [];
    const svc = await ControlPlaneService.open({ store, clock, onEvent: (e) => events.push(e) });
    const { token } = await svc.createToken({ namespace: 'n', limit: 5 });
    const pkA = key();
    const a = await svc.enroll({ token, publicKey: pkA, name: 'a' });
    const pkB = key();
    await svc.enroll({ token, publicKey: pkB, name: 'b' });
    const w = await new DirectoryWatcher({ store, namespace: 'n', name: 'b', publicKey: pkB }).start();
    expect(w.peers.map((p) => p.name)).toEqual(['a']);
    const aw = await new DirectoryWatcher({ store, namespace: 'n', name: 'a', publicKey: pkA }).start();
    const revoked: RevocationRecord[] = [];
    aw.on('revoked', (r) => revoked.push(r));
    const peerEvents: Peer[][] = [];
    w.on('peers-changed', (p) => peerEvents.push(p));

    await svc.revokeAgent('n', 'a');
    expect(revoked).toHaveLength(1);
    expect(revoked[0]).toMatchObject({ name: 'a', namespace: 'n', publicKey: pkA });
    expect(peerEvents.at(-1)).toEqual([]);
    await expect(svc.verifyJwt(a.jwt)).rejects.toMatchObject({ code: 'EREVOKED' });
    await expect(svc.enroll({ token, publicKey: pkA, name: 'a' })).rejects.toMatchObject({ code: 'EREVOKED' });
    await expect(svc.revokeAgent('n', 'a')).rejects.toMatchObject({ code: 'ENOTFOUND' });
    // The name and the address are free again.
    const a2 = await svc.enroll({ token, publicKey: key(), name: 'a' });
    expect(a2.address).toEqual(a.address);
    expect(peerEvents.at(-1)?.map((p) => p.name)).toEqual(['a']);
    expect(events.filter((e) => e.type.startsWith('enrollment.')).map((e) => `${e.type} ${'name' in e ? e.name : ''}`)).toEqual([
      'enrollment.enrolled a',
      'enrollment.enrolled b',
      'enrollment.revoked a',
      'enrollment.enrolled a',
    ]);
    w.stop();
    aw.stop();
  });

  it('policy and endpoint changes reach watchers', async () => {
    const { svc, store } = await setup();
    const { token } = await svc.createToken({ namespace: 'n', limit: 5 });
    const pkA = key();
    const a = await svc.enroll({ token, publicKey: pkA, name: 'a' });
    const pkB = key();
    await svc.enroll({ token, publicKey: pkB, name: 'b' });
    const w = await new DirectoryWatcher({ store, namespace: 'n', name: 'b', publicKey: pkB }).start();
    const policies: unknown[] = [];
    const peers: Peer[][] = [];
    w.on('policy-changed', (p) => policies.push(p));
    w.on('peers-changed', (p) => peers.push(p));
    await svc.setPolicy('n', { version: 1, mode: 'audit' });
    expect(policies).toEqual([{ version: 1, mode: 'audit' }]);
    await svc.updateEndpoint({ jwt: a.jwt, endpoint: '[::1]:4000' });
    expect(peers.at(-1)?.[0].endpoint).toBe('[::1]:4000');
    await expect(svc.updateEndpoint({ jwt: a.jwt, endpoint: 'nope' })).rejects.toMatchObject({ code: 'EBADREQ' });
    await expect(svc.updateEndpoint({ jwt: 'x.y.z', endpoint: '1.2.3.4:5' })).rejects.toMatchObject({ code: 'EUNAUTHORIZED' });
    // New enrollments get the namespace policy.
    const c = await svc.enroll({ token, publicKey: key(), name: 'c' });
    expect(c.policy).toEqual({ version: 1, mode: 'audit' });
    w.stop();
  });

  it('JWT verification pins HS256: alg none, HS512, wrong key and expiry are refused', async () => {
    const { svc, clock } = await setup();
    const { token } = await svc.createToken({ namespace: 'n' });
    const a = await svc.enroll({ token, publicKey: key(), name: 'a' });
    const opts = { issuer: svc.issuer, now: clock.now() };
    const claims = await verifyAgentJwt(svc.jwtSecret, a.jwt, opts);
    const payload = { ...claims } as Record<string, unknown>;
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const none = `${b64({ alg: 'none', typ: 'JWT' })}.${b64(payload)}.`;
    await expect(verifyAgentJwt(svc.jwtSecret, none, opts)).rejects.toMatchObject({ code: 'EJWT' });
    const hs512 = await new SignJWT(payload).setProtectedHeader({ alg: 'HS512' }).sign(svc.jwtSecret);
    await expect(verifyAgentJwt(svc.jwtSecret, hs512, opts)).rejects.toThrow(/algorithm not allowed/);
    const wrongKey = await new SignJWT(payload).setProtectedHeader({ alg: 'HS256' }).sign(randomBytes(32));
    await expect(verifyAgentJwt(svc.jwtSecret, wrongKey, opts)).rejects.toThrow(/invalid JWT/);
    const [h, , s] = a.jwt.split('.');
    const tampered = `${h}.${b64({ ...payload, ns: 'other' })}.${s}`;
    await expect(verifyAgentJwt(svc.jwtSecret, tampered, opts)).rejects.toMatchObject({ code: 'EJWT' });
    await expect(verifyAgentJwt(svc.jwtSecret, a.jwt, { ...opts, now: (claims.exp + 1) * 1000 })).rejects.toThrow(/expired/);
  });

  it('two service instances over one store share the JWT secret and never hand out one address twice', async () => {
    const clock = new ManualClock();
    const store = new MemoryKvStore();
    const [s1, s2] = await Promise.all([ControlPlaneService.open({ store, clock }), ControlPlaneService.open({ store, clock })]);
    expect(s1.issuer).toBe(s2.issuer);
    const { token } = await s1.createToken({ namespace: 'n', limit: 100 });
    const res = await Promise.all(Array.from({ length: 100 }, (_, i) => (i % 2 ? s1 : s2).enroll({ token, publicKey: key(), name: `p${i}` })));
    expect(new Set(res.map((r) => r.address.ipv4)).size).toBe(100);
    await expect(s2.verifyJwt(res[1].jwt)).resolves.toMatchObject({ name: 'p1' });
  });

  it('says so when a namespace runs out of addresses', async () => {
    const { svc } = await setup({ ipam: { v4Pool: '10.9.0.0/24', v6Pool: 'fd09::/48', v4SubnetPrefix: 30, v6SubnetPrefix: 64 } });
    const { token } = await svc.createToken({ namespace: 'n', limit: 5 });
    await svc.enroll({ token, publicKey: key(), name: 'a' });
    await svc.enroll({ token, publicKey: key(), name: 'b' });
    await expect(svc.enroll({ token, publicKey: key(), name: 'c' })).rejects.toMatchObject({ code: 'EIPAM_EXHAUSTED' });
    expect((await svc.listAgents()).map((a) => a.name)).toEqual(['a', 'b']);
  });
});

describe('re-enrollment rules', () => {
  it('the same name and key with a different token of the namespace is refused', async () => {
    const svc = await ControlPlaneService.open({ store: new MemoryKvStore(), clock: new ManualClock() });
    const t1 = (await svc.createToken({ namespace: 'n' })).token;
    const t2 = (await svc.createToken({ namespace: 'n' })).token;
    const pk = randomBytes(32).toString('base64');
    await svc.enroll({ token: t1, publicKey: pk, name: 'a' });
    await expect(svc.enroll({ token: t2, publicKey: pk, name: 'a' })).rejects.toMatchObject({ code: 'ENAME_TAKEN' });
    // t2 was not used by the refused attempt.
    await expect(svc.enroll({ token: t2, publicKey: randomBytes(32).toString('base64'), name: 'b' })).resolves.toMatchObject({ name: 'b' });
  });
});

describe('delegation limits', () => {
  async function parent(quota?: { perParent?: number; perNamespace?: number }, tools = ['delegate', 'list_peers']) {
    const svc = await ControlPlaneService.open({ store: new MemoryKvStore(), clock: new ManualClock(), delegationQuota: quota });
    const { token } = await svc.createToken({ namespace: 'n', allowedTools: tools, limit: 1 });
    const p = await svc.enroll({ token, publicKey: key(), name: 'boss' });
    return { svc, jwt: p.jwt };
  }

  it('refuses to delegate for an agent whose tools lack delegate', async () => {
    const { svc, jwt } = await parent(undefined, ['list_peers']);
    await expect(svc.delegate(jwt, { allowedTools: ['list_peers'] })).rejects.toMatchObject({ code: 'EFORBIDDEN', message: expect.stringContaining('"delegate"') });
  });

  it('caps the enrollments one parent hands out', async () => {
    const { svc, jwt } = await parent({ perParent: 3 });
    await svc.delegate(jwt, { allowedTools: ['list_peers'], limit: 2 });
    await expect(svc.delegate(jwt, { allowedTools: ['list_peers'], limit: 2 })).rejects.toMatchObject({ code: 'EFORBIDDEN' });
    await expect(svc.delegate(jwt, { allowedTools: ['list_peers'], limit: 1 })).resolves.toBeDefined();
    await expect(svc.delegate(jwt, { allowedTools: ['list_peers'] })).rejects.toMatchObject({ code: 'EFORBIDDEN' });
  });

  it('caps delegated agents per namespace, and an admin token still enrolls', async () => {
    const { svc, jwt } = await parent({ perNamespace: 1 });
    const { token } = await svc.delegate(jwt, { allowedTools: ['list_peers'], limit: 2 });
    await svc.enroll({ token, publicKey: key(), name: 'c1' });
    await expect(svc.enroll({ token, publicKey: key(), name: 'c2' })).rejects.toMatchObject({ code: 'EFORBIDDEN' });
    const admin = (await svc.createToken({ namespace: 'n' })).token;
    await expect(svc.enroll({ token: admin, publicKey: key(), name: 'plain' })).resolves.toMatchObject({ name: 'plain' });
  });
});

describe('operators\' changes are audited in the name of who made them', () => {
  it('policy, token and label changes each emit one event naming the caller; a no-op label edit emits none', async () => {
    const events: ControlPlaneEvent[] = [];
    const validatePolicy = (p: unknown) => {
      if ('egress' in (p as object) && !Array.isArray((p as { egress: unknown }).egress)) throw new Error('egress must be a list');
    };
    const svc = await ControlPlaneService.open({ store: new MemoryKvStore(), clock: new ManualClock(), validatePolicy, onEvent: (e) => events.push(e) });
    const policy = { version: 1, egress: [{ id: 'dns', action: 'allow', cidrs: ['10.0.0.0/8'], ports: [53] }], ingress: [] };
    await svc.setPolicy('team', policy, 'alice');
    const { token, record } = await svc.createToken({ namespace: 'team', limit: 2 }, 'bob');
    await svc.enroll({ token, publicKey: key(), name: 'db' });
    await svc.setLabels('team', 'db', { set: { role: 'db' } }, 'alice');
    await svc.setLabels('team', 'db', { set: { role: 'db' } }, 'alice');
    const ops = events.filter((e) => !e.type.startsWith('enrollment.'));
    expect(ops).toEqual([
      { type: 'policy.set', namespace: 'team', policyHash: `sha256:${createHash('sha256').update(JSON.stringify(policy)).digest('hex')}`, rules: 1, by: 'alice' },
      { type: 'token.created', namespace: 'team', tokenId: record.id, limit: 2, expiresAt: record.expiresAt, by: 'bob' },
      expect.objectContaining({ type: 'labels.changed', namespace: 'team', name: 'db', labels: { role: 'db' }, by: 'alice' }),
    ]);
    // Without a caller (a call inside the control plane's process) the change is recorded as "local".
    await svc.setPolicy('team', { version: 1 });
    expect(events.at(-1)).toMatchObject({ type: 'policy.set', rules: 0, by: 'local' });
    // A refused change records nothing.
    await expect(svc.setPolicy('team', { version: 1, egress: 'all' }, 'alice')).rejects.toThrow();
    await expect(svc.createToken({ namespace: 'Team!' }, 'bob')).rejects.toThrow();
    expect(events.at(-1)).toMatchObject({ type: 'policy.set', by: 'local' });
  });
});
