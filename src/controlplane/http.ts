import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { createHash, timingSafeEqual } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../log.js';
import { LatticeError } from '../errors.js';
import { readJsonBody } from '../httpbody.js';
import { CpErrorCode, ControlPlaneError } from './types.js';
import { unavailable, unavailableMessage } from './natskv.js';
import { AdminRole, defaultRole, forbiddenReason, roleAllows, type AdminIdentity } from './admins.js';

/**
 * A small JSON-over-HTTP server (node:http, no framework) with admin bearer-token auth and a route
 * table other modules can add to: `api.route('GET', '/api/v1/agent-isolation/audit/:id', handler)`.
 * Every admin request is authenticated to a user (admins.ts) and checked against the role its route needs.
 */

export const MAX_BODY_BYTES = 1024 * 1024;

export interface RouteContext {
  readonly req: IncomingMessage;
  /** For handlers that answer themselves (a stream, a static file): once headers are sent, the result is ignored. */
  readonly res: ServerResponse;
  readonly url: URL;
  /** `:name` segments of the pattern, URL-decoded. */
  readonly params: Readonly<Record<string, string>>;
  /** The verified caller on 'admin' routes (undefined on public ones). */
  readonly user?: AdminIdentity;
  /** The parsed JSON body (undefined when empty); a 400 for anything that is not JSON or too big. */
  json(): Promise<unknown>;
}

/** What a handler returns: a body to send as JSON with 200, or an explicit status. */
export type RouteResult = { status: number; body?: unknown } | unknown;
export type RouteHandler = (ctx: RouteContext) => Promise<RouteResult> | RouteResult;

export interface RouteOptions {
  /** 'admin' (default) requires the admin bearer token (or an accepted {@link AdminAuth}); 'none' is public. */
  auth?: 'admin' | 'none';
  /** The least role an 'admin' route needs (admins.ts); default: viewer for GET/HEAD, admin otherwise. */
  role?: AdminRole;
}

/** An HTTP failure with its status; handlers may throw it (ControlPlaneErrors are mapped too). */
export class HttpError extends LatticeError {
  override readonly name = 'HttpError';
  constructor(
    readonly status: number,
    code: string,
    message: string,
  ) {
    super(code, message);
  }
}

/** A handler's result sent as is (not JSON), e.g. Prometheus text on GET /metrics. */
export class RawBody {
  constructor(
    readonly text: string,
    readonly contentType: string,
  ) {}
}

/** Sockets the admin API holds at once; more are closed on accept. */
export const DEFAULT_MAX_CONNECTIONS = 256;

const STATUS_OF: Record<string, number> = {
  [CpErrorCode.BadRequest]: 400,
  [CpErrorCode.Unauthorized]: 401,
  [CpErrorCode.NotFound]: 404,
  [CpErrorCode.NameTaken]: 409,
  [CpErrorCode.KeyInUse]: 409,
  [CpErrorCode.Revoked]: 403,
  [CpErrorCode.TokenUnknown]: 403,
  [CpErrorCode.TokenExpired]: 403,
  [CpErrorCode.TokenExhausted]: 403,
  [CpErrorCode.IpamExhausted]: 507,
  [CpErrorCode.Busy]: 503,
  [CpErrorCode.Forbidden]: 403,
  [CpErrorCode.Challenge]: 401,
};

/**
 * A second way to prove who is calling (the console's session cookie): an identity accepts the request,
 * undefined leaves it to the bearer token; it may throw an HttpError (401/403) for a request it must refuse.
 */
export type AdminAuth = (req: IncomingMessage) => Promise<AdminIdentity | undefined> | AdminIdentity | undefined;

/** Turns a bearer token into the identity it proves (admins.ts AdminUsers.authenticate), or undefined. */
export type TokenAuthenticator = (token: string) => Promise<AdminIdentity | undefined>;

interface Route {
  method: string;
  segments: string[];
  handler: RouteHandler;
  auth: 'admin' | 'none';
  role: AdminRole;
}

const digest = (s: string) => createHash('sha256').update(s).digest();

