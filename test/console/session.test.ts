import { describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.js';
import { CSRF_HEADER, SESSION_COOKIE, SessionLimits, SessionStore, crossSiteReason, originOf, readCookie, sessionCookie } from '../../src/console/session.js';
import { checkPolicyText } from '../../src/console/server.js';

const ROOT = { name: 'root', role: 'admin' };

const ORIGIN = 'http://127.0.0.1:8470';

function store() {
  const clock = new ManualClock();
  let n = 0;
  // Deterministic "random" bytes: each call a distinct fill.
  const sessions = new SessionStore(clock, (len) => Buffer.alloc(len, ++n));
  return { clock, sessions };
}

const req = (method: string, headers: Record<string, string>) => ({ method, headers: { host: '127.0.0.1:8470', ...headers } });

describe('console sessions', () => {
  it('accepts a same-origin GET with the cookie and refreshes nothing else', () => {
    const { sessions } = store();
    const { id, info } = sessions.create(ROOT);
    const r = sessions.check(req('GET', { cookie: `other=1; ${SESSION_COOKIE}=${id}`, 'sec-fetch-site': 'same-origin' }), ORIGIN);
    expect(r).toEqual({ ok: true, info });
  });

  it('leaves requests without the cookie to other schemes, and refuses unknown ids with 401', () => {
    const { sessions } = store();
    sessions.create(ROOT);
    expect(sessions.check(req('GET', {}), ORIGIN)).toBeUndefined();
    expect(sessions.check(req('GET', { cookie: `${SESSION_COOKIE}=forged` }), ORIGIN)).toMatchObject({ ok: false, status: 401 });
  });

  it('requires the CSRF header and a same Origin on unsafe methods', () => {
    const { sessions } = store();
    const { id, info } = sessions.create(ROOT);
    const cookie = `${SESSION_COOKIE}=${id}`;
    expect(sessions.check(req('POST', { cookie, origin: ORIGIN }), ORIGIN)).toMatchObject({ ok: false, status: 403 });
    expect(sessions.check(req('POST', { cookie, origin: ORIGIN, [CSRF_HEADER]: 'x'.repeat(43) }), ORIGIN)).toMatchObject({ ok: false, status: 403 });
    expect(sessions.check(req('POST', { cookie, [CSRF_HEADER]: info.csrf }), ORIGIN)).toMatchObject({ ok: false, status: 403 });
    expect(sessions.check(req('POST', { cookie, origin: 'http://evil.example', [CSRF_HEADER]: info.csrf }), ORIGIN)).toMatchObject({ ok: false, status: 403 });
    expect(sessions.check(req('POST', { cookie, origin: ORIGIN, [CSRF_HEADER]: info.csrf, 'sec-fetch-site': 'cross-site' }), ORIGIN)).toMatchObject({ ok: false, status: 403 });
    expect(sessions.check(req('POST', { cookie, origin: ORIGIN, [CSRF_HEADER]: info.csrf, 'sec-fetch-site': 'same-origin' }), ORIGIN)).toMatchObject({ ok: true });
  });

  it('refuses cross-site and same-site (other port) reads with the cookie', () => {
    const { sessions } = store();
    const { id } = sessions.create(ROOT);
    for (const site of ['cross-site', 'same-site']) {
      expect(sessions.check(req('GET', { cookie: `${SESSION_COOKIE}=${id}`, 'sec-fetch-site': site }), ORIGIN)).toMatchObject({ ok: false, status: 403 });
    }
    expect(crossSiteReason(req('GET', { 'sec-fetch-site': 'none' }), ORIGIN)).toBeUndefined();
    expect(crossSiteReason(req('DELETE', { 'sec-fetch-site': 'none', origin: ORIGIN }), ORIGIN)).toBeDefined();
  });

  it('ends a session after the idle time, and after the absolute time even when used', () => {
    const { clock, sessions } = store();
    const a = sessions.create(ROOT);
    const get = (id: string) => sessions.check(req('GET', { cookie: `${SESSION_COOKIE}=${id}` }), ORIGIN);
    clock.advance(SessionLimits.idleMs - 1);
    expect(get(a.id)).toMatchObject({ ok: true });
    clock.advance(SessionLimits.idleMs);
    expect(get(a.id)).toMatchObject({ ok: false, status: 401 });

    const b = sessions.create(ROOT);
    for (let t = 0; t < SessionLimits.absoluteMs; t += SessionLimits.idleMs / 2) {
      expect(get(b.id)).toMatchObject({ ok: true });
      clock.advance(SessionLimits.idleMs / 2);
    }
    expect(get(b.id)).toMatchObject({ ok: false, status: 401 });
  });

  it('holds at most maxSessions (the oldest goes) and forgets a signed-out session', () => {
    const { sessions } = store();
    const first = sessions.create(ROOT);
    for (let i = 0; i < SessionLimits.maxSessions; i++) sessions.create(ROOT);
    expect(sessions.size).toBe(SessionLimits.maxSessions);
    expect(sessions.check(req('GET', { cookie: `${SESSION_COOKIE}=${first.id}` }), ORIGIN)).toMatchObject({ ok: false, status: 401 });
    const last = sessions.create(ROOT);
    sessions.delete(last.id);
    expect(sessions.check(req('GET', { cookie: `${SESSION_COOKIE}=${last.id}` }), ORIGIN)).toMatchObject({ ok: false, status: 401 });
  });

  it('limits failed sign-ins per window', () => {
    const { clock, sessions } = store();
    for (let i = 0; i < SessionLimits.maxFailures; i++) {
      expect(sessions.signInAllowed()).toBe(true);
      sessions.recordFailure();
    }
    expect(sessions.signInAllowed()).toBe(false);
    clock.advance(SessionLimits.failureWindowMs + 1);
    expect(sessions.signInAllowed()).toBe(true);
  });

  it('cookie and origin helpers', () => {
    expect(sessionCookie('abc', 90_000, false)).toBe(`${SESSION_COOKIE}=abc; HttpOnly; SameSite=Strict; Path=/; Max-Age=90`);
    expect(sessionCookie('abc', 1000, true)).toMatch(/; Secure$/);
    expect(readCookie('a=1; b=2', 'b')).toBe('2');
    expect(readCookie('ab=1', 'a')).toBeUndefined();
    expect(originOf({ headers: { host: '127.0.0.1:8470' } }, false)).toBe(ORIGIN);
    expect(originOf({ headers: { host: 'x"><script>' } }, false)).toBeUndefined();
    expect(originOf({ headers: {} }, false)).toBeUndefined();
  });
});

describe('policy check for the editor', () => {
  it('reports JSON syntax errors, validator problems with their path, and the diff', () => {
    expect(checkPolicyText('{"version": 1,', undefined)).toMatchObject({ ok: false, problems: [{ path: '' }], diff: '' });
    const bad = checkPolicyText(JSON.stringify({ version: 1, egress: [{ id: 'x', action: 'allow', cidrs: ['300.1.1.1/8'] }] }), undefined);
    expect(bad.ok).toBe(false);
    expect(bad.problems[0].path).toMatch(/^egress\[0\]/);
    const cur = { version: 1, egress: [] };
    const next = { version: 1, egress: [{ id: 'web', action: 'allow', cidrs: ['203.0.113.0/24'], ports: [443], protocol: 'tcp' }] };
    const ok = checkPolicyText(JSON.stringify(next), cur);
    expect(ok).toMatchObject({ ok: true, problems: [], hasCurrent: true });
    expect(ok.diff).toMatch(/^\+.*"id": "web"/m);
    expect(ok.diff).toMatch(/^-\s+"egress": \[\]/m);
  });
});
