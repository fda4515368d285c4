/**
 * Typed client for the lattice daemon's API (src/daemon/api.ts, api/openapi.json): the package's
 * library export (`import { LatticeClient } from 'lattice'`).
 *
 *   const c = new LatticeClient({ socket: '/var/lib/lattice/daemon.sock' });
 *   const sb = await c.create({ rootfs: '/srv/rootfs', cmd: ['sh', '-c', 'echo hi; sleep 60'] });
 *   for await (const chunk of c.logs(sb.id, { follow: true })) process.stdout.write(chunk);
 *   await c.stop(sb.id); await c.remove(sb.id);
 *
 * HTTP/1.1 over the Unix socket (node:http with socketPath); no dependency. Errors: DaemonUnreachableError
 * when nothing answers on the socket, DaemonApiError (with the daemon's `code` and HTTP `status`) for an
 * error reply.
 */
import { request, type IncomingMessage } from 'node:http';
import { LatticeError } from '../errors.js';
import type { CreateRequest, ErrorBody, Health, PoolSpec, PoolState, SandboxView } from '../daemon/api.js';

export type { CreateRequest, Health, SandboxView, NetworkSpec, PoolSpec, PoolState } from '../daemon/api.js';
export { defaultSocket, socketAnswers } from '../daemon/socket.js';

/** Nothing answers on the daemon's socket. */
export class DaemonUnreachableError extends LatticeError {
  override readonly name = 'DaemonUnreachableError';
  constructor(socket: string, options?: { cause?: unknown }) {
    super('EDAEMON_UNREACHABLE', `no lattice daemon answers on ${socket}; start one with: lattice daemon`, options);
  }
}

/** The daemon answered with an error: `code` is its stable code (src/errors.ts), `status` the HTTP status. */
export class DaemonApiError extends LatticeError {
  override readonly name = 'DaemonApiError';
  constructor(
    code: string,
    message: string,
    readonly status: number,
  ) {
    // 4xx: the caller's input (exit 2, as UsageError); 5xx: the daemon's own failure.
    super(code, message, status < 500 ? { exitCode: 2 } : {});
  }
}

export interface LatticeClientOptions {
  /** The daemon's Unix socket (`lattice daemon` prints it; default <state>/daemon.sock). */
  socket: string;
}

/** A raw reply: status, headers and the body as a stream (logs) or collected. */
interface Reply {
  status: number;
  res: IncomingMessage;
}

export class LatticeClient {
  constructor(private readonly o: LatticeClientOptions) {}

  /** GET /v1/health: whether a daemon answers, its pid and version. */
  health(): Promise<Health> {
    return this.json('GET', '/v1/health');
  }

  /** GET /v1/sandboxes: every sandbox of the daemon's state dir. */
  list(): Promise<SandboxView[]> {
    return this.json('GET', '/v1/sandboxes');
  }

  /** GET /v1/pool: the daemon's warm pools (`lattice daemon --pool`): size, parked ids, members starting. */
  pool(): Promise<PoolState[]> {
    return this.json('GET', '/v1/pool');
  }

  /**
   * PUT /v1/pool: make a warm pool, change its size, or remove it (size 0); a pool is named by its source,
   * policy and limits. Resolves once the parked sandboxes beyond the new size have ended.
   */
  setPool(spec: PoolSpec): Promise<PoolState> {
    return this.json('PUT', '/v1/pool', spec);
  }

  /** POST /v1/sandboxes: start a sandbox (a parked one of a matching warm pool, else a new one); resolves once it runs. */
  create(req: CreateRequest): Promise<SandboxView> {
    return this.json('POST', '/v1/sandboxes', req);
  }

  /** GET /v1/sandboxes/{ref} (id or name). */
  get(ref: string): Promise<SandboxView> {
    return this.json('GET', `/v1/sandboxes/${encodeURIComponent(ref)}`);
  }

  /** POST .../stop: SIGTERM, SIGKILL after its stop timeout; resolves after it exited. */
  stop(ref: string): Promise<SandboxView> {
    return this.json('POST', `/v1/sandboxes/${encodeURIComponent(ref)}/stop`);
  }

  /** POST .../wait: resolves once the sandbox exited (exitCode set). */
  wait(ref: string): Promise<SandboxView> {
    return this.json('POST', `/v1/sandboxes/${encodeURIComponent(ref)}/wait`);
  }

  /** DELETE /v1/sandboxes/{ref}: remove a finished sandbox (409 ESANDBOX_RUNNING while it runs). */
  async remove(ref: string): Promise<void> {
    await this.json('DELETE', `/v1/sandboxes/${encodeURIComponent(ref)}`);
  }

  /** create + wait: run a command to its end; resolves with its exit code and its merged output. */
  async run(req: CreateRequest): Promise<{ sandbox: SandboxView; exitCode: number; output: Buffer }> {
    const sb = await this.create(req);
    const done = await this.wait(sb.id);
    const chunks: Buffer[] = [];
    for await (const c of this.logs(sb.id)) chunks.push(c);
    return { sandbox: done, exitCode: done.exitCode ?? 1, output: Buffer.concat(chunks) };
  }

  /** GET .../logs: the sandbox's merged stdout and stderr; with follow, chunks until it exits. */
  async *logs(ref: string, opts: { follow?: boolean } = {}): AsyncGenerator<Buffer> {
    const { status, res } = await this.send('GET', `/v1/sandboxes/${encodeURIComponent(ref)}/logs${opts.follow ? '?follow=true' : ''}`);
    if (status !== 200) throw await apiError(res, status);
    for await (const c of res as AsyncIterable<Buffer>) yield c;
  }

  private async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const { status, res } = await this.send(method, path, body);
    if (status >= 400) throw await apiError(res, status);
    const text = (await collect(res)).toString('utf8');
    return (text ? JSON.parse(text) : undefined) as T;
  }

  private send(method: string, path: string, body?: unknown): Promise<Reply> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request(
        { socketPath: this.o.socket, method, path, headers: payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {} },
        (res) => resolve({ status: res.statusCode ?? 0, res }),
      );
      req.once('error', (err: NodeJS.ErrnoException) =>
        reject(err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? new DaemonUnreachableError(this.o.socket, { cause: err }) : err),
      );
      req.end(payload);
    });
  }
}

async function collect(res: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of res as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

async function apiError(res: IncomingMessage, status: number): Promise<DaemonApiError> {
  const text = (await collect(res)).toString('utf8');
  try {
    const b = JSON.parse(text) as ErrorBody;
    return new DaemonApiError(b.error.code, b.error.message, status);
  } catch {
    return new DaemonApiError('EDAEMON', `the daemon answered ${status}: ${text.slice(0, 200)}`, status);
  }
}
