/**
 * `lattice daemon`: the Supervisor behind an HTTP/JSON API on a Unix socket (routes in api.ts).
 *
 *   start    refuse if another daemon answers on the socket; remove a stale socket file; reap what a
 *            killed daemon left (collectOrphans: containers, netns, egress tables; records kept as reaped);
 *            start the warm pools (filled in the background): the --pool flags (a bad one stops the start),
 *            then the stored pools of run-time sets (pool-store.ts; a bad one is skipped and reported); listen; chmod 0600 (root only), or 0660 with the socket's group set to --group
 *   request  JSON in, JSON out; errors as { error: { code, message } } with 400 (bad input), 404 (no such
 *            sandbox), 409 (running), 500 (anything else)
 *   close    stop every sandbox (SIGTERM, SIGKILL after its stop timeout), close the socket, remove it
 *
 * The socket is the only door: whoever can connect can run sandboxes as root, so its mode is the
 * access control (as Docker's /var/run/docker.sock).
 */
import { chmod, chown, unlink } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Logger } from 'pino';
import { LatticeError, UsageError, errorMessage } from '../errors.js';
import { collectOrphans, type EngineCleaners } from '../sandbox/gc.js';
import { SandboxRegistry } from '../sandbox/registry.js';
import { readJsonBody } from '../httpbody.js';
import { socketAnswers } from './socket.js';
import type { z } from 'zod';
import { CreateRequest, PoolSpec, type ErrorBody, type Health } from './api.js';
import { SandboxNotFoundError, Supervisor } from './supervisor.js';
import { OpsRoutes } from './ops-routes.js';
import type { Duplex } from 'node:stream';

/** The socket is held by a live daemon, or cannot be made. */
export class DaemonSocketError extends LatticeError {
  override readonly name = 'DaemonSocketError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('EDAEMON_SOCKET', message, options);
  }
}

export interface DaemonOptions {
  stateDir: string;
  socket: string;
  /** A group id whose members may use the socket (mode 0660); default: root only (0600). */
  gid?: number;
  version: string;
  log: Logger;
  cleaners: EngineCleaners;
  /** Warm pools to keep filled (`--pool ROOTFS[:POLICY]=N`; src/daemon/pool.ts). */
  pools?: readonly PoolSpec[];
  /** Pools of run-time sets from the pool store, set after `pools`; one that fails is skipped (RunningDaemon.skippedPools). */
  restoredPools?: readonly PoolSpec[];
  /** Records each run-time set (PUT /v1/pool) so the next start restores it (pool-store.ts). */
  poolStore?: { record(spec: PoolSpec): Promise<void> };
}

/** Largest request body (bytes): a create request is a few hundred. */
const MAX_BODY = 1 << 20;

/** A running daemon: close() stops its sandboxes and removes its socket. */
export interface RunningDaemon {
  readonly supervisor: Supervisor;
  /** Ids reaped at start (sandboxes of a daemon that died). */
  readonly reaped: string[];
  /** Restored pools that no longer validate (source gone, policy unparsable), with why; not started. */
  readonly skippedPools: { spec: PoolSpec; reason: string }[];
  close(): Promise<void>;
}

/** Start the daemon (see the top of this file). Errors: EDAEMON_SOCKET when another daemon answers or listen fails. */
export async function startDaemon(o: DaemonOptions): Promise<RunningDaemon> {
  if (await socketAnswers(o.socket)) throw new DaemonSocketError(`a daemon already answers on ${o.socket}; stop it first, or give --socket PATH`);
  await unlink(o.socket).catch(() => undefined);
  const { removed } = await collectOrphans(new SandboxRegistry(o.stateDir), o.cleaners);
  if (removed.length) o.log.warn({ reaped: removed }, 'reaped sandboxes of a daemon that died');
  const supervisor = new Supervisor({ stateDir: o.stateDir, log: o.log, cleaners: o.cleaners, poolStore: o.poolStore });
  // Checked one by one before the socket listens: a bad pool flag stops the daemon's start, a stale stored pool does not.
  for (const spec of o.pools ?? []) await supervisor.setPool(spec);
  const skippedPools: RunningDaemon['skippedPools'] = [];
  for (const spec of o.restoredPools ?? []) {
    try {
      await supervisor.setPool(spec);
    } catch (err) {
      skippedPools.push({ spec, reason: errorMessage(err) });
    }
  }
  const ops = new OpsRoutes({ supervisor, stateDir: o.stateDir, log: o.log });
  const server = createServer((req, res) => void (ops.handles(req) ? ops.request(req, res) : route(req, res, supervisor, o)));
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => ops.upgrade(req, socket, head));
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new DaemonSocketError(`cannot listen on ${o.socket}: ${errorMessage(err)}; check the directory exists and is writable`, { cause: err })));
    // Created 0600 under a umask, then opened up to the group only if asked.
    const old = process.umask(0o177);
    try {
      server.listen(o.socket, () => resolve());
    } finally {
      process.umask(old);
    }
  });
  if (o.gid !== undefined) {
    await chown(o.socket, 0, o.gid);
    await chmod(o.socket, 0o660);
  } else await chmod(o.socket, 0o600);
  return {
    supervisor,
    reaped: removed,
    skippedPools,
    close: async () => {
      await supervisor.stopAll();
      await closeServer(server);
      await unlink(o.socket).catch(() => undefined);
    },
  };
}

