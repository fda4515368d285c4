/**
 * The daemon's warm pool: per pool (a root filesystem source, a network policy, limits), a configured
 * number of sandboxes that already run (`lattice daemon --pool SPEC`, `PUT /v1/pool`, `lattice daemon pool set`).
 *
 *   member   the same lifecycle as any daemon sandbox (bundle, cgroup with the pool's limits, network
 *            namespace, TUN and pump under the policy, `runsc run`), whose process is the rootfs's /bin/sh
 *            reading one line from a pipe: parked, it waits for that line
 *   key      what a member can serve (memberKey): its resolved root filesystem directory (for an image or a
 *            tarball the unpacked digest's, so a changed image never matches an old member), its user, its
 *            limits (memory, CPUs, pids, /tmp size) and its network
 *   take     a create request whose prepared process has a member's key (requestKey) takes that member; the
 *            daemon sets the sandbox's hostname to the request's name and writes
 *            `cd DIR && export K=V... && exec CMD </dev/null` (claimLine), closing the pipe, so the command
 *            becomes the sandbox's process 1 as in a cold run: same exit code, output and stop signals
 *   stale    a request that resolves the pool's source to another directory (the image tag or the tarball
 *            changed) runs cold and ends the pool's parked members of the old one; a new member that resolves
 *            to another directory than the parked ones ends those
 *   refill   each take (or a member that ended) starts a new member in the background, at most
 *            REFILL_PARALLEL per pool at once; a failing start is retried after a backoff (1 s doubling to 30 s).
 *            A take's refill waits until the taken command ended or REFILL_HOLD_MS passed, so that the
 *            request it served comes first
 *   resize   set() of a known pool changes its size: the parked members beyond it end (drained: their shell
 *            reads end of file) and set() resolves once they have exited; members still starting beyond it end
 *            as they come up; size 0 removes the pool once none is left
 *   never    a member serves one request: it leaves the pool when taken and ends with its command
 *   reaped   members are daemon sandboxes marked `warm` in their record: a daemon killed with -9 leaves
 *            them to collectOrphans like its other sandboxes, which removes their records as well
 *
 * A request runs cold when it cannot match any member: --cap-add, a network other than none or host
 * egress under a policy file (no --dns-upstream), or an empty pool.
 */
import type { Logger } from 'pino';
import { UsageError } from '../errors.js';
import { parseResourceFlags, type OciResources } from '../oci/resources.js';
import { parseByteSize } from '../units.js';
import { MAX_POOL_SIZE, type CheckedCreateRequest, type PoolSpec } from './api.js';

export { MAX_POOL_SIZE, type PoolSpec };

/** GET /v1/pool: one pool's spec (policy null without network) and its members. */
export interface PoolState {
  rootfs?: string;
  image?: string;
  imageArchive?: string;
  ociLayout?: string;
  policy: string | null;
  memory?: string;
  cpus?: string;
  pidsLimit?: string;
  tmpSize?: string;
  size: number;
  /** Ids of the parked sandboxes, ready to be taken. */
  warm: string[];
  /** Members being started now. */
  starting: number;
}

/** A parked sandbox as the pool sees it (the Supervisor makes and claims them). */
export interface WarmMember {
  readonly id: string;
  /** What it can serve (memberKey). */
  readonly key: string;
  /** Its resolved root filesystem directory. */
  readonly rootfs: string;
  /** Resolves once the member's sandbox ended (taken or not). */
  readonly exited: Promise<void>;
  /** End an untaken member: its shell reads end of file and exits. */
  drain(): void;
}

/** Members of one pool started at once. */
export const REFILL_PARALLEL = 2;
/**
 * How long a take holds back its refill while the taken command runs (less if it ends sooner). A member's
 * boot (runsc, bundle, network) takes CPU and the daemon's main thread for about a second: started at the
 * take, it made the request's first output at the API 2.6x slower on a 2-core host (p50 88 vs 34 ms).
 */
export const REFILL_HOLD_MS = 500;
const BACKOFF_MIN_MS = 1000;
const BACKOFF_MAX_MS = 30_000;

