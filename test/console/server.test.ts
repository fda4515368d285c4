import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { NatsConnection } from 'nats';
import { ManualClock } from '../../src/clock.js';
import { HttpApi } from '../../src/controlplane/http.js';
import { mountConsole } from '../../src/console/server.js';
import { CSRF_HEADER, SESSION_COOKIE, SessionLimits } from '../../src/console/session.js';

/*
 * The console's routes and session scheme on a real HttpApi (loopback, port 0). NATS is not reached: only the
 * live audit route needs it, and it is not called here (e2e/console covers it with a real nats-server).
 */
const TOKEN = 'admin-token-for-tests';
let api: HttpApi;
let base: string;
let origin: string;

beforeEach(async () => {
  api = new HttpApi({ adminToken: TOKEN });
  mountConsole(api, { nc: {} as NatsConnection, getPolicy: async () => ({ policy: { version: 1, egress: [] } }), clock: new ManualClock() });
  api.route('GET', '/x', () => ({ ok: true }));
  api.route('POST', '/x', () => ({ posted: true }));
  base = (await api.listen('127.0.0.1', 0)).url;
  origin = new URL(base).origin;
});
afterEach(() => api.close());

async function signIn(): Promise<{ cookie: string; csrf: string }> {
  const res = await fetch(`${base}/console/session`, { method: 'POST', headers: { 'content-type': 'application/json', origin }, body: JSON.stringify({ token: TOKEN }) });
  expect(res.status).toBe(201);
  const setCookie = res.headers.get('set-cookie')!;
  expect(setCookie).toMatch(new RegExp(`^${SESSION_COOKIE}=[A-Za-z0-9_-]{43}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${SessionLimits.absoluteMs / 1000}$`));
  const { csrf } = (await res.json()) as { csrf: string };
  return { cookie: setCookie.split(';')[0], csrf };
}

describe('console routes on the admin HTTP server', () => {
  it('serves the page with a strict Content-Security-Policy and no data in it', async () => {
    const res = await fetch(`${base}/console/`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(res.headers.get('x-frame-options')).toBe('DENY');
    expect(await res.text()).toContain('<script type="module" src="/console/app.js"></script>');
  });

  it('a session opens admin routes: GET with the cookie, POST only with Origin and the CSRF token', async () => {
    const { cookie, csrf } = await signIn();
    expect((await fetch(`${base}/x`)).status).toBe(401);
    expect((await fetch(`${base}/x`, { headers: { cookie } })).status).toBe(200);
    expect((await fetch(`${base}/x`, { method: 'POST', headers: { cookie, origin } })).status).toBe(403);
    expect((await fetch(`${base}/x`, { method: 'POST', headers: { cookie, [CSRF_HEADER]: csrf } })).status).toBe(403);
    expect((await fetch(`${base}/x`, { method: 'POST', headers: { cookie, origin: 'http://localhost:1', [CSRF_HEADER]: csrf } })).status).toBe(403);
    expect((await fetch(`${base}/x`, { method: 'POST', headers: { cookie, origin, [CSRF_HEADER]: csrf } })).status).toBe(200);
    // The bearer token works as before, with no cookie.
    expect((await fetch(`${base}/x`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}` } })).status).toBe(200);
    expect(await (await fetch(`${base}/console/session`, { headers: { cookie } })).json()).toMatchObject({ csrf });
  });

  it('sign-in: refuses another origin and a wrong token, and stops answering after too many failures', async () => {
    const post = (token: string, o = origin) => fetch(`${base}/console/session`, { method: 'POST', headers: { 'content-type': 'application/json', origin: o }, body: JSON.stringify({ token }) });
    expect((await post(TOKEN, 'http://evil.example')).status).toBe(403);
    for (let i = 0; i < SessionLimits.maxFailures; i++) expect((await post('wrong')).status).toBe(401);
    expect((await post(TOKEN)).status).toBe(429);
  });

  it('sign-out ends the session', async () => {
    const { cookie, csrf } = await signIn();
    const out = await fetch(`${base}/console/session`, { method: 'DELETE', headers: { cookie, origin, [CSRF_HEADER]: csrf } });
    expect(out.status).toBe(204);
    expect(out.headers.get('set-cookie')).toMatch(/Max-Age=0/);
    expect((await fetch(`${base}/x`, { headers: { cookie } })).status).toBe(401);
  });

  it('checks a policy text against the current one without storing it', async () => {
    const { cookie, csrf } = await signIn();
    const res = await fetch(`${base}/api/v1/agent-isolation/policies/shop/check`, {
      method: 'POST',
      headers: { cookie, origin, [CSRF_HEADER]: csrf, 'content-type': 'application/json' },
      body: JSON.stringify({ text: '{"version": 1, "egress": [{"id": "a", "action": "maybe"}]}' }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { ok: boolean; problems: { path: string }[]; hasCurrent: boolean };
    expect(body.ok).toBe(false);
    expect(body.problems[0].path).toMatch(/^egress\[0\]/);
    expect(body.hasCurrent).toBe(true);
  });
});
