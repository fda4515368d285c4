import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { MemoryKvStore, getJson } from '../../src/controlplane/kv.js';
import { HttpApi } from '../../src/controlplane/http.js';
import { API_BASE } from '../../src/controlplane/api.js';
import { mountOperatorRoutes } from '../../src/controlplane/operator.js';
import { ControlPlaneService } from '../../src/controlplane/service.js';
import { checkPolicyDocument } from '../../src/controlplane/index.js';
import type { NatsConnection } from 'nats';
import {
  ADMINS_BUCKET,
  AdminRole,
  AdminUsers,
  defaultRole,
  hashToken,
  mountAdminUserRoutes,
  newUserToken,
  roleAllows,
  sameSecret,
  userOfToken,
  type AdminUserRecord,
} from '../../src/controlplane/admins.js';
import { seededRandom } from '../support/random.js';

const ROOT_TOKEN = 'r'.repeat(43);

describe('admin roles', () => {
  it('each role includes the ones below it and nothing above (the whole table)', () => {
    const table: [AdminRole, AdminRole, boolean][] = [
      ['viewer', 'viewer', true],
      ['viewer', 'approver', false],
      ['viewer', 'admin', false],
      ['approver', 'viewer', true],
      ['approver', 'approver', true],
      ['approver', 'admin', false],
      ['admin', 'viewer', true],
      ['admin', 'approver', true],
      ['admin', 'admin', true],
    ];
    for (const [role, needed, allowed] of table) expect(roleAllows(role, needed), `${role} -> ${needed}`).toBe(allowed);
  });

  it('routes without a named role: reads need viewer, every other method admin', () => {
    expect(defaultRole('GET')).toBe('viewer');
    expect(defaultRole('head')).toBe('viewer');
    for (const m of ['POST', 'PUT', 'PATCH', 'DELETE']) expect(defaultRole(m)).toBe('admin');
  });
});

describe('admin tokens', () => {
  it('a user token names its user, carries 256 random bits, and only its SHA-256 is compared', () => {
    const r = seededRandom();
    const t = newUserToken('alice', (n) => Buffer.from(r.bytes(n)));
    expect(userOfToken(t)).toBe('alice');
    expect(t.split('.')[2]).toHaveLength(43);
    expect(hashToken(t)).toMatch(/^[0-9a-f]{64}$/);
    expect(hashToken(t)).not.toContain(t.split('.')[2]);
    for (const bad of ['', 'ltu1.alice', 'ltu1.Alice.' + 'a'.repeat(43), 'ltu2.alice.' + 'a'.repeat(43), 'ltu1.alice.' + 'a'.repeat(42), t + '.x']) {
      expect(userOfToken(bad), bad).toBeUndefined();
    }
  });

  it('sameSecret is equality of any two strings, of any lengths, without throwing', () => {
    expect(sameSecret('abc', 'abc')).toBe(true);
    expect(sameSecret('abc', 'abd')).toBe(false);
    expect(sameSecret('abc', 'abcd')).toBe(false);
    expect(sameSecret('', 'x'.repeat(1000))).toBe(false);
  });
});