/** The root filesystem flags of a pool or a request, and their names in SPEC text. */
const SOURCES = [
  ['rootfs', 'rootfs'],
  ['image', 'image'],
  ['imageArchive', 'image-archive'],
  ['ociLayout', 'oci-layout'],
] as const;
type SourceFlags = Partial<Record<(typeof SOURCES)[number][0], string>>;

/** The source of a pool or a request as given (`["image","alpine:3.19"]`, JSON), or undefined unless exactly one is given. */
export function sourceOf(x: SourceFlags): string | undefined {
  const given = SOURCES.filter(([k]) => x[k] !== undefined);
  return given.length === 1 ? JSON.stringify([given[0]![0], x[given[0]![0]]]) : undefined;
}

/**
 * The name of a pool: everything but its size, limits normalized (`512m` and `512M` are one pool).
 * Errors: UsageError when the spec has not exactly one source or a limit does not parse.
 */
export function poolId(spec: PoolSpec): string {
  const source = sourceOf(spec);
  if (source === undefined) throw new UsageError('a pool needs exactly one of rootfs, image, image-archive, oci-layout; e.g. --pool image=alpine:3.19,size=4');
  const l = parseResourceFlags(spec);
  return JSON.stringify([
    source,
    spec.policy ?? null,
    spec.memory === undefined ? null : l.memoryBytes,
    spec.cpus === undefined ? null : l.cpus,
    spec.pidsLimit === undefined ? null : l.pids,
    spec.tmpSize === undefined ? null : parseByteSize(spec.tmpSize, '--tmp-size'),
  ]);
}

/** SPEC keys of the key=value form, and the PoolSpec field each sets; the paths among them are made absolute. */
const SPEC_KEYS: Record<string, { field: Exclude<keyof PoolSpec, 'size'>; path: boolean }> = {
  rootfs: { field: 'rootfs', path: true },
  image: { field: 'image', path: false },
  'image-archive': { field: 'imageArchive', path: true },
  'oci-layout': { field: 'ociLayout', path: true },
  policy: { field: 'policy', path: true },
  memory: { field: 'memory', path: false },
  cpus: { field: 'cpus', path: false },
  'pids-limit': { field: 'pidsLimit', path: false },
  'tmp-size': { field: 'tmpSize', path: false },
};

/**
 * Parse a pool given on the command line, paths made absolute with `resolvePath`:
 *   ROOTFS[:POLICY]=N                     a root filesystem directory (or tarball), without network or under POLICY
 *   KEY=VALUE,...,size=N                  keys: rootfs, image, image-archive, oci-layout (one of them), policy,
 *                                         memory, cpus, pids-limit, tmp-size (as `sandbox run` takes them)
 * `minSize` is 1 for `--pool`, 0 for `pool set` (0 removes the pool). Errors: UsageError (shape, size
 * 0..MAX_POOL_SIZE, an unknown or repeated key, not exactly one source, a limit that does not parse).
 */
export function parsePoolSpec(text: string, resolvePath: (p: string) => string, minSize = 1): PoolSpec {
  const example = 'e.g. /srv/rootfs=4, /srv/rootfs:/etc/lattice/web.yaml=2 or image=alpine:3.19,policy=/etc/lattice/web.yaml,memory=512m,size=4';
  let spec: Partial<PoolSpec> = {};
  let count: string | undefined;
  if (/^(rootfs|image|image-archive|oci-layout)=[^,]*,/.test(text)) {
    for (const field of text.split(',')) {
      const eq = field.indexOf('=');
      const k = eq < 0 ? field : field.slice(0, eq);
      const v = eq < 0 ? '' : field.slice(eq + 1);
      if (v === '') throw new UsageError(`pool ${text}: ${k} has no value; ${example}`);
      if (k === 'size') {
        if (count !== undefined) throw new UsageError(`pool ${text}: size is given twice`);
        count = v;
        continue;
      }
      const known = SPEC_KEYS[k];
      if (!known) throw new UsageError(`pool ${text}: unknown key ${k}; the keys are ${[...Object.keys(SPEC_KEYS), 'size'].join(', ')}`);
      if (spec[known.field] !== undefined) throw new UsageError(`pool ${text}: ${k} is given twice`);
      spec = { ...spec, [known.field]: known.path ? resolvePath(v) : v };
    }
  } else {
    const eq = text.lastIndexOf('=');
    const head = eq < 0 ? '' : text.slice(0, eq);
    const colon = head.indexOf(':');
    const rootfs = colon < 0 ? head : head.slice(0, colon);
    const policy = colon < 0 ? undefined : head.slice(colon + 1);
    if (eq < 0 || rootfs === '' || policy === '') throw new UsageError(`pool ${text} is not ROOTFS[:POLICY]=N or KEY=VALUE,...,size=N; ${example}`);
    count = text.slice(eq + 1);
    spec = { rootfs: resolvePath(rootfs), ...(policy === undefined ? {} : { policy: resolvePath(policy) }) };
  }
  if (count === undefined || !/^\d+$/.test(count)) throw new UsageError(`pool ${text} has no size=N (a whole number); ${example}`);
  const size = Number(count);
  if (size < minSize || size > MAX_POOL_SIZE) throw new UsageError(`pool ${text}: the size must be ${minSize}..${MAX_POOL_SIZE}`);
  const full = { ...spec, size } as PoolSpec;
  poolId(full);
  return full;
}

