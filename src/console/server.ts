import { readFile } from 'node:fs/promises';
import type { TLSSocket } from 'node:tls';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { NatsConnection } from 'nats';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import { validatePolicy, type PolicyProblem } from '../policy/index.js';
import { API_BASE } from '../controlplane/api.js';
import { HttpError, type HttpApi, type RouteContext } from '../controlplane/http.js';
import { AdminRole, type AdminIdentity } from '../controlplane/admins.js';
import { lineDiff, prettyJson } from '../controlplane/textdiff.js';
import { CpErrorCode, badRequest, isLabel } from '../controlplane/types.js';
import { mountAuditLive } from './live.js';
import { CONSOLE_CSS, CONSOLE_HTML } from './page.js';
import { SessionLimits, SessionStore, originOf, readCookie, sessionCookie, SESSION_COOKIE, crossSiteReason } from './session.js';

/*
 * The web console, served by the control plane's HTTP server next to the admin API it uses:
 *
 *   GET    /console/                    the page (static; no data in it)
 *   GET    /console/app.js, style.css   its script (built from src/console/web/ by tsc) and style
 *   POST   /console/session  {token}    sign in with an admin user's token (or root's admin token) -> Set-Cookie
 *                                       (HttpOnly, SameSite=Strict) + {csrf, expiresAt, user: {name, role}}
 *   GET    /console/session             the current session's {csrf, expiresAt, user} (401 without one): after a reload
 *   DELETE /console/session             sign out
 *   GET    .../audit/live               the audit stream as server-sent events (live.ts)
 *   POST   .../policies/:namespace/check {text}: the validator's problems and the diff against the current policy,
 *                                       nothing stored
 *
 * Everything else the page shows comes from the documented admin API (agents, audit events, policies,
 * approvals), which accepts the console session as well as the bearer token (session.ts has the checks).
 * A session acts as the user who signed in, with that user's role, and is checked against the admin users
 * on every request: a removed user's session is a 401 at once.
 * Pages carry a Content-Security-Policy that allows only this origin's script and style: the page renders
 * every value with textContent, and the policy is the second wall should that ever slip.
 */

export const CONSOLE_PATH = '/console/';
export const POLICY_CHECK_PATH = `${API_BASE}/policies/:namespace/check`;

const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

export interface ConsoleOptions {
  nc: NatsConnection;
  /** The current policy of a namespace (for the diff preview). */
  getPolicy: (namespace: string) => Promise<{ policy: unknown } | undefined>;
  /** The user's identity now (undefined once removed); default: the identity of the sign-in, unchecked. */
  currentUser?: (name: string) => Promise<AdminIdentity | undefined>;
  clock: Clock;
  log?: Logger;
  /** Where app.js lives (default: web/ beside this module, i.e. dist/console/web/ after `npm run build`). */
  assetsDir?: URL;
}