describe('AdminUsers', () => {
  async function setup() {
    const store = new MemoryKvStore();
    const bucket = await store.bucket(ADMINS_BUCKET);
    return { bucket, users: new AdminUsers({ bucket, rootToken: ROOT_TOKEN, clock: new ManualClock() }) };
  }
  const root = { name: 'root', role: AdminRole.Admin };

  it('root is the admin token; an added user is its token, stored hashed; removal refuses it at once', async () => {
    const { bucket, users } = await setup();
    expect(await users.authenticate(ROOT_TOKEN)).toEqual({ name: 'root', role: 'admin' });
    const { user, token } = await users.add({ name: 'alice', role: 'approver' }, root);
    expect(user).toMatchObject({ name: 'alice', role: 'approver', createdBy: 'root' });
    expect(await users.authenticate(token)).toEqual({ name: 'alice', role: 'approver' });
    const rec = await getJson<AdminUserRecord>(bucket, 'u.alice');
    expect(JSON.stringify(rec)).not.toContain(token.split('.')[2]);
    expect(rec!.value.tokenHash).toBe(hashToken(token));
    // A token with alice's name and another secret is not alice.
    expect(await users.authenticate(`ltu1.alice.${'A'.repeat(43)}`)).toBeUndefined();
    expect((await users.list()).map((u) => `${u.name}:${u.role}`)).toEqual(['root:admin', 'alice:approver']);
    await users.remove('alice', root);
    expect(await users.authenticate(token)).toBeUndefined();
    expect(await users.current('alice')).toBeUndefined();
    expect(await users.current('root')).toEqual({ name: 'root', role: 'admin' });
  });

  it('a role changes in place: the same token, the new role from the next request; each change audited once', async () => {
    const store = new MemoryKvStore();
    const bucket = await store.bucket(ADMINS_BUCKET);
    const audit: unknown[] = [];
    const users = new AdminUsers({ bucket, rootToken: ROOT_TOKEN, clock: new ManualClock(), audit: (e) => audit.push(e) });
    const { token } = await users.add({ name: 'vera', role: 'viewer' }, root);
    expect(await users.setRole('vera', { role: 'approver' }, root)).toMatchObject({ name: 'vera', role: 'approver' });
    expect(await users.authenticate(token)).toEqual({ name: 'vera', role: 'approver' });
    await users.setRole('vera', { role: 'approver' }, root); // no change, no event
    await expect(users.setRole('vera', { role: 'owner' }, root)).rejects.toMatchObject({ code: 'EBADREQ' });
    await expect(users.setRole('root', { role: 'viewer' }, root)).rejects.toMatchObject({ code: 'EBADREQ' });
    await expect(users.setRole('carol', { role: 'viewer' }, root)).rejects.toMatchObject({ code: 'ENOTFOUND' });
    await users.remove('vera', root);
    expect(audit).toEqual([
      { type: 'user.changed', user: 'vera', change: 'added', role: 'viewer', by: 'root' },
      { type: 'user.changed', user: 'vera', change: 'role', role: 'approver', by: 'root' },
      { type: 'user.changed', user: 'vera', change: 'removed', by: 'root' },
    ]);
  });

  it('refuses a bad name or role, a second user of the same name, root, and removing root or nobody', async () => {
    const { users } = await setup();
    await expect(users.add({ name: 'Bob', role: 'viewer' }, root)).rejects.toMatchObject({ code: 'EBADREQ' });
    await expect(users.add({ name: 'bob', role: 'owner' }, root)).rejects.toMatchObject({ code: 'EBADREQ' });
    await expect(users.add({ name: 'root', role: 'viewer' }, root)).rejects.toMatchObject({ code: 'EBADREQ' });
    await users.add({ name: 'bob', role: 'viewer' }, root);
    await expect(users.add({ name: 'bob', role: 'admin' }, root)).rejects.toMatchObject({ code: 'ENAME_TAKEN' });
    await expect(users.remove('root', root)).rejects.toMatchObject({ code: 'EBADREQ' });
    await expect(users.remove('carol', root)).rejects.toMatchObject({ code: 'ENOTFOUND' });
  });
});

