/**
 * Work inside a running sandbox through the daemon: exec (streamed), copy in and out, pause, resume,
 * checkpoint. The operations are src/sandbox/ops/*, the same functions `lattice sandbox exec|cp|...` run
 * when no daemon answers; this file only carries them over HTTP.
 *
 *   POST /v1/sandboxes/{ref}/exec   ExecRequest, Upgrade: lattice-exec -> 101, then frames both ways
 *                                   (src/daemon/frames.ts: stdin, stdout, stderr, exit, signal, resize)
 *   GET  /v1/sandboxes/{ref}/archive?path=/abs   -> 200 application/x-tar: PATH under its base name
 *                                   (tar -c in the sandbox; the body is the sandbox's, hostile to whoever extracts it)
 *   PUT  /v1/sandboxes/{ref}/archive?path=/dir   application/x-tar body -> 204: extracted in DIR by tar -x
 *                                   inside the sandbox (every write under the sandbox's own view of its files)
 *   GET  /v1/sandboxes/{ref}/stat?path=/abs      -> 200 PathStat { path, directory }
 *   POST /v1/sandboxes/{ref}/pause | resume      -> 204
 *   POST /v1/sandboxes/{ref}/checkpoint  { to }  -> 200 { path, sandbox }: saved to TO on the daemon's host;
 *                                   the sandbox stops (continue it with POST /v1/sandboxes/restore or `lattice sandbox restore TO`)
 *   POST /v1/sandboxes/restore  { from, name?, stopTimeoutSeconds? } -> 201 SandboxView: the checkpoint FROM (on the
 *                                   daemon's host) continues as a running daemon sandbox (Supervisor.restore);
 *                                   400 FROM is not a checkpoint (or an enrolled one), 409 the name runs
 *   errors: ErrorBody, 400 bad input or a copy tar refused, 404 no such sandbox, 409 not running (exited,
 *           a warm-pool member nobody took, paused or not paused for pause/resume, cannot be checkpointed)
 *
 * Exec: the process gets the request's stdin only with `stdin: true`; `tty: true` gives it a pseudo-terminal
 * (pty.ts) whose output is the stdout stream (raw, as a terminal writes it). The connection closing before
 * the exit frame is the caller giving up: the process gets SIGTERM, and SIGKILL after stopTimeoutSeconds.
 * The exit frame carries the status `sandbox exec` would exit with (127/126 with the error when the
 * command could not start).
 *
 * Copy out never touches the host's files here: the client extracts the stream with the hardened extractor
 * (sandbox/ops/cp.ts landTar). Hostile frames (unknown stream ids, unknown signals, resize without a TTY)
 * are dropped and counted (`dropped`); a malformed frame header ends the exec as a client abort.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import { join, posix } from 'node:path';
import type { Duplex, Readable, Writable } from 'node:stream';
import type { Logger } from 'pino';
import { z } from 'zod';
import { LatticeError, UsageError, errorMessage } from '../errors.js';
import { readJsonBody } from '../httpbody.js';
import { findRunningSandbox, SandboxNotRunningError } from '../sandbox/ops/find.js';
import { SandboxRegistry, type SandboxRecord } from '../sandbox/registry.js';
import { Runsc } from '../runsc/client.js';
import { CreateRequest, type ErrorBody, type SandboxView } from './api.js';
import { EXEC_UPGRADE, encodeData, encodeFrame, FrameDecoder, Stream, type ExecExit } from './frames.js';
import type { Pty } from './pty.js';
import { SandboxNotFoundError, type Supervisor } from './supervisor.js';

/** POST /v1/sandboxes/{ref}/exec: what `sandbox exec [-i] [-t] [--user] [--env] [--cwd] -- CMD` says. */
export const ExecRequest = z
  .object({
    cmd: z.array(z.string()).min(1, 'give the command and its arguments'),
    env: z.array(z.string()).default([]),
    cwd: z.string().optional(),
    /** user[:group]: numbers, or names from the image's /etc/passwd and /etc/group. */
    user: z.string().optional(),
    /** Pass the stdin stream to the process (else it reads /dev/null). */
    stdin: z.boolean().default(false),
    /** Give the process a pseudo-terminal (stdout and stderr arrive as one stream). */
    tty: z.boolean().default(false),
    cols: z.number().int().min(1).max(65535).default(80),
    rows: z.number().int().min(1).max(65535).default(24),
    /** Seconds between SIGTERM and SIGKILL when the caller goes away before the process exited. */
    stopTimeoutSeconds: z.number().min(0).max(3600).default(10),
  })
  .strict();
export type ExecRequest = z.input<typeof ExecRequest>;

