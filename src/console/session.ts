import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Clock } from '../clock.js';

/*
 * Console sessions: an admin user's token (or the root admin token) is exchanged once for a session (POST /console/session), held by the
 * browser only as an HttpOnly, SameSite=Strict cookie; script never sees the session id, and the admin
 * token never appears in a URL, in local storage or in a later request.
 *
 * A request that carries the cookie is admin only if it also passes the cross-site checks
 * (OWASP CSRF cheat sheet: "Fetch Metadata" + "Verifying Origin" + "Synchronizer token"):
 *   - Sec-Fetch-Site, when sent, must be same-origin (or none: a URL typed by the user, safe methods only);
 *   - an unsafe method (anything but GET/HEAD) must carry an Origin equal to the server's own origin
 *     and the session's CSRF token in the X-Lattice-CSRF header (the page gets it from the sign-in answer,
 *     keeps it in memory, and asks for it again with GET /console/session after a reload).
 * SameSite=Strict alone already keeps the cookie off cross-site requests; the checks hold when a browser
 * does not honour it. Sessions end after IDLE_MS without a request or ABSOLUTE_MS after sign-in, whichever
 * is first, or at sign-out; they live in memory, so a control-plane restart signs everyone out.
 *
 * Pure apart from the injected clock and random source: headers in, a decision out.
 */

export const SESSION_COOKIE = 'lattice_console';
export const CSRF_HEADER = 'x-lattice-csrf';

export const SessionLimits = {
  /** A session unused this long (ms) is gone. */
  idleMs: 30 * 60_000,
  /** A session is gone this long (ms) after sign-in, used or not. */
  absoluteMs: 8 * 3_600_000,
  /** Sessions held at once; signing in beyond it ends the oldest. */
  maxSessions: 32,
  /** Failed sign-ins per window before further attempts are refused (429) until the window ends. */
  maxFailures: 10,
  failureWindowMs: 60_000,
} as const;

export interface SessionInfo {
  /** Synchronizer token for unsafe methods (43 base64url characters, 256 bits). */
  readonly csrf: string;
  /** When the session ends at the latest (epoch ms). */
  readonly expiresAt: number;
  /** Who signed in (admins.ts): every change made through this session is recorded as this user. */
  readonly user: { readonly name: string; readonly role: string };
}

interface Session {
  csrf: string;
  user: { name: string; role: string };
  createdAt: number;
  lastSeen: number;
}

/** The request fields the checks read (node's IncomingMessage has them; tests pass plain objects). */
export interface RequestLike {
  readonly method?: string;
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
}

/** Why a request with a session cookie is refused; `undefined` from {@link SessionStore.check} means "no session". */
export type CheckResult = { ok: true; info: SessionInfo } | { ok: false; status: 401 | 403; reason: string };

const SAFE_METHODS = new Set(['GET', 'HEAD']);
const hashId = (id: string) => createHash('sha256').update(id).digest('hex');
const header = (req: RequestLike, name: string): string | undefined => {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
};

/** The value of cookie `name` in a Cookie header, or undefined. */
export function readCookie(cookieHeader: string | undefined, name: string): string | undefined {
  if (!cookieHeader) return undefined;
  for (const part of cookieHeader.split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim();
  }
  return undefined;
}

/**
 * The fetch-metadata and origin checks for a browser request to `origin` (e.g. "http://127.0.0.1:8470").
 * Returns a reason when the request must be refused as cross-site, undefined when it may go on.
 */
export function crossSiteReason(req: RequestLike, origin: string): string | undefined {
  const method = (req.method ?? 'GET').toUpperCase();
  const site = header(req, 'sec-fetch-site');
  const safe = SAFE_METHODS.has(method);
  if (site !== undefined && site !== 'same-origin' && !(safe && site === 'none')) return `a ${site} request may not use the console session`;
  if (safe) return undefined;
  const o = header(req, 'origin');
  if (o === undefined) return 'an unsafe request from the console must carry an Origin header';
  if (o !== origin) return 'the request comes from another origin';
  return undefined;
}

