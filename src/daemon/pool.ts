/**
 * The daemon's warm pool: per (root filesystem, network policy), a configured number of sandboxes that
 * already run (`lattice daemon --pool ROOTFS[:POLICY]=N`).
 *
 *   member   the same lifecycle as any daemon sandbox (bundle, cgroup, network namespace, TUN and pump
 *            under the policy, `runsc run`), whose process is the rootfs's /bin/sh reading one line from
 *            a pipe: parked, it waits for that line
 *   take     a create request that matches a pool (matchKey) takes a parked member; the daemon writes
 *            `cd DIR && export K=V... && exec CMD </dev/null` (claimLine) and closes the pipe, so the command
 *            becomes the sandbox's process 1 as in a cold run: same exit code, output and stop signals
 *   refill   each take (or a member that ended) starts a new member in the background, at most
 *            REFILL_PARALLEL per pool at once; a failing start is retried after a backoff (1 s doubling to 30 s)
 *   never    a member serves one request: it leaves the pool when taken and ends with its command
 *   reaped   members are daemon sandboxes marked `warm` in their record: a daemon killed with -9 leaves
 *            them to collectOrphans like its other sandboxes, which removes their records as well
 *
 * A request matches when it names the pool's root filesystem directory (`rootfs`), the pool's network
 * (none, or host egress under the same policy file, no --dns-upstream), and nothing a parked sandbox
 * cannot change any more: no --memory/--cpus/--pids-limit/--tmp-size/--cap-add/--user, no image. The
 * parked sandbox's hostname is its id (a cold named run's is its name). Anything else runs cold.
 */
import type { Logger } from 'pino';
import { UsageError } from '../errors.js';
import type { CheckedCreateRequest } from './api.js';

/** One pool as configured: `ROOTFS[:POLICY]=N`. */
export interface PoolSpec {
  /** Absolute path of the root filesystem directory. */
  rootfs: string;
  /** Absolute path of the host-egress policy file; undefined: no network (`--network none`). */
  policy?: string;
  /** How many parked sandboxes to keep. */
  size: number;
}

/** GET /v1/pool: one pool's state. */
export interface PoolState {
  rootfs: string;
  policy: string | null;
  size: number;
  /** Ids of the parked sandboxes, ready to be taken. */
  warm: string[];
  /** Members being started now. */
  starting: number;
}

/** A parked sandbox as the pool sees it (the Supervisor makes and claims them). */
export interface WarmMember {
  readonly id: string;
  /** Resolves once the member's sandbox ended (taken or not). */
  readonly exited: Promise<void>;
  /** End an untaken member: its shell reads end of file and exits. */
  drain(): void;
}

/** Largest pool size: each parked sandbox holds a gVisor sandbox, a gofer and (with a policy) a pump. */
export const MAX_POOL_SIZE = 256;
/** Members of one pool started at once. */
export const REFILL_PARALLEL = 2;
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30_000;

/** The key of a pool: its root filesystem and its network. */
export function poolKey(rootfs: string, policy: string | undefined): string {
  return JSON.stringify([rootfs, policy ?? null]);
}

/**
 * Parse `ROOTFS[:POLICY]=N` (paths made absolute against `cwd`). Errors: UsageError when the shape,
 * the size (1..MAX_POOL_SIZE) or a path is wrong.
 */
export function parsePoolSpec(text: string, resolvePath: (p: string) => string): PoolSpec {
  const eq = text.lastIndexOf('=');
  const count = eq < 0 ? '' : text.slice(eq + 1);
  const head = eq < 0 ? '' : text.slice(0, eq);
  const colon = head.indexOf(':');
  const rootfs = colon < 0 ? head : head.slice(0, colon);
  const policy = colon < 0 ? undefined : head.slice(colon + 1);
  if (!/^\d+$/.test(count) || rootfs === '' || policy === '') {
    throw new UsageError(`--pool ${text} is not ROOTFS[:POLICY]=N; e.g. --pool /srv/rootfs=4 or --pool /srv/rootfs:/etc/lattice/web.yaml=2`);
  }
  const size = Number(count);
  if (size < 1 || size > MAX_POOL_SIZE) throw new UsageError(`--pool ${text}: the size must be 1..${MAX_POOL_SIZE}`);
  return { rootfs: resolvePath(rootfs), ...(policy === undefined ? {} : { policy: resolvePath(policy) }), size };
}

/**
 * The pool key a create request would take from, or undefined when it must run cold (see the top of
 * this file). `rootfs` is the request's resolved root filesystem directory.
 */