/**
 * A pool as SPEC text in the KEY=VALUE,...,size=N form parsePoolSpec reads (`size` overrides the spec's),
 * for messages that tell the user which `lattice daemon pool set` to run. Values are written as they are
 * (a path holding a comma would not read back).
 */
export function formatPoolSpec(spec: PoolSpec, size = spec.size): string {
  const fields = Object.entries(SPEC_KEYS).flatMap(([k, { field }]) => (spec[field] === undefined ? [] : [`${k}=${spec[field]}`]));
  return [...fields, `size=${size}`].join(',');
}

/** The parts of a prepared process (src/sandbox/prepare.ts) a parked sandbox fixes at its start. */
export interface KeyedProcess {
  rootfs: string;
  user?: { uid: number; gid: number };
  resources: OciResources;
  tmpSizeBytes?: number;
}

/** What a member serves, and a request asks: resolved root filesystem, user, limits, network (policy path or none). */
export function memberKey(p: KeyedProcess, policy: string | undefined): string {
  return JSON.stringify([p.rootfs, p.user ? `${p.user.uid}:${p.user.gid}` : null, p.resources, p.tmpSizeBytes ?? null, policy ?? null]);
}

/**
 * The member key a create request would take (its prepared process `proc`), or undefined when no parked
 * sandbox can serve it (see the top of this file).
 */
export function requestKey(req: CheckedCreateRequest, proc: KeyedProcess): string | undefined {
  if (req.capAdd.length > 0) return undefined;
  const n = req.network;
  if (n.mode === 'none') return memberKey(proc, undefined);
  if (n.mode === 'host' && n.policy !== undefined && !n.dnsUpstream?.length) return memberKey(proc, n.policy);
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
  /** sourceOf(spec). */
  source: string;
  warm: WarmMember[];
  starting: number;
  /** Taken members whose refill waits for their command to start (refillAfter). */
  held: number;
  failures: number;
  /** The root filesystem directory the source resolved to last (members of another one are stale). */
  latest?: string;
  timer?: NodeJS.Timeout;
}

function stateOf(p: Pool): PoolState {
  return { ...p.spec, policy: p.spec.policy ?? null, size: p.spec.size, warm: p.warm.map((m) => m.id), starting: p.starting };
}

/** Keeps each pool at its size (see the top of this file). `launch` starts one parked sandbox and resolves once it runs. */
export class WarmPool {
  private readonly pools = new Map<string, Pool>();
  private readonly pending = new Set<Promise<unknown>>();
  private closed = false;

  constructor(
    private readonly launch: (spec: PoolSpec) => Promise<WarmMember>,
    private readonly log: Logger,
  ) {}