export const CheckpointRequest = z.object({ to: z.string().refine((p) => posix.isAbsolute(p), 'an absolute path on the daemon host') }).strict();
export type CheckpointRequest = z.input<typeof CheckpointRequest>;

/** POST /v1/sandboxes/restore: a checkpoint directory (as POST .../checkpoint wrote it) to continue. */
export const RestoreRequest = z
  .object({
    from: z.string().refine((p) => posix.isAbsolute(p), 'an absolute path on the daemon host'),
    /** Default: the checkpointed sandbox's name. */
    name: CreateRequest.shape.name,
    /** Seconds between SIGTERM and SIGKILL on stop (default 10). */
    stopTimeoutSeconds: z.number().min(0).max(3600).default(10),
  })
  .strict();
export type RestoreRequest = z.input<typeof RestoreRequest>;

/** GET .../stat. */
export interface PathStat {
  path: string;
  directory: boolean;
}

/** POST .../checkpoint. */
export interface CheckpointReply {
  path: string;
  sandbox: SandboxView;
}

/** Largest JSON body of an ops request (bytes). */
const MAX_BODY = 1 << 20;
/** Signals a client may send to an exec'd process. */
const SIGNALS = new Set(['SIGTERM', 'SIGINT', 'SIGKILL', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH']);
/** busybox tar writes its two end blocks (1024 bytes) even when it fails: no 200 before more than that, or its exit. */
const TAR_END_BLOCKS = 1024;

const OPS = new Set(['exec', 'archive', 'stat', 'pause', 'resume', 'checkpoint']);

export interface OpsDeps {
  supervisor: Supervisor;
  stateDir: string;
  log: Logger;
}

/** The ops routes of one daemon (see the top of this file). */
export class OpsRoutes {
  /** Hostile or meaningless exec frames dropped (unknown stream, signal, resize without a TTY). */
  dropped = 0;
  private readonly registry: SandboxRegistry;

  constructor(private readonly deps: OpsDeps) {
    this.registry = new SandboxRegistry(deps.stateDir);
  }

  /** Whether `req` is one of this file's plain (not upgraded) routes. */
  handles(req: IncomingMessage): boolean {
    const parts = pathParts(req);
    if (parts.length === 3 && parts[0] === 'v1' && parts[1] === 'sandboxes' && parts[2] === 'restore' && req.method === 'POST') return true;
    return parts.length === 4 && parts[0] === 'v1' && parts[1] === 'sandboxes' && OPS.has(parts[3]!);
  }

  /** Answer a plain route (handles(req) was true). */
  async request(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://daemon');
    const [, , ref, op] = pathParts(req) as [string, string, string, string];
    const method = req.method ?? 'GET';
    if (op === undefined) return this.restore(req, res);
    try {
      if (op === 'exec') throw new UsageError(`exec streams: send POST ${url.pathname} with Connection: Upgrade and Upgrade: ${EXEC_UPGRADE} (see api/openapi.json)`);
      if (op === 'archive' && method === 'GET') return await this.archiveOut(res, await this.running(ref), pathParam(url));
      if (op === 'archive' && method === 'PUT') {
        const record = await this.running(ref);
        const dir = pathParam(url);
        const { unpackInSandbox } = await import('../sandbox/ops/cp.js');
        await unpackInSandbox(record, dir, req, `${record.name}:${dir}`);
        return sendJson(res, 204);
      }
      if (op === 'stat' && method === 'GET') {
        const record = await this.running(ref);
        const path = pathParam(url);
        const { sandboxIsDir } = await import('../sandbox/ops/cp.js');
        return sendJson(res, 200, { path, directory: await sandboxIsDir(record, path) } satisfies PathStat);
      }
      if ((op === 'pause' || op === 'resume') && method === 'POST') {
        const record = await this.running(ref);
        const state = await new Runsc({ root: record.runscRoot }).state(record.id);
        if (op === 'pause' && state.status === 'paused') throw new LatticeError('ESANDBOX_PAUSED', `sandbox ${ref} is already paused; resume it with lattice sandbox resume ${ref}`, { exitCode: 2 });
        if (op === 'resume' && state.status !== 'paused') throw new LatticeError('ESANDBOX_NOT_PAUSED', `sandbox ${ref} is not paused (${state.status}); nothing to resume`, { exitCode: 2 });
        const { pauseSandbox, resumeSandbox } = await import('../sandbox/ops/pause.js');
        await (op === 'pause' ? pauseSandbox : resumeSandbox)(record);
        return sendJson(res, 204);
      }
      if (op === 'checkpoint' && method === 'POST') {
        const body = await readJsonBody(req, MAX_BODY);
        if (!body.ok) return sendJson(res, body.status, { error: { code: 'EUSAGE', message: body.message } } satisfies ErrorBody);
        const { to } = checked(CheckpointRequest, body.value ?? {});
        const record = await this.running(ref);
        const { checkpointSandbox } = await import('../sandbox/ops/checkpoint.js');
        const path = await checkpointSandbox(record, to, { registry: this.registry });
        return sendJson(res, 200, { path, sandbox: await this.deps.supervisor.get(record.id) } satisfies CheckpointReply);
      }
      return sendJson(res, 404, { error: { code: 'EDAEMON_ROUTE', message: `no route ${method} ${url.pathname}; see api/openapi.json` } } satisfies ErrorBody);
    } catch (err) {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const status = opsStatus(err);
      if (status === 500) this.deps.log.warn({ err: errorMessage(err), path: url.pathname }, 'daemon request failed');
      sendJson(res, status, errorBody(err));
    }
  }

  /**
   * POST /v1/sandboxes/restore: read the checkpoint (ops/restore.ts) and continue it in the Supervisor.
   * 201 SandboxView; 400 a bad body, FROM not a (whole) checkpoint or an enrolled one; 409 the name runs.
   */
  private async restore(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      const body = await readJsonBody(req, MAX_BODY);
      if (!body.ok) return sendJson(res, body.status, { error: { code: 'EUSAGE', message: body.message } } satisfies ErrorBody);
      const o = checked(RestoreRequest, body.value ?? {});
      const { readCheckpoint } = await import('../sandbox/ops/restore.js');
      const ck = await readCheckpoint(o.from);
      return sendJson(res, 201, await this.deps.supervisor.restore(ck, o));
    } catch (err) {
      const code = err instanceof LatticeError ? err.code : '';
      const status = code === 'ESANDBOX_CHECKPOINT' ? 400 : code === 'ESANDBOX_RUNNING' ? 409 : opsStatus(err);
      if (status === 500) this.deps.log.warn({ err: errorMessage(err), path: req.url }, 'daemon request failed');
      sendJson(res, status, errorBody(err));
    }
  }

  /** GET .../archive: the tar, or an error while tar has not said more than its end blocks. */
  private async archiveOut(res: ServerResponse, record: SandboxRecord, path: string): Promise<void> {
    const { packInSandbox } = await import('../sandbox/ops/cp.js');
    const tar = await packInSandbox(record, path);
    const held: Buffer[] = [];
    let size = 0;
    const first = await new Promise<'data' | 'end'>((resolve) => {
      const onData = (c: Buffer) => {
        held.push(c);
        size += c.length;
        if (size > TAR_END_BLOCKS) {
          tar.stream.off('data', onData);
          tar.stream.pause();
          resolve('data');
        }
      };
      tar.stream.on('data', onData);
      tar.stream.once('end', () => resolve('end'));
    });
    if (first === 'end') await tar.done(); // SandboxCopyError -> 400 while nothing is sent
    res.writeHead(200, { 'content-type': 'application/x-tar' });
    for (const c of held) res.write(c);
    if (first === 'end') {
      res.end();
      return;
    }
    res.once('close', () => {
      if (!res.writableFinished) void tar.abort();
    });
    tar.stream.pipe(res, { end: false });
    tar.stream.once('end', () => {
      // A tar that failed half-way must not look like a whole archive: the connection is cut instead.
      tar.done().then(
        () => res.end(),
        (err: unknown) => {
          this.deps.log.warn({ err: errorMessage(err), id: record.id }, 'copy out failed after the first bytes');
          res.destroy();
        },
      );
    });
  }

  /**
   * The server's 'upgrade' event: an exec (see the top of this file). Anything else upgraded is answered
   * 404 and closed.
   */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    void this.exec(req, socket, head).catch((err: unknown) => {
      this.deps.log.warn({ err: errorMessage(err) }, 'exec failed');
      socket.destroy();
    });
  }

  private async exec(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const parts = pathParts(req);
    const isExec = parts.length === 4 && parts[0] === 'v1' && parts[1] === 'sandboxes' && parts[3] === 'exec' && req.method === 'POST';
    if (!isExec || String(req.headers.upgrade).toLowerCase() !== EXEC_UPGRADE) {
      return rawReply(socket, 404, { error: { code: 'EDAEMON_ROUTE', message: `no upgrade route ${req.method} ${req.url}; exec is POST /v1/sandboxes/{ref}/exec with Upgrade: ${EXEC_UPGRADE}` } });
    }
    let rest: Buffer;
    let started: Awaited<ReturnType<typeof import('../sandbox/ops/exec.js').startExec>>;
    let pty: Pty | undefined;
    let o: z.output<typeof ExecRequest>;
    try {
      const body = await readUpgradeBody(req, socket, head);
      rest = body.rest;
      o = checked(ExecRequest, parseJson(body.json));
      const [{ parseEnv }, { resolveUser }, { startExec }] = await Promise.all([import('../sandbox/inputs.js'), import('../sandbox/prepare.js'), import('../sandbox/ops/exec.js')]);
      const env = parseEnv(o.env);
      const record = await this.running(parts[2]!);
      const user = o.user === undefined ? undefined : await resolveUser(o.user, record.rootfs);
      const scratch = await mkdtemp(join(record.bundleDir, '..', 'exec-'));
      try {
        if (o.tty) pty = (await import('./pty.js')).openPty(o.cols, o.rows);
        const fd = pty?.slave as unknown as 'pipe';
        started = await startExec(record, { args: o.cmd, env, cwd: o.cwd, user }, {
          scratch,
          stdio: pty ? { stdin: fd, stdout: fd, stderr: fd } : { stdin: o.stdin ? 'pipe' : 'ignore', stdout: 'pipe', stderr: 'pipe' },
        });
      } catch (err) {
        pty?.close();
        await rm(scratch, { recursive: true, force: true });
        throw err;
      } finally {
        pty?.closeSlave();
      }
    } catch (err) {
      return rawReply(socket, opsStatus(err), errorBody(err));
    }
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${EXEC_UPGRADE}\r\n\r\n`);
    const { child } = started;
    const log = this.deps.log;
    let exited = false;

    // Process -> client. Back-pressure: a source pauses while the socket's buffer is full.
    const forward = (src: Readable, stream: typeof Stream.stdout | typeof Stream.stderr, skip?: RegExp) =>
      new Promise<void>((resolve) => {
        src.on('data', (c: Buffer) => {
          if (skip?.test(c.toString('latin1', 0, 64))) return;
          let ok = true;
          for (const f of encodeData(stream, c)) ok = socket.write(f) && ok;
          if (!ok && !socket.destroyed) {
            src.pause();
            socket.once('drain', () => src.resume());
          }
        });
        src.once('end', () => resolve());
        src.once('close', () => resolve());
        src.once('error', () => resolve()); // a pty's master reads EIO once the process closed the terminal
      });
    const { RUNSC_EXEC_FAILURE } = await import('../sandbox/ops/exec.js');
    const outputs = pty
      ? [forward(pty.master, Stream.stdout)]
      : [child.stdout ? forward(child.stdout, Stream.stdout) : undefined, child.stderr ? forward(child.stderr, Stream.stderr, RUNSC_EXEC_FAILURE) : undefined];
    const stdin: Writable | undefined = pty ? pty.master : o.stdin ? (child.stdin ?? undefined) : undefined;
    stdin?.on('error', () => undefined); // the process closed its stdin: what the client still sends is dropped

    // Client -> process.
    const decoder = new FrameDecoder();
    const onFrames = (chunk: Buffer) => {
      for (const f of decoder.push(chunk)) {
        if (f.stream === Stream.stdin && stdin) {
          if (f.payload.length > 0) stdin.write(f.payload);
          else if (!pty) stdin.end();
        } else if (f.stream === Stream.signal && SIGNALS.has(f.payload.toString('latin1'))) {
          void started.signal(f.payload.toString('latin1') as NodeJS.Signals);
        } else if (f.stream === Stream.resize && pty && f.payload.length === 4) {
          pty.resize(f.payload.readUInt16BE(0), f.payload.readUInt16BE(2));
        } else this.dropped++;
      }
      if (decoder.broken) {
        log.warn({ reason: decoder.broken }, 'exec stream unreadable; ending the exec as if the client went away');
        socket.destroy();
      }
    };
    socket.on('data', onFrames);
    if (rest.length) onFrames(rest);

    // The caller went away before the exit: SIGTERM, then SIGKILL after the stop timeout.
    // The server's sockets allow half-open: a client that closed shows as 'end' first ('close' comes only
    // after our side ended). Our client never half-closes (stdin's EOF is a frame), so either means gone.
    let gone = false;
    const onGone = () => {
      if (exited || gone) return;
      gone = true;
      void started.signal('SIGTERM');
      const t = setTimeout(() => void started.signal('SIGKILL'), o.stopTimeoutSeconds * 1000);
      void child.finally(() => clearTimeout(t)).catch(() => undefined);
    };
    socket.once('end', onGone);
    socket.once('close', onGone);
    socket.on('error', () => undefined);

    let exit: ExecExit;
    try {
      exit = { exitCode: await started.wait() };
    } catch (err) {
      exit = { exitCode: err instanceof LatticeError && (err.exitCode ?? 1) > 1 ? (err.exitCode ?? 1) : 1, error: errorBody(err).error };
    }
    exited = true;
    await Promise.all(outputs);
    pty?.close();
    if (!socket.destroyed) socket.end(encodeFrame(Stream.exit, Buffer.from(JSON.stringify(exit))));
  }

  /**
   * The running, taken sandbox `ref`. Errors: SandboxNotFoundError (404), SandboxNotRunningError (409:
   * exited, reaped, or a warm-pool member nobody took).
   */
  private async running(ref: string): Promise<SandboxRecord> {
    const view = await this.deps.supervisor.get(ref);
    const record = await findRunningSandbox(this.registry, view.id);
    if (record.warm) throw new SandboxNotRunningError(`sandbox ${ref} is a warm-pool member nobody has taken; create a sandbox to get one`);
    return record;
  }
}

/** HTTP status of an ops error: 404 unknown sandbox, 409 a sandbox in the wrong state, 400 bad input or a copy tar refused, 500 the rest. */
export function opsStatus(err: unknown): number {
  if (err instanceof SandboxNotFoundError) return 404;
  if (err instanceof LatticeError && ['ESANDBOX_NOT_RUNNING', 'ESANDBOX_PAUSED', 'ESANDBOX_NOT_PAUSED', 'ESANDBOX_CHECKPOINT'].includes(err.code)) return 409;
  if (err instanceof UsageError || (err instanceof LatticeError && (err.code === 'ESANDBOX_COPY' || err.exitCode === 2))) return 400;
  return 500;
}

function errorBody(err: unknown): ErrorBody {
  return { error: { code: err instanceof LatticeError ? err.code : 'EDAEMON', message: errorMessage(err) } };
}

function pathParts(req: IncomingMessage): string[] {
  try {
    return new URL(req.url ?? '/', 'http://daemon').pathname.split('/').filter(Boolean).map(decodeURIComponent);
  } catch {
    return [];
  }
}

/** ?path=: an absolute path inside the sandbox, normalized, not / itself. Errors: UsageError. */
function pathParam(url: URL): string {
  const p = url.searchParams.get('path');
  if (!p || !posix.isAbsolute(p)) throw new UsageError('give ?path= as an absolute path inside the sandbox, e.g. ?path=/tmp/out');
  const clean = posix.normalize(p).replace(/(.)\/$/, '$1');
  if (clean === '/') throw new UsageError('?path=/ names the whole root; name a file or directory under it, e.g. /tmp');
  return clean;
}

function checked<T extends z.ZodTypeAny>(schema: T, value: unknown): z.output<T> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new UsageError(parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '));
  return parsed.data as z.output<T>;
}

function parseJson(text: string): unknown {
  try {
    return text.trim() ? JSON.parse(text) : {};
  } catch (err) {
    throw new UsageError(`body is not valid JSON: ${(err as Error).message.split('\n')[0]}`);
  }
}

function sendJson(res: ServerResponse, status: number, body?: unknown): void {
  if (body === undefined) {
    res.writeHead(status).end();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
}

/** An HTTP reply written on a socket the server handed over (an upgrade refused), then closed. */
function rawReply(socket: Duplex, status: number, body: ErrorBody): void {
  const text = JSON.stringify(body);
  socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(text)}\r\nconnection: close\r\n\r\n${text}`);
}

/**
 * The body of an upgrade request (Node's server hands the socket over right after the headers): its
 * content-length bytes from `head` and the socket; what follows is already frames (`rest`).
 * Errors: UsageError (no content-length, or over MAX_BODY).
 */
async function readUpgradeBody(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<{ json: string; rest: Buffer }> {
  const length = Number(req.headers['content-length'] ?? 0);
  if (!Number.isInteger(length) || length < 0 || length > MAX_BODY) throw new UsageError(`an exec request needs a content-length of at most ${MAX_BODY} bytes`);
  let buf = head;
  while (buf.length < length) {
    const chunk = await new Promise<Buffer | undefined>((resolve) => {
      const done = (c?: Buffer) => {
        socket.off('data', done);
        socket.off('end', done);
        socket.off('close', done);
        socket.pause();
        resolve(c);
      };
      socket.on('data', done);
      socket.once('end', done);
      socket.once('close', done);
      socket.resume();
    });
    if (!chunk) throw new UsageError('the exec request ended before its body');
    buf = Buffer.concat([buf, chunk]);
  }
  return { json: buf.subarray(0, length).toString('utf8'), rest: buf.subarray(length) };
}
