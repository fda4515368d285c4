import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { MemoryKvStore } from '../../src/controlplane/kv.js';
import { ControlPlaneService } from '../../src/controlplane/service.js';
import { HttpApi } from '../../src/controlplane/http.js';
import { API_BASE, mountAdminRoutes } from '../../src/controlplane/api.js';
import { randomBytes } from 'node:crypto';

const ADMIN = 'a'.repeat(43);
let api: HttpApi;
let base: string;
let svc: ControlPlaneService;

beforeAll(async () => {
  svc = await ControlPlaneService.open({ store: new MemoryKvStore(), clock: new ManualClock(Date.now()) });
  api = new HttpApi({ adminToken: ADMIN });
  mountAdminRoutes(api, svc);
  // Another module mounts its own route on the same server.
  api.route('GET', `${API_BASE}/audit/:sandbox`, (ctx) => ({ sandbox: ctx.params.sandbox, events: [] }));
  base = (await api.listen('127.0.0.1', 0)).url;
});
afterAll(async () => {
  await api.close();
  svc.close();
});

const call = (method: string, path: string, body?: unknown, token: string | null = ADMIN) =>
  fetch(`${base}${path}`, {
    method,
    headers: { ...(token !== null ? { authorization: `Bearer ${token}` } : {}), 'content-type': 'application/json' },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });

