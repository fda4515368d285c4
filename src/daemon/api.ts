/**
 * The daemon's HTTP/JSON API, as data: request and response shapes shared by the server
 * (src/daemon/server.ts) and the typed client (src/client/). The contract for other languages is
 * api/openapi.json (OpenAPI 3.1); e2e/daemon validates every response against it.
 *
 *   GET    /v1/health                        -> 200 Health
 *   GET    /v1/sandboxes                     -> 200 SandboxView[]
 *   POST   /v1/sandboxes        CreateRequest -> 201 SandboxView (returns once the sandbox runs)
 *   GET    /v1/sandboxes/{ref}               -> 200 SandboxView            ref: id or name
 *   POST   /v1/sandboxes/{ref}/stop          -> 200 SandboxView (after it exited: SIGTERM, SIGKILL after its stop timeout)
 *   POST   /v1/sandboxes/{ref}/wait          -> 200 SandboxView (after it exited by itself or was stopped)
 *   DELETE /v1/sandboxes/{ref}               -> 204 (409 ESANDBOX_RUNNING while it runs)
 *   GET    /v1/pool                          -> 200 PoolState[] (the warm pools of `lattice daemon --pool`; src/daemon/pool.ts)
 *   PUT    /v1/pool             PoolSpec     -> 200 PoolState (a pool made, resized, or removed with size 0; returns once
 *                                               the parked sandboxes beyond the size have ended)
 *   GET    /v1/sandboxes/{ref}/logs[?follow=true] -> 200 text/plain: its stdout and stderr, merged, in order;
 *                                               with follow the body ends when the sandbox exits
 *   POST   /v1/sandboxes/restore  RestoreRequest -> 201 SandboxView (ops-routes.ts: a checkpoint continued in the daemon)
 *   errors: 4xx/5xx ErrorBody { error: { code, message } } (code: see src/errors.ts)
 */
import { z } from 'zod';
import { isPeerRef } from '../controlplane/routes.js';

/** How the daemon's sandbox reaches the network: none, host egress under a policy, or enrolled on the overlay. */
export const NetworkSpec = z.discriminatedUnion('mode', [
  z.object({ mode: z.literal('none') }).strict(),
  z
    .object({
      mode: z.literal('host'),
      /** Absolute path of a policy file on the daemon's host (default: deny everything). */
      policy: z.string().optional(),
      dnsUpstream: z.array(z.string()).optional(),
    })
    .strict(),
  z
    .object({
      mode: z.literal('enrolled'),
      controlPlane: z.string().optional(),
      token: z.string().optional(),
      advertise: z.string().optional(),
      listenPort: z.number().int().min(1).max(65535).optional(),
      egress: z.literal('host').optional(),
      /**
       * `sandbox start --exit-node`: "name" or "namespace.name" of an approved exit node, or "none"; absent:
       * the namespace's default exit node, if an operator set one (src/sandbox/enrolled.ts chooses, for both).
       */
      exitNode: z.string().refine(isPeerRef, 'a peer name: NAME or NAMESPACE.NAME (DNS labels), or none').optional(),
    })
    .strict(),
]);
export type NetworkSpec = z.infer<typeof NetworkSpec>;

/** POST /v1/sandboxes: the flags of `sandbox run`/`start` as JSON (paths absolute, on the daemon's host). */
export const CreateRequest = z
  .object({
    name: z.string().min(1).max(128).regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'letters, digits, _ . - (first a letter or digit)').optional(),
    rootfs: z.string().optional(),
    image: z.string().optional(),
    imageArchive: z.string().optional(),
    ociLayout: z.string().optional(),
    imageLimits: z.string().optional(),
    cmd: z.array(z.string()).default([]),
    env: z.array(z.string()).default([]),
    cwd: z.string().optional(),
    user: z.string().optional(),
    entrypoint: z.string().optional(),
    memory: z.string().optional(),
    cpus: z.string().optional(),
    pidsLimit: z.string().optional(),
    tmpSize: z.string().optional(),
    capAdd: z.array(z.string()).default([]),
    /** Seconds between SIGTERM and SIGKILL on stop (default 10). */
    stopTimeoutSeconds: z.number().min(0).max(3600).default(10),
    network: NetworkSpec.default({ mode: 'none' }),
  })
  .strict();
export type CreateRequest = z.input<typeof CreateRequest>;
export type CheckedCreateRequest = z.output<typeof CreateRequest>;

/** One sandbox as the API shows it (the rows of `sandbox ls --json`). */
export interface SandboxView {
  id: string;
  name: string;
  /** warm (parked in the pool, nobody's yet) | running | exited (N) | exited (kept) | reaped | orphan */
  status: string;
  running: boolean;
  exitCode: number | null;
  address: string | null;
  created: string;
  command: string;
  /** Started by the daemon (true) or by a foreground `sandbox run`/`start` (false). */
  daemon: boolean;
}

export interface Health {
  pid: number;
  version: string;
  socket: string;
  sandboxes: number;
}

export interface ErrorBody {
  error: { code: string; message: string };
}

/** Largest pool size: each parked sandbox holds a gVisor sandbox, a gofer and (with a policy) a pump. */
export const MAX_POOL_SIZE = 256;

/**
 * PUT /v1/pool, `lattice daemon --pool`, `lattice daemon pool set`: one warm pool. A pool is named by
 * everything but its size (its root filesystem source, policy and limits); PUT of a known one changes
 * its size, of a new one makes it, size 0 removes it. Paths absolute, on the daemon's host.
 */
export const PoolSpec = z
  .object({
    /** Exactly one source, as `sandbox run` takes it: a directory or rootfs tarball, an image of the local Docker engine, a `docker save` file, an OCI layout. */
    rootfs: z.string().min(1).optional(),
    image: z.string().min(1).optional(),
    imageArchive: z.string().min(1).optional(),
    ociLayout: z.string().min(1).optional(),
    /** Host-egress policy file; none: no network. */
    policy: z.string().min(1).optional(),
    /** --memory, --cpus, --pids-limit, --tmp-size of the parked sandboxes (default: the defaults of `sandbox run`). */
    memory: z.string().optional(),
    cpus: z.string().optional(),
    pidsLimit: z.string().optional(),
    tmpSize: z.string().optional(),
    /** Parked sandboxes to keep (0 removes the pool). */
    size: z.number().int().min(0).max(MAX_POOL_SIZE),
  })
  .strict();
export type PoolSpec = z.infer<typeof PoolSpec>;

export type { PoolState } from './pool.js';