export function matchKey(req: CheckedCreateRequest, rootfs: string): string | undefined {
  const fixed = [req.image, req.imageArchive, req.ociLayout, req.imageLimits, req.memory, req.cpus, req.pidsLimit, req.tmpSize, req.user];
  if (req.rootfs === undefined || fixed.some((v) => v !== undefined) || req.capAdd.length > 0) return undefined;
  const n = req.network;
  if (n.mode === 'none') return poolKey(rootfs, undefined);
  if (n.mode === 'host' && n.policy !== undefined && !n.dnsUpstream?.length) return poolKey(rootfs, n.policy);
  return undefined;
}

/** `s` as one single-quoted shell word (POSIX sh: no character is special inside '...'). */
export function shellQuote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The line a parked /bin/sh runs to become the request's process: change directory, set the
 * environment, and exec the command with stdin from /dev/null (a daemon sandbox has no stdin).
 * Arguments and values are single-quoted, so nothing in them is interpreted by the shell.
 */
export function claimLine(p: { args: string[]; env: string[]; cwd: string }): string {
  const env = p.env.length ? `export ${p.env.map(shellQuote).join(' ')} && ` : '';
  return `cd -- ${shellQuote(p.cwd)} && ${env}exec ${p.args.map(shellQuote).join(' ')} </dev/null\n`;
}

interface Pool {
  spec: PoolSpec;
  warm: WarmMember[];
  starting: number;
  failures: number;
  timer?: NodeJS.Timeout;
}

/** Keeps each pool at its size (see the top of this file). `launch` starts one parked sandbox and resolves once it runs. */
export class WarmPool {
  private readonly pools = new Map<string, Pool>();
  private readonly pending = new Set<Promise<unknown>>();
  private closed = false;

  constructor(
    specs: readonly PoolSpec[],
    private readonly launch: (spec: PoolSpec) => Promise<WarmMember>,
    private readonly log: Logger,
  ) {
    for (const spec of specs) this.pools.set(poolKey(spec.rootfs, spec.policy), { spec, warm: [], starting: 0, failures: 0 });
  }

  /** Start filling every pool (in the background). */
  start(): void {
    for (const p of this.pools.values()) this.fill(p);
  }

  /** Take a parked member of pool `key`, if one is ready; the pool refills in the background. */
  take(key: string): WarmMember | undefined {
    const p = this.pools.get(key);
    const m = p?.warm.shift();
    if (p && m) this.fill(p);
    return m;
  }

  /** Whether `id` is parked in a pool (not taken). */
  isWarm(id: string): boolean {
    return [...this.pools.values()].some((p) => p.warm.some((m) => m.id === id));
  }

  state(): PoolState[] {
    return [...this.pools.values()].map((p) => ({
      rootfs: p.spec.rootfs,
      policy: p.spec.policy ?? null,
      size: p.spec.size,
      warm: p.warm.map((m) => m.id),
      starting: p.starting,
    }));
  }

  /** Stop refilling, wait for members being started, and end every parked member. */
  async close(): Promise<void> {
    this.closed = true;
    for (const p of this.pools.values()) clearTimeout(p.timer);
    await Promise.all([...this.pending]);
    const parked = [...this.pools.values()].flatMap((p) => p.warm.splice(0));
    for (const m of parked) m.drain();
    await Promise.all(parked.map((m) => m.exited));
  }

  private fill(p: Pool): void {
    while (!this.closed && p.timer === undefined && p.warm.length + p.starting < p.spec.size && p.starting < REFILL_PARALLEL) {
      p.starting++;
      const started = this.launch(p.spec).then(
        (m) => {
          p.starting--;
          p.failures = 0;
          if (this.closed) {
            m.drain();
            return;
          }
          p.warm.push(m);
          // A member that ends while parked (crash, `sandbox stop`) leaves the pool, which refills.
          void m.exited.then(() => {
            const i = p.warm.indexOf(m);
            if (i >= 0) p.warm.splice(i, 1);
            this.fill(p);
          });
          this.fill(p);
        },
        (err: unknown) => {
          p.starting--;
          p.failures++;
          const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (p.failures - 1));
          this.log.warn({ rootfs: p.spec.rootfs, policy: p.spec.policy, err: String(err), retryMs: delay }, 'warm pool: a sandbox did not start');
          if (this.closed || p.timer) return;
          p.timer = setTimeout(() => {
            p.timer = undefined;
            this.fill(p);
          }, delay);
        },
      );
      this.pending.add(started);
      void started.finally(() => this.pending.delete(started));
    }
  }
}