function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

function send(res: ServerResponse, status: number, body?: unknown): void {
  if (body === undefined) {
    res.writeHead(status).end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
}

/** HTTP status of an error: 400 bad input, 404 unknown sandbox, 409 running, 500 the rest. */
export function statusOfError(err: unknown): number {
  if (err instanceof BodyError) return err.status;
  if (err instanceof SandboxNotFoundError) return 404;
  if (err instanceof LatticeError && err.code === 'ESANDBOX_RUNNING') return 409;
  if (err instanceof UsageError) return 400;
  if (err instanceof LatticeError && err.exitCode === 2) return 400;
  return 500;
}

async function route(req: IncomingMessage, res: ServerResponse, sup: Supervisor, o: DaemonOptions): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://daemon');
  const parts = url.pathname.split('/').filter(Boolean).map(decodeURIComponent);
  const method = req.method ?? 'GET';
  try {
    if (parts[0] !== 'v1') return send(res, 404, notFound(url.pathname));
    if (parts[1] === 'health' && parts.length === 2 && method === 'GET') {
      const h: Health = { pid: process.pid, version: o.version, socket: o.socket, sandboxes: sup.running };
      return send(res, 200, h);
    }
    if (parts[1] === 'pool' && parts.length === 2 && method === 'GET') return send(res, 200, sup.poolState());
    if (parts[1] === 'pool' && parts.length === 2 && method === 'PUT') return send(res, 200, await sup.setPool(await checkedBody(req, PoolSpec), { store: true }));
    if (parts[1] !== 'sandboxes') return send(res, 404, notFound(url.pathname));
    if (parts.length === 2 && method === 'GET') return send(res, 200, await sup.list());
    if (parts.length === 2 && method === 'POST') {
      return send(res, 201, await sup.create(await checkedBody(req, CreateRequest)));
    }
    const ref = parts[2]!;
    if (parts.length === 3 && method === 'GET') return send(res, 200, await sup.get(ref));
    if (parts.length === 3 && method === 'DELETE') {
      await sup.remove(ref);
      return send(res, 204);
    }
    if (parts.length === 4 && method === 'POST' && parts[3] === 'stop') return send(res, 200, await sup.stop(ref));
    if (parts.length === 4 && method === 'POST' && parts[3] === 'wait') return send(res, 200, await sup.wait(ref));
    if (parts.length === 4 && method === 'GET' && parts[3] === 'logs') {
      const follow = url.searchParams.get('follow') === 'true';
      await sup.get(ref); // 404 before the 200 header is out
      const ac = new AbortController();
      res.once('close', () => ac.abort());
      res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8' });
      await sup.logs(ref, follow, (b) => res.write(b), ac.signal);
      res.end();
      return;
    }
    return send(res, 404, notFound(url.pathname));
  } catch (err) {
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const status = statusOfError(err);
    if (status === 500) o.log.warn({ err: errorMessage(err), path: url.pathname }, 'daemon request failed');
    const body: ErrorBody = { error: { code: err instanceof LatticeError ? err.code : 'EDAEMON', message: errorMessage(err) } };
    send(res, status, body);
  }
}

/** A body that could not be read (413: too large; 400: not JSON). */
class BodyError extends UsageError {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** The request's JSON body checked against `schema`. Errors: UsageError (400) naming each field that is wrong. */
async function checkedBody<T extends z.ZodTypeAny>(req: IncomingMessage, schema: T): Promise<z.output<T>> {
  const body = await readJsonBody(req, MAX_BODY);
  if (!body.ok) throw new BodyError(body.message, body.status);
  const parsed = schema.safeParse(body.value ?? {});
  if (!parsed.success) throw new UsageError(parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '));
  return parsed.data as z.output<T>;
}

function notFound(path: string): ErrorBody {
  return { error: { code: 'EDAEMON_ROUTE', message: `no such route: ${path}; see api/openapi.json` } };
}