/** Mount the console's routes and its session scheme on `api` (before api.listen). */
export function mountConsole(api: HttpApi, o: ConsoleOptions): SessionStore {
  const sessions = new SessionStore(o.clock);
  const tlsOf = (req: IncomingMessage) => (req.socket as TLSSocket).encrypted === true;

  api.acceptAuth(async (req) => {
    const r = sessions.check(req, originOf(req, tlsOf(req)));
    if (r === undefined) return undefined;
    if (!r.ok) throw new HttpError(r.status, r.status === 401 ? CpErrorCode.Unauthorized : 'ECONSOLE_CSRF', r.reason);
    const who = o.currentUser ? await o.currentUser(r.info.user.name) : (r.info.user as AdminIdentity);
    if (!who) {
      const id = readCookie(req.headers.cookie, SESSION_COOKIE);
      if (id) sessions.delete(id);
      throw new HttpError(401, CpErrorCode.Unauthorized, `admin user ${r.info.user.name} was removed; sign in as another user`);
    }
    return who;
  });

  const assets = o.assetsDir ?? new URL('./web/', import.meta.url);
  const page = (body: string | Buffer, type: string) => (ctx: RouteContext) => sendPage(ctx.res, 200, type, body);
  api.route('GET', '/console', (ctx) => {
    ctx.res.writeHead(308, { location: CONSOLE_PATH, 'content-length': 0 });
    ctx.res.end();
  }, { auth: 'none' });
  api.route('GET', CONSOLE_PATH, page(CONSOLE_HTML, 'text/html; charset=utf-8'), { auth: 'none' });
  api.route('GET', '/console/style.css', page(CONSOLE_CSS, 'text/css; charset=utf-8'), { auth: 'none' });
  api.route('GET', '/console/app.js', async (ctx) => {
    let js: Buffer;
    try {
      js = await readFile(new URL('app.js', assets));
    } catch {
      throw new HttpError(503, 'ECONSOLE_ASSETS', 'the console script is not built: run `npm run build` (it compiles src/console/web/ into dist/console/web/)');
    }
    sendPage(ctx.res, 200, 'text/javascript; charset=utf-8', js);
  }, { auth: 'none' });

  api.route('POST', '/console/session', async (ctx) => {
    const origin = originOf(ctx.req, tlsOf(ctx.req));
    const cross = origin === undefined ? 'the request has no usable Host header' : crossSiteReason(ctx.req, origin);
    if (cross) throw new HttpError(403, 'ECONSOLE_CSRF', cross);
    if (!sessions.signInAllowed()) throw new HttpError(429, 'ECONSOLE_SIGNIN_LIMIT', `more than ${SessionLimits.maxFailures} failed sign-ins in the last minute; wait a minute`);
    const body = (await ctx.json()) as { token?: unknown } | undefined;
    const token = typeof body?.token === 'string' ? body.token.trim() : '';
    const who = token ? await api.authenticateToken(token) : undefined;
    if (!who) {
      sessions.recordFailure();
      throw new HttpError(401, CpErrorCode.Unauthorized, 'unknown admin token: use a token from `lattice admin user add`, or root\'s in <state>/control-plane/admin-token');
    }
    const { id, info } = sessions.create(who);
    ctx.res.setHeader('set-cookie', sessionCookie(id, SessionLimits.absoluteMs, tlsOf(ctx.req)));
    return { status: 201, body: info };
  }, { auth: 'none' });

  api.route('GET', '/console/session', (ctx) => {
    const r = sessions.check(ctx.req, originOf(ctx.req, tlsOf(ctx.req)));
    if (!r?.ok) throw new HttpError(401, CpErrorCode.Unauthorized, r?.reason ?? 'not signed in');
    return r.info;
  }, { auth: 'none' });

  api.route('DELETE', '/console/session', (ctx) => {
    const r = sessions.check(ctx.req, originOf(ctx.req, tlsOf(ctx.req)));
    if (!r) return { status: 204 };
    if (!r.ok && r.status === 403) throw new HttpError(403, 'ECONSOLE_CSRF', r.reason);
    const id = readCookie(ctx.req.headers.cookie, SESSION_COOKIE);
    if (id) sessions.delete(id);
    ctx.res.setHeader('set-cookie', sessionCookie('', 0, tlsOf(ctx.req)));
    return { status: 204 };
  }, { auth: 'none' });

  api.route('POST', POLICY_CHECK_PATH, async (ctx) => {
    const ns = ctx.params.namespace;
    if (!isLabel(ns)) throw badRequest('namespace must be a DNS label');
    const body = (await ctx.json()) as { text?: unknown } | undefined;
    if (typeof body?.text !== 'string') throw badRequest('body must be {"text": "<the policy as JSON text>"}');
    const current = (await o.getPolicy(ns))?.policy;
    return checkPolicyText(body.text, current);
  }, { role: AdminRole.Viewer });

  mountAuditLive(api, { nc: o.nc, log: o.log });
  return sessions;
}

export interface PolicyCheck {
  ok: boolean;
  /** The validator's problems (path, message, fix); a JSON syntax error is one problem at path "". */
  problems: PolicyProblem[];
  /** Line diff of the current policy and the edited one (pretty JSON; "" when equal or not JSON). */
  diff: string;
  /** Whether the namespace has a policy now. */
  hasCurrent: boolean;
}

/** Validate a policy given as JSON text and diff it against `current`. Pure. */
export function checkPolicyText(text: string, current: unknown): PolicyCheck {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    const message = `not valid JSON: ${(err as Error).message.split('\n')[0]}`;
    return { ok: false, problems: [{ path: '', message, fix: 'fix the JSON syntax (quotes, commas, brackets)' }], diff: '', hasCurrent: current !== undefined };
  }
  const v = validatePolicy(doc);
  return { ok: v.ok, problems: v.ok ? [] : v.problems, diff: lineDiff(prettyJson(current), prettyJson(doc)), hasCurrent: current !== undefined };
}

function sendPage(res: ServerResponse, status: number, type: string, body: string | Buffer): void {
  res.writeHead(status, {
    'content-type': type,
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'content-security-policy': CSP,
    'x-content-type-options': 'nosniff',
    'x-frame-options': 'DENY',
    'referrer-policy': 'no-referrer',
  });
  res.end(body);
}