/**
 * The control plane's HTTP/1.1 server: JSON routes mounted before `listen`, admin routes behind the
 * bearer token (compared in constant time) or a mounted `AdminAuth` (the console's session), bodies read
 * through the one bounded reader, explicit limits on headers time, request time and connections.
 * Errors reply as `{code, message}` with the HTTP status of their class.
 */
export class HttpApi {
  private readonly routes: Route[] = [];
  private readonly auths: AdminAuth[] = [];
  private server?: Server | HttpsServer;

  constructor(
    private readonly opts: {
      adminToken: string;
      /** Bearer tokens beyond the admin token (per-user tokens); without it only the admin token (as root) is accepted. */
      authenticate?: TokenAuthenticator;
      log?: Logger;
      maxConnections?: number;
    },
  ) {}

  route(method: string, pattern: string, handler: RouteHandler, options: RouteOptions = {}): this {
    if (!pattern.startsWith('/')) throw new Error(`route pattern must start with /: ${pattern}`);
    this.routes.push({ method: method.toUpperCase(), segments: pattern.split('/').slice(1), handler, auth: options.auth ?? 'admin', role: options.role ?? defaultRole(method) });
    return this;
  }

  /** Accept `auth` as well as the bearer token on 'admin' routes; mounted like a route, before listen(). */
  acceptAuth(auth: AdminAuth): this {
    this.auths.push(auth);
    return this;
  }

  /** True when `token` is the admin token (constant time). */
  isAdminToken(token: string): boolean {
    return timingSafeEqual(digest(token), digest(this.opts.adminToken));
  }

  /** The identity a bearer token proves (root for the admin token), or undefined. */
  async authenticateToken(token: string): Promise<AdminIdentity | undefined> {
    if (this.opts.authenticate) return this.opts.authenticate(token);
    return this.isAdminToken(token) ? { name: 'root', role: AdminRole.Admin } : undefined;
  }

  /** Listen on host:port; with `tls` (PEM certificate chain and key) the API is served over HTTPS. */
  async listen(host: string, port: number, tls?: { cert: string; key: string }): Promise<{ url: string; port: number }> {
    // Slow or idle clients cannot hold the server: headers within 5 s (checked every second, not every
    // 30 s as by default), a whole request within 30 s, at most maxConnections sockets at once.
    const limits = { headersTimeout: 5_000, requestTimeout: 30_000, connectionsCheckingInterval: 1_000 };
    const handler = (req: IncomingMessage, res: ServerResponse) => void this.handle(req, res);
    const server = tls ? createHttpsServer({ ...limits, cert: tls.cert, key: tls.key }, handler) : createServer(limits, handler);
    server.maxConnections = this.opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    const addr = server.address() as AddressInfo;
    const h = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
    return { url: `${tls ? 'https' : 'http'}://${h}:${addr.port}`, port: addr.port };
  }

  async close(): Promise<void> {
    const s = this.server;
    if (!s) return;
    this.server = undefined;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }

  /** Who sent `req`: the bearer token's user, else a mounted AdminAuth's (the console session), else undefined. */
  private async caller(req: IncomingMessage): Promise<AdminIdentity | undefined> {
    const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
    if (m) {
      const who = await this.authenticateToken(m[1]);
      if (who) return who;
    }
    for (const a of this.auths) {
      const who = await a(req);
      if (who) return who;
    }
    return undefined;
  }

