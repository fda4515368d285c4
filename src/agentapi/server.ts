import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { chmod, mkdir, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { LatticeError } from '../errors.js';
import { readJsonBody } from '../httpbody.js';
import type { Logger } from '../log.js';
import { ToolName, type ToolRequest, type ToolResponse } from './execute.js';

/**
 * The agent API: HTTP/1.1 on a Unix socket that the launcher serves for one sandbox and bind-mounts
 * into it (runsc --host-uds=open). Only that sandbox can reach the socket, so the channel is the
 * identity: nothing in a request says who the caller is.
 *
 *   GET  /v1/identity        who this sandbox is (no JWT)
 *   POST /v1/tools/{tool}    JSON object body -> {result, traceId, spanId} | {error: {code, message}, ...}
 *   POST /v1/delegate        the `delegate` tool: a child enrollment token (see controlplane/delegation.ts)
 *
 * A W3C `traceparent` request header continues the agent's trace; every reply carries the call's own.
 */

export const MAX_AGENT_BODY_BYTES = 64 * 1024;
/** Concurrent connections one sandbox may hold open. */
export const MAX_AGENT_CONNECTIONS = 64;

/** The agent API could not listen on its socket or address (code EAGENTAPI_LISTEN). */
export class AgentApiListenError extends LatticeError {
  override readonly name = 'AgentApiListenError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('EAGENTAPI_LISTEN', message, options);
  }
}

export interface AgentApiServerOptions {
  socketPath: string;
  execute: (req: ToolRequest) => Promise<ToolResponse>;
  identityView: () => unknown;
  log?: Logger;
  maxBodyBytes?: number;
}

export interface AgentApiServer {
  readonly socketPath: string;
  close(): Promise<void>;
}

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  if (res.headersSent) return;
  const data = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data), 'cache-control': 'no-store', ...headers });
  res.end(data);
}

const TOOL_PATH = /^\/v1\/tools\/([^/]+)$/;

/**
 * Serve the agent API on `opts.socketPath` (mode 0666; a stale socket is replaced). Bodies above maxBodyBytes
 * (default 64 KiB) are answered 413 by `execute`. @throws AgentApiListenError when the socket cannot be bound.
 */
export async function serveAgentApi(opts: AgentApiServerOptions): Promise<AgentApiServer> {
  const max = opts.maxBodyBytes ?? MAX_AGENT_BODY_BYTES;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://agent');
    const path = url.pathname;
    let tool: string | undefined;
    const m = TOOL_PATH.exec(path);
    if (m) {
      try {
        tool = decodeURIComponent(m[1]);
      } catch {
        tool = m[1];
      }
    } else if (path === '/v1/delegate') tool = ToolName.Delegate;

    if (path === '/v1/identity') {
      if (req.method !== 'GET') return send(res, 405, { error: { code: 'EMETHOD', message: 'use GET /v1/identity' } });
      return send(res, 200, opts.identityView());
    }
    if (tool === undefined) return send(res, 404, { error: { code: 'ENOTFOUND', message: `no route ${path}; see GET /v1/identity, POST /v1/tools/{tool}, POST /v1/delegate` } });
    if (req.method !== 'POST') return send(res, 405, { error: { code: 'EMETHOD', message: `use POST ${path}` } });

    const body = await readJsonBody(req, max);
    const r = await opts.execute({
      tool,
      args: body.ok ? body.value : undefined,
      ...(body.ok ? {} : { badBody: { status: body.status, message: body.message } }),
      traceparent: typeof req.headers.traceparent === 'string' ? req.headers.traceparent : undefined,
    });
    // An unread remainder (oversized body) would keep the connection busy: close it after replying.
    send(res, r.status, r.body, { traceparent: r.traceparent, ...(req.complete ? {} : { connection: 'close' }) });
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      opts.log?.error({ err: (err as Error)?.message }, 'agent api handler failed');
      send(res, 500, { error: { code: 'EINTERNAL', message: 'internal error; see the launcher log' } });
    });
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 60_000;
  server.maxConnections = MAX_AGENT_CONNECTIONS;

  await mkdir(dirname(opts.socketPath), { recursive: true, mode: 0o755 });
  await unlink(opts.socketPath).catch(() => undefined); // a stale socket from a crashed launcher
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new AgentApiListenError(`cannot serve the agent API on ${opts.socketPath}: ${err.message}`, { cause: err })));
    server.listen(opts.socketPath, () => resolve());
  });
  server.on('error', (err) => opts.log?.error({ err: err.message }, 'agent api server error'));
  // The agent may run as any uid inside the sandbox; access is limited by who can reach the path.
  await chmod(opts.socketPath, 0o666);

  return {
    socketPath: opts.socketPath,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      await unlink(opts.socketPath).catch(() => undefined);
    },
  };
}