describe('roles on the HTTP API', () => {
  let api: HttpApi;
  let base: string;
  let svc: ControlPlaneService;
  const tokens: Record<string, string> = {};

  beforeAll(async () => {
    const store = new MemoryKvStore();
    const clock = new ManualClock(Date.now());
    svc = await ControlPlaneService.open({ store, clock, validatePolicy: checkPolicyDocument });
    const users = new AdminUsers({ bucket: await store.bucket(ADMINS_BUCKET), rootToken: ROOT_TOKEN, clock });
    api = new HttpApi({ adminToken: ROOT_TOKEN, authenticate: (t) => users.authenticate(t) });
    mountAdminUserRoutes(api, users);
    // Audit publishing fails without NATS and is only logged: a stub connection is enough here.
    const nc = { jetstream: () => ({ publish: () => Promise.reject(new Error('no nats')) }) } as unknown as NatsConnection;
    await mountOperatorRoutes(api, { store, nc, targets: svc, validatePolicy: checkPolicyDocument, clock });
    api.route('PUT', `${API_BASE}/policies/:namespace`, () => ({ ok: true }));
    base = (await api.listen('127.0.0.1', 0)).url;
    for (const [name, role] of [['vera', 'viewer'], ['alice', 'approver'], ['bob', 'approver'], ['ada', 'admin']]) {
      tokens[name] = (await users.add({ name, role }, { name: 'root', role: AdminRole.Admin })).token;
    }
  });
  afterAll(async () => {
    await api.close();
    svc.close();
  });

  const call = (token: string, method: string, path: string, body?: unknown) =>
    fetch(`${base}${API_BASE}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  const policy = { version: 1, egress: [{ id: 'web', action: 'allow', cidrs: ['203.0.113.0/24'], ports: [443], protocol: 'tcp' }] };

  it('viewer: reads and proposes; 403 with a one-line reason on approve, policy set and users', async () => {
    expect((await call(tokens.vera, 'GET', '/whoami')).status).toBe(200);
    expect(await (await call(tokens.vera, 'GET', '/whoami')).json()).toEqual({ name: 'vera', role: 'viewer' });
    const p = await call(tokens.vera, 'POST', '/approvals', { kind: 'set-policy', namespace: 'team', policy });
    expect(p.status).toBe(201);
    const { id, proposer } = (await p.json()) as { id: string; proposer: string };
    expect(proposer).toBe('vera');
    for (const [m, path, body] of [
      ['POST', `/approvals/${id}/approve`, {}],
      ['PUT', '/policies/team', policy],
      ['POST', '/admin-users', { name: 'x', role: 'viewer' }],
      ['GET', '/admin-users', undefined],
    ] as const) {
      const r = await call(tokens.vera, m, path, body);
      expect(r.status, `${m} ${path}`).toBe(403);
      const e = ((await r.json()) as { error: { code: string; message: string } }).error;
      expect(e.code).toBe('EFORBIDDEN');
      expect(e.message).toMatch(/^user vera has role viewer; .* needs role (approver|admin)/);
      expect(e.message).not.toContain('\n');
    }
  });

  it('approver: approves another user\'s proposal as itself; never its own (four-eyes); a body naming someone else is refused', async () => {
    const mine = (await (await call(tokens.alice, 'POST', '/approvals', { kind: 'set-policy', namespace: 'own', policy })).json()) as { id: string };
    const self = await call(tokens.alice, 'POST', `/approvals/${mine.id}/approve`, {});
    expect(self.status).toBe(403);
    expect(((await self.json()) as { error: { code: string } }).error.code).toBe('EAPPROVAL_SELF');
    // Still pending: bob approves it, claiming to be someone else first.
    const lie = await call(tokens.bob, 'POST', `/approvals/${mine.id}/approve`, { by: 'alice' });
    expect(lie.status).toBe(400);
    const ok = await call(tokens.bob, 'POST', `/approvals/${mine.id}/approve`, {});
    expect(ok.status).toBe(200);
    const rec = ((await ok.json()) as { approval: { proposer: string; decidedBy: string; status: string } }).approval;
    expect(rec).toMatchObject({ proposer: 'alice', decidedBy: 'bob', status: 'approved' });
    // Approvers may not write directly; admins may.
    expect((await call(tokens.alice, 'PUT', '/policies/team', policy)).status).toBe(403);
    expect((await call(tokens.ada, 'PUT', '/policies/team', policy)).status).toBe(200);
  });

  it('a removed user is 401 on the next request', async () => {
    const { token } = (await (await call(tokens.ada, 'POST', '/admin-users', { name: 'temp', role: 'viewer' })).json()) as { token: string };
    expect((await call(token, 'GET', '/whoami')).status).toBe(200);
    expect((await call(tokens.ada, 'DELETE', '/admin-users/temp')).status).toBe(204);
    expect((await call(token, 'GET', '/whoami')).status).toBe(401);
  });
});
