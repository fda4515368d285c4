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
import { posix } from 'node:path';
import { PassThrough, Readable, Writable, type Duplex } from 'node:stream';
import { LatticeError, UsageError } from '../errors.js';
import type { CreateRequest, ErrorBody, Health, PoolSpec, PoolState, SandboxView } from '../daemon/api.js';
import { EXEC_UPGRADE, encodeData, encodeFrame, encodeResize, FrameDecoder, Stream, type ExecExit } from '../daemon/frames.js';
import type { CheckpointReply, CheckpointRequest, ExecRequest, RestoreRequest } from '../daemon/ops-routes.js';

export type { CreateRequest, Health, SandboxView, NetworkSpec, PoolSpec, PoolState } from '../daemon/api.js';
export type { ExecRequest, PathStat, CheckpointReply, RestoreRequest } from '../daemon/ops-routes.js';
export type { ExecExit } from '../daemon/frames.js';
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

  // ---- Working inside a running sandbox (issue 19 items 3-4; src/daemon/ops-routes.ts) ----

  /**
   * POST .../exec (Upgrade: lattice-exec): run `req.cmd` in the running sandbox `ref`. Resolves once the
   * process started, with its streams: write `stdin` (passed only with `req.stdin`; end() closes it), read
   * `stdout` and `stderr` (with `req.tty` the terminal's output is all on stdout), `signal()` reaches the
   * process, `resize()` the terminal; `exit` resolves with { exitCode, error? } (127/126 and the error when
   * the command could not start). `close()` gives up: the daemon sends SIGTERM (SIGKILL after
   * req.stopTimeoutSeconds). Errors: DaemonApiError before the start (404 no such sandbox, 409 not
   * running, 400 bad request or user); `exit` rejects with EDAEMON when the stream breaks off.
   */
  exec(ref: string, req: ExecRequest): Promise<ExecSession> {
    const payload = JSON.stringify(req);
    return new Promise((resolve, reject) => {
      const r = request({
        socketPath: this.o.socket,
        method: 'POST',
        path: `/v1/sandboxes/${encodeURIComponent(ref)}/exec`,
        headers: { connection: 'Upgrade', upgrade: EXEC_UPGRADE, 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      });
      r.once('upgrade', (_res, socket, head) => resolve(execSession(socket, head)));
      r.once('response', (res) => void apiError(res, res.statusCode ?? 0).then(reject, reject));
      r.once('error', (err: NodeJS.ErrnoException) => reject(err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? new DaemonUnreachableError(this.o.socket, { cause: err }) : err));
      r.end(payload);
    });
  }

  /**
   * Copy `sandboxPath` out of the running sandbox `ref` to `hostPath` (Docker's rules: into an existing
   * directory under its own name, else as the new name). The tar the daemon streams is the sandbox's:
   * it is extracted here by the hardened extractor (no entry outside DST, no write through a symlink,
   * setuid cleared), symlinks arrive as symlinks. Returns where it landed.
   * Errors: UsageError (DST's parent missing), DaemonApiError (400 tar refused in the sandbox, 404, 409),
   * ImageExtractError (a hostile entry: nothing put in place).
   */
  async cpOut(ref: string, sandboxPath: string, hostPath: string): Promise<string> {
    const { copyOutTarget, landTar, SandboxCopyError } = await import('../sandbox/ops/cp.js');
    const final = await copyOutTarget(sandboxPath, hostPath);
    const { status, res } = await this.send('GET', `/v1/sandboxes/${encodeURIComponent(ref)}/archive?path=${encodeURIComponent(sandboxPath)}`);
    if (status !== 200) throw await apiError(res, status);
    const ended = new Promise<boolean>((resolve) => {
      res.once('end', () => resolve(res.complete));
      res.once('close', () => resolve(res.complete));
      res.once('error', () => resolve(false));
    });
    const source = {
      stream: res,
      done: async () => {
        if (!(await ended)) throw new SandboxCopyError(`copying ${ref}:${sandboxPath}: the daemon's stream broke off (tar failed in the sandbox?); nothing was put in place`);
      },
      abort: async () => void res.destroy(),
    };
    return landTar(source, `${ref}:${sandboxPath}`, posix.basename(posix.normalize(sandboxPath)), final);
  }

  /**
   * Copy host `hostPath` (a file or a directory, its symlinks as links) into the running sandbox `ref` at
   * `sandboxPath` (Docker's rules, as cpOut). The writes happen inside the sandbox (tar -x there).
   * Returns the path inside the sandbox. Errors: UsageError (SRC missing), DaemonApiError (400 tar refused
   * in the sandbox: read-only, no such directory; 404; 409), SandboxCopyError (reading SRC failed).
   */
  async cpIn(ref: string, hostPath: string, sandboxPath: string): Promise<string> {
    const { copyInTarget, packHost, SandboxCopyError } = await import('../sandbox/ops/cp.js');
    const { lstat } = await import('node:fs/promises');
    if (!(await lstat(hostPath).catch(() => undefined))) throw new UsageError(`${hostPath} does not exist on the host`);
    const at = await this.json<{ directory: boolean }>('GET', `/v1/sandboxes/${encodeURIComponent(ref)}/stat?path=${encodeURIComponent(sandboxPath)}`);
    const { destDir, destName } = copyInTarget(at.directory, hostPath, sandboxPath);
    const pack = packHost(hostPath, destName);
    const sent = this.send('PUT', `/v1/sandboxes/${encodeURIComponent(ref)}/archive?path=${encodeURIComponent(destDir)}`, pack.stdout!, 'application/x-tar').then(
      async ({ status, res }) => (status === 204 ? (res.resume(), undefined) : apiError(res, status)),
    );
    const [packed, failed] = await Promise.all([pack, sent]);
    if (packed.exitCode !== 0) throw new SandboxCopyError(`reading ${hostPath} on the host failed: ${String(packed.stderr).trim().split('\n').at(-1) ?? ''}`);
    if (failed) throw failed;
    return posix.join(destDir, destName);
  }

  /** POST .../pause: freeze every process of the sandbox (409 ESANDBOX_PAUSED when it is). */
  async pause(ref: string): Promise<void> {
    await this.json('POST', `/v1/sandboxes/${encodeURIComponent(ref)}/pause`);
  }

  /** POST .../resume: thaw a paused sandbox (409 ESANDBOX_NOT_PAUSED when it is not). */
  async resume(ref: string): Promise<void> {
    await this.json('POST', `/v1/sandboxes/${encodeURIComponent(ref)}/resume`);
  }

  /**
   * POST .../checkpoint: save the sandbox to `to` (an absolute, new or empty directory on the daemon's
   * host, made 0700; it holds the sandbox's whole memory) and stop it; restore(TO) or `lattice sandbox
   * restore TO` continues it. Errors: DaemonApiError 400 (TO), 409 (not running; a network checkpoint cannot carry; a TCP connection held).
   */
  checkpoint(ref: string, to: string): Promise<CheckpointReply> {
    return this.json('POST', `/v1/sandboxes/${encodeURIComponent(ref)}/checkpoint`, { to } satisfies CheckpointRequest);
  }

  /**
   * POST /v1/sandboxes/restore: continue the checkpoint `from` (a directory POST .../checkpoint wrote, on the
   * daemon's host) as a running daemon sandbox, named `name` (default: the checkpointed one's); resolves with
   * it once it runs (logs, stop, remove, exec work on it). Errors: DaemonApiError 400 (not a checkpoint, or
   * one of an enrolled agent: `lattice sandbox restore` continues those), 409 (a running sandbox has the name).
   */
  restore(from: string, o: Omit<RestoreRequest, 'from'> = {}): Promise<SandboxView> {
    return this.json('POST', '/v1/sandboxes/restore', { from, ...o } satisfies RestoreRequest);
  }

  private async json<T>(method: string, path: string, body?: unknown): Promise<T> {
    const { status, res } = await this.send(method, path, body);
    if (status >= 400) throw await apiError(res, status);
    const text = (await collect(res)).toString('utf8');
    return (text ? JSON.parse(text) : undefined) as T;
  }

  /** One request; `body` is JSON, or a stream sent as `type` (chunked). */
  private send(method: string, path: string, body?: unknown, type?: string): Promise<Reply> {
    const stream = body instanceof Readable ? body : undefined;
    const payload = body === undefined || stream ? undefined : JSON.stringify(body);
    const headers = stream ? { 'content-type': type ?? 'application/octet-stream' } : payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {};
    return new Promise((resolve, reject) => {
      const req = request({ socketPath: this.o.socket, method, path, headers }, (res) => resolve({ status: res.statusCode ?? 0, res }));
      req.once('error', (err: NodeJS.ErrnoException) =>
        reject(err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? new DaemonUnreachableError(this.o.socket, { cause: err }) : err),
      );
      if (stream) stream.pipe(req);
      else req.end(payload);
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

/** A running exec of LatticeClient.exec(). */
export interface ExecSession {
  /** The process's stdin (with `stdin: true`; a TTY's input): end() closes it. */
  stdin: Writable;
  stdout: Readable;
  /** Empty with a TTY (the terminal's output is on stdout). */
  stderr: Readable;
  /** The process's exit status, after stdout and stderr ended. */
  exit: Promise<ExecExit>;
  /** Send a signal to the process in the sandbox (SIGTERM, SIGINT, SIGKILL, SIGHUP, SIGQUIT, SIGUSR1/2, SIGWINCH). */
  signal(sig: NodeJS.Signals): void;
  /** TTY: the terminal's new size. */
  resize(cols: number, rows: number): void;
  /** Give up: the connection closes, the daemon sends SIGTERM to the process (SIGKILL after its stop timeout). */
  close(): void;
}

/** The client side of the exec frames (src/daemon/frames.ts) on an upgraded socket. */
function execSession(socket: Duplex, head: Buffer): ExecSession {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const decoder = new FrameDecoder();
  let settle!: (e: ExecExit | Error) => void;
  const exit = new Promise<ExecExit>((resolve, reject) => (settle = (e) => (e instanceof Error ? reject(e) : resolve(e))));
  let got: ExecExit | undefined;
  const onData = (chunk: Buffer) => {
    for (const f of decoder.push(chunk)) {
      if (f.stream === Stream.stdout) stdout.write(f.payload);
      else if (f.stream === Stream.stderr) stderr.write(f.payload);
      else if (f.stream === Stream.exit) got = JSON.parse(f.payload.toString('utf8')) as ExecExit;
    }
    if (decoder.broken) socket.destroy();
  };
  socket.on('data', onData);
  socket.on('error', () => undefined);
  socket.once('close', () => {
    stdout.end();
    stderr.end();
    settle(got ?? new DaemonApiError('EDAEMON', 'the exec stream ended before the exit status (the daemon stopped, or the exec was closed)', 502));
  });
  if (head.length) onData(head);
  const stdin = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const f of encodeData(Stream.stdin, chunk)) socket.write(f);
      cb();
    },
    final(cb) {
      socket.write(encodeFrame(Stream.stdin));
      cb();
    },
  });
  return {
    stdin,
    stdout,
    stderr,
    exit,
    signal: (sig) => void socket.write(encodeFrame(Stream.signal, Buffer.from(sig, 'latin1'))),
    resize: (cols, rows) => void socket.write(encodeResize(cols, rows)),
    close: () => socket.destroy(),
  };
}