  private match(method: string, path: string): { route?: Route; params: Record<string, string>; pathMatched: boolean } {
    const segs = path.split('/').slice(1);
    let pathMatched = false;
    for (const r of this.routes) {
      if (r.segments.length !== segs.length) continue;
      const params: Record<string, string> = {};
      let ok = true;
      for (let i = 0; i < segs.length && ok; i++) {
        const p = r.segments[i];
        if (p.startsWith(':')) {
          try {
            params[p.slice(1)] = decodeURIComponent(segs[i]);
          } catch {
            ok = false;
          }
          if (!segs[i]) ok = false;
        } else ok = p === segs[i];
      }
      if (!ok) continue;
      pathMatched = true;
      if (r.method === method) return { route: r, params, pathMatched };
    }
    return { params: {}, pathMatched };
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      const { route, params, pathMatched } = this.match(req.method ?? 'GET', url.pathname);
      if (!route) {
        throw pathMatched ? new HttpError(405, 'EMETHOD', `method ${req.method} not allowed on ${url.pathname}`) : new HttpError(404, 'ENOTFOUND', `no route ${url.pathname}`);
      }
      let user: AdminIdentity | undefined;
      if (route.auth === 'admin') {
        user = await this.caller(req);
        if (!user) {
          res.setHeader('www-authenticate', 'Bearer');
          throw new HttpError(401, CpErrorCode.Unauthorized, 'missing, wrong or removed admin token (Authorization: Bearer <token>)');
        }
        if (!roleAllows(user.role, route.role)) throw new HttpError(403, CpErrorCode.Forbidden, forbiddenReason(user, route.role, route.method, url.pathname));
      }
      const result = await route.handler({ req, res, url, params, ...(user ? { user } : {}), json: () => readJson(req) });
      if (isStatusResult(result)) send(res, result.status, result.body);
      else send(res, 200, result);
    } catch (err) {
      const { status, code, message } = describeError(err);
      if (status >= 500) this.opts.log?.error({ err: (err as Error)?.message }, 'http api handler failed');
      send(res, status, { error: { code, message } });
      // A body we refused to read would otherwise keep the connection busy.
      if (!req.complete) req.resume();
    }
  }
}

function isStatusResult(r: unknown): r is { status: number; body?: unknown } {
  return typeof r === 'object' && r !== null && typeof (r as { status?: unknown }).status === 'number' && Object.keys(r).every((k) => k === 'status' || k === 'body');
}

/** The HTTP answer to a handler's error: its status, stable code and one-line message (500 EINTERNAL for the unexpected). */
export function describeError(err: unknown): { status: number; code: string; message: string } {
  if (err instanceof HttpError) return { status: err.status, code: err.code, message: err.message };
  if (err instanceof ControlPlaneError) return { status: STATUS_OF[err.code] ?? 500, code: err.code, message: err.message };
  if (err instanceof LatticeError && err.code === 'EUSAGE') return { status: 400, code: CpErrorCode.BadRequest, message: err.message };
  // A NATS node down, a leader election, or this instance stopping: 503 EBUSY, which clients retry (natskv.ts).
  const why = unavailable(err);
  if (why) return { status: 503, code: CpErrorCode.Busy, message: unavailableMessage(why) };
  return { status: 500, code: CpErrorCode.Internal, message: 'internal error; see the control-plane log' };
}

function send(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) return;
  const raw = body instanceof RawBody;
  const data = raw ? body.text : body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { 'content-type': raw ? body.contentType : 'application/json', 'content-length': Buffer.byteLength(data), 'cache-control': 'no-store' });
  res.end(data);
}

/** The body as JSON (undefined when empty). @throws HttpError 413 above MAX_BODY_BYTES, 400 when not JSON. */
async function readJson(req: IncomingMessage): Promise<unknown> {
  const body = await readJsonBody(req, MAX_BODY_BYTES);
  if (!body.ok) throw new HttpError(body.status, CpErrorCode.BadRequest, body.message);
  return body.value;
}

/**
 * The verified caller's name for a field a client may still send (`by`, `proposer`): the field may be
 * absent or equal to it; a different name is refused (400) rather than recorded, since the API records
 * who authenticated, not who a client says it is.
 */
export function callerName(ctx: Pick<RouteContext, 'user'>, claimed: unknown, field: string): string {
  const name = ctx.user?.name;
  if (name === undefined) throw new HttpError(401, CpErrorCode.Unauthorized, 'this route needs an admin identity');
  if (claimed !== undefined && claimed !== name) {
    throw new HttpError(400, CpErrorCode.BadRequest, `${field} "${String(claimed).slice(0, 64)}" is not the signed-in user ${name}; the API records the user of the token, so leave ${field} out`);
  }
  return name;
}