  /**
   * Make, resize or (size 0) remove a pool, and start filling it. Resolves with its state once the parked
   * members beyond the new size have exited. Errors: UsageError for a bad spec (poolId); EDAEMON_POOL after close.
   */
  async set(spec: PoolSpec): Promise<PoolState> {
    const id = poolId(spec);
    let p = this.pools.get(id);
    if (!p) {
      p = { spec, source: sourceOf(spec)!, warm: [], starting: 0, held: 0, failures: 0 };
      if (!this.closed) this.pools.set(id, p);
    }
    p.spec = spec;
    // The oldest members stay: they have waited longest and are as good as any.
    const extra = p.warm.splice(spec.size);
    for (const m of extra) m.drain();
    this.fill(p);
    await Promise.all(extra.map((m) => m.exited));
    const state = stateOf(p);
    this.prune(id, p);
    return state;
  }

  /**
   * Take a parked member with `key`, if one is ready; its pool refills in the background. On a miss,
   * `stale` (the request's source and the directory it resolved to) ends the parked members of pools of
   * that source that resolved to another directory.
   */
  take(key: string, stale?: { source: string; rootfs: string }): WarmMember | undefined {
    for (const p of this.pools.values()) {
      const i = p.warm.findIndex((m) => m.key === key);
      if (i < 0) continue;
      const [m] = p.warm.splice(i, 1);
      this.refillAfter(p, m!);
      return m;
    }
    if (stale) for (const p of this.pools.values()) if (p.source === stale.source) this.resolvedTo(p, stale.rootfs);
    return undefined;
  }

  /** Whether `id` is parked in a pool (not taken). */
  isWarm(id: string): boolean {
    return [...this.pools.values()].some((p) => p.warm.some((m) => m.id === id));
  }

  state(): PoolState[] {
    return [...this.pools.values()].map(stateOf);
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

  /** Refill in place of the taken member `m` once its command ended, at most REFILL_HOLD_MS from now. */
  private refillAfter(p: Pool, m: WarmMember): void {
    let timer: NodeJS.Timeout | undefined;
    const hold = new Promise<void>((resolve) => (timer = setTimeout(resolve, REFILL_HOLD_MS)));
    p.held++;
    void Promise.race([m.exited, hold]).then(() => {
      clearTimeout(timer);
      p.held--;
      this.fill(p);
    });
  }

  /** A pool set to size 0 goes once nothing of it is left. */
  private prune(id: string, p: Pool): void {
    if (p.spec.size > 0 || p.starting > 0 || p.warm.length > 0 || this.pools.get(id) !== p) return;
    clearTimeout(p.timer);
    this.pools.delete(id);
  }

  /** The pool's source now resolves to `rootfs`: end parked members of any other directory, and refill. */
  private resolvedTo(p: Pool, rootfs: string): void {
    p.latest = rootfs;
    const old = p.warm.filter((m) => m.rootfs !== rootfs);
    if (old.length === 0) return;
    p.warm = p.warm.filter((m) => m.rootfs === rootfs);
    this.log.info({ source: p.source, rootfs, ended: old.map((m) => m.id) }, 'warm pool: the source changed; parked sandboxes of the old one end');
    for (const m of old) m.drain();
    this.fill(p);
  }

  private fill(p: Pool): void {
    while (!this.closed && p.timer === undefined && p.warm.length + p.starting + p.held < p.spec.size && p.starting < REFILL_PARALLEL) {
      p.starting++;
      const started = this.launch(p.spec).then(
        (m) => {
          p.starting--;
          p.failures = 0;
          if (this.closed || p.warm.length >= p.spec.size) {
            // Closed, or shrunk while it started.
            m.drain();
            this.prune(poolId(p.spec), p);
            return;
          }
          p.warm.push(m);
          // A member that ends while parked (crash, `sandbox stop`, drained as stale) leaves the pool, which refills.
          void m.exited.then(() => {
            const i = p.warm.indexOf(m);
            if (i >= 0) p.warm.splice(i, 1);
            this.fill(p);
          });
          if (m.rootfs !== p.latest) this.resolvedTo(p, m.rootfs);
          this.fill(p);
        },
        (err: unknown) => {
          p.starting--;
          p.failures++;
          const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** (p.failures - 1));
          this.log.warn({ source: p.source, policy: p.spec.policy, err: String(err), retryMs: delay }, 'warm pool: a sandbox did not start');
          this.prune(poolId(p.spec), p);
          if (this.closed || p.timer || p.spec.size === 0) return;
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