describe('admin HTTP API', () => {
  it('401 without or with a wrong admin token, on every admin route', async () => {
    for (const [m, p] of [
      ['POST', `${API_BASE}/enrollment-tokens`],
      ['GET', `${API_BASE}/agents`],
      ['DELETE', `${API_BASE}/agents/x?namespace=n`],
      ['PUT', `${API_BASE}/policies/n`],
      ['GET', `${API_BASE}/audit/x`],
    ]) {
      for (const token of [null, 'wrong', ADMIN.slice(0, -1), `${ADMIN}x`]) {
        const r = await call(m, p, undefined, token);
        expect(r.status, `${m} ${p} with ${token}`).toBe(401);
        expect(((await r.json()) as { error: { code: string } }).error.code).toBe('EUNAUTHORIZED');
      }
    }
    const h = await call('GET', '/healthz', undefined, null);
    expect(h.status).toBe(200);
  });

  it('creates tokens, lists and revokes agents, sets policies', async () => {
    const r = await call('POST', `${API_BASE}/enrollment-tokens`, { namespace: 'web', allowedTools: ['get_policy'], limit: 2, ttl: '1h' });
    expect(r.status).toBe(201);
    const t = (await r.json()) as { token: string; limit: number; expiresAt: string };
    expect(t.token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(t.limit).toBe(2);
    const pk = randomBytes(32).toString('base64');
    await svc.enroll({ token: t.token, publicKey: pk, name: 'w1' });
    const ls = (await (await call('GET', `${API_BASE}/agents?namespace=web`)).json()) as { agents: { name: string; publicKey: string; ipv4: string }[] };
    expect(ls.agents).toHaveLength(1);
    expect(ls.agents[0]).toMatchObject({ name: 'w1', publicKey: pk, ipv4: expect.stringMatching(/^10\.77\./) });
    expect((await call('DELETE', `${API_BASE}/agents/w1`)).status).toBe(400);
    expect((await call('DELETE', `${API_BASE}/agents/w1?namespace=web`)).status).toBe(200);
    expect((await call('DELETE', `${API_BASE}/agents/w1?namespace=web`)).status).toBe(404);
    expect(((await (await call('GET', `${API_BASE}/agents`)).json()) as { agents: unknown[] }).agents).toHaveLength(0);

    expect((await call('GET', `${API_BASE}/policies/web`)).status).toBe(404);
    expect((await call('PUT', `${API_BASE}/policies/web`, { version: 1 })).status).toBe(200);
    const p = (await (await call('GET', `${API_BASE}/policies/web`)).json()) as { policy: unknown };
    expect(p.policy).toEqual({ version: 1 });
    const a = (await (await call('GET', `${API_BASE}/audit/sb1`)).json()) as { sandbox: string };
    expect(a.sandbox).toBe('sb1');
  });

  it('400 with a one-line error for bad bodies; 404 and 405 for unknown routes', async () => {
    for (const body of ['{not json', JSON.stringify({ namespace: 'UPPER' }), JSON.stringify({ namespace: 'n', limit: -1 }), '[]']) {
      const r = await call('POST', `${API_BASE}/enrollment-tokens`, body);
      expect(r.status).toBe(400);
      const e = (await r.json()) as { error: { code: string; message: string } };
      expect(e.error.code).toBe('EBADREQ');
      expect(e.error.message).not.toContain('\n');
    }
    expect((await call('PUT', `${API_BASE}/policies/n`, '')).status).toBe(400);
    expect((await call('PUT', `${API_BASE}/policies/n`, '"string"')).status).toBe(400);
    expect((await call('GET', `${API_BASE}/nope`)).status).toBe(404);
    expect((await call('PATCH', `${API_BASE}/agents`)).status).toBe(405);
    const big = await call('PUT', `${API_BASE}/policies/n`, JSON.stringify({ x: 'y'.repeat(2 * 1024 * 1024) }));
    expect(big.status).toBe(413);
  });
});

describe('admin HTTP API under hostile clients', () => {
  const raw = (port: number) => import('node:net').then(({ connect }) => connect(port, '127.0.0.1'));
  const closed = (s: import('node:net').Socket) => new Promise<void>((r) => s.once('close', () => r()));
  const firstData = (s: import('node:net').Socket) => new Promise<string>((r) => s.once('data', (d: Buffer) => r(d.toString())));

  it('closes a connection that never finishes its headers', async () => {
    const s = await raw(Number(new URL(base).port));
    s.on('error', () => undefined);
    s.resume(); // read what the server sends, so its close is seen
    s.write('GET /v1/health HTTP/1.1\r\nHost: x\r\n'); // no blank line: headers never end
    await closed(s); // the test's own timeout bounds this; no timing goal here
    expect(s.destroyed).toBe(true);
  });

  it('answers an unauthenticated delegate before reading its body', async () => {
    const a = new HttpApi({ adminToken: ADMIN });
    const { mountAgentOpsRoutes } = await import('../../src/controlplane/agentops.js');
    const { EgressRequests } = await import('../../src/controlplane/egress.js');
    const store = new MemoryKvStore();
    const s2 = await ControlPlaneService.open({ store, clock: new ManualClock(Date.now()) });
    mountAgentOpsRoutes(a, s2, await EgressRequests.open(store, new ManualClock(Date.now())));
    const port = (await a.listen('127.0.0.1', 0)).port;
    try {
      const s = await raw(port);
      s.on('error', () => undefined);
      // Announce 1 MB and send none of it: the 401 must come anyway.
      s.write(`POST ${API_BASE}/delegate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer not.a.jwt\r\nContent-Length: 1048576\r\n\r\n`);
      expect(await firstData(s)).toMatch(/^HTTP\/1\.1 401/);
      s.destroy();
    } finally {
      await a.close();
      s2.close();
    }
  });

  it('holds at most maxConnections sockets', async () => {
    const a = new HttpApi({ adminToken: ADMIN, maxConnections: 2 });
    a.route('GET', '/x', () => ({ ok: true }), { auth: 'none' });
    const port = (await a.listen('127.0.0.1', 0)).port;
    try {
      const held = [await raw(port), await raw(port)];
      for (const h of held) h.on('error', () => undefined);
      await Promise.all(held.map((h) => new Promise((r) => (h.readyState === 'open' ? r(null) : h.once('connect', r)))));
      const extra = await raw(port);
      extra.on('error', () => undefined);
      extra.resume();
      await closed(extra);
      expect(extra.bytesRead).toBe(0);
      for (const h of held) h.destroy();
    } finally {
      await a.close();
    }
  });
});