/** The server's own origin as the browser sees it, from the Host header (undefined without one). */
export function originOf(req: RequestLike, tls: boolean): string | undefined {
  const host = header(req, 'host');
  if (!host || !/^[A-Za-z0-9.\-:[\]]{1,262}$/.test(host)) return undefined;
  return `${tls ? 'https' : 'http'}://${host.toLowerCase()}`;
}

export class SessionStore {
  private readonly sessions = new Map<string, Session>();
  private failures: number[] = [];

  constructor(
    private readonly clock: Clock,
    private readonly random: (n: number) => Buffer = randomBytes,
  ) {}

  /** Sessions held now (expired ones are dropped as they are met). */
  get size(): number {
    return this.sessions.size;
  }

  /** A fresh session for `user`: its id (the cookie's value, never stored in clear) and its info. */
  create(user: { name: string; role: string }): { id: string; info: SessionInfo } {
    const now = this.clock.now();
    this.sweep(now);
    while (this.sessions.size >= SessionLimits.maxSessions) {
      const oldest = this.sessions.keys().next().value as string;
      this.sessions.delete(oldest);
    }
    const id = this.random(32).toString('base64url');
    const s: Session = { csrf: this.random(32).toString('base64url'), user: { name: user.name, role: user.role }, createdAt: now, lastSeen: now };
    this.sessions.set(hashId(id), s);
    return { id, info: this.info(s) };
  }

  /** End the session with this id (sign-out); unknown ids are ignored. */
  delete(id: string): void {
    this.sessions.delete(hashId(id));
  }

  /** Count a failed sign-in. */
  recordFailure(): void {
    this.failures.push(this.clock.now());
  }

  /** False while too many sign-ins failed in the current window. */
  signInAllowed(): boolean {
    const since = this.clock.now() - SessionLimits.failureWindowMs;
    this.failures = this.failures.filter((t) => t > since);
    return this.failures.length < SessionLimits.maxFailures;
  }

  /**
   * Decide a request: undefined when it carries no session cookie (another scheme may still accept it),
   * otherwise accepted (and the session's idle clock restarted) or refused with 401 (unknown or expired
   * session) or 403 (cross-site, or an unsafe method without the CSRF token).
   */
  check(req: RequestLike, origin: string | undefined): CheckResult | undefined {
    const id = readCookie(header(req, 'cookie'), SESSION_COOKIE);
    if (id === undefined) return undefined;
    const now = this.clock.now();
    const key = hashId(id);
    const s = this.sessions.get(key);
    if (!s || this.expired(s, now)) {
      this.sessions.delete(key);
      return { ok: false, status: 401, reason: 'the console session expired or is unknown; sign in again' };
    }
    const cross = origin === undefined ? 'the request has no usable Host header' : crossSiteReason(req, origin);
    if (cross) return { ok: false, status: 403, reason: cross };
    if (!SAFE_METHODS.has((req.method ?? 'GET').toUpperCase())) {
      const t = header(req, CSRF_HEADER) ?? '';
      const a = createHash('sha256').update(t).digest();
      const b = createHash('sha256').update(s.csrf).digest();
      if (!timingSafeEqual(a, b)) return { ok: false, status: 403, reason: `missing or wrong ${CSRF_HEADER} header` };
    }
    s.lastSeen = now;
    return { ok: true, info: this.info(s) };
  }

  private info(s: Session): SessionInfo {
    return { csrf: s.csrf, expiresAt: s.createdAt + SessionLimits.absoluteMs, user: { ...s.user } };
  }

  private expired(s: Session, now: number): boolean {
    return now - s.lastSeen >= SessionLimits.idleMs || now - s.createdAt >= SessionLimits.absoluteMs;
  }

  private sweep(now: number): void {
    for (const [k, s] of this.sessions) if (this.expired(s, now)) this.sessions.delete(k);
  }
}

/** Set-Cookie value for a session id (HttpOnly, SameSite=Strict, Path=/, Max-Age in seconds; Secure over TLS). */
export function sessionCookie(id: string, maxAgeMs: number, tls: boolean): string {
  return `${SESSION_COOKIE}=${id}; HttpOnly; SameSite=Strict; Path=/; Max-Age=${Math.max(0, Math.floor(maxAgeMs / 1000))}${tls ? '; Secure' : ''}`;
}
