/**
 * The warm pools set while the daemon runs (`PUT /v1/pool`, `lattice daemon pool set`, the client's
 * `setPool`), remembered across daemon restarts in <state>/daemon-pools.json.
 *
 *   file     {"format":"lattice-daemon-pools/1","pools":[PoolSpec, ...]}: one entry per pool (poolId), its spec
 *            and size, never its members; mode 0600, written whole and atomically (temp file, fsync, rename,
 *            fsync of the directory: fsutil.ts writeFileAtomic), so a crash leaves the old list or the new one
 *   set      a successful run-time set replaces its pool's entry or appends one; size 0 removes it (withSet).
 *            Sets are recorded in the order they take effect and written one after the other
 *   flags    `--pool` flags are the start's own configuration and are not written; a run-time set of a pool
 *            that came from a flag is
 *   start    the daemon reads the file (parseStoredPools) and merges it with its flags (mergePools): a flag
 *            wins over the stored size of the same pool (poolId). Flags are set first and a bad one stops the
 *            start; then the stored pools, where one that no longer validates (source gone, policy unparsable)
 *            is one warning and skipped, and stays in the file (a source that comes back is used at the next
 *            start; `pool set SPEC,size=0` removes it)
 *   damage   a file that is not JSON or not this format is one warning: no stored pool is restored and the
 *            next run-time set replaces the file; an entry that does not parse is one warning and is dropped
 *            at the next write
 *
 * parseStoredPools, withSet, mergePools and formatStoredPools are pure; PoolStore is the file's only reader
 * and writer.
 */
import { readFile } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { LatticeError, errorMessage } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import { PoolSpec } from './api.js';
import { formatPoolSpec, poolId } from './pool.js';

/** The file under the state dir. */
export const POOL_STORE_FILE = 'daemon-pools.json';
export const POOL_STORE_FORMAT = 'lattice-daemon-pools/1';

/** The stored pools file of a state dir. */
export function poolStorePath(stateDir: string): string {
  return join(stateDir, POOL_STORE_FILE);
}

/** The store file could not be written: the pool is set in the running daemon but will not survive a restart. HTTP 500. */
export class PoolStoreError extends LatticeError {
  override readonly name = 'PoolStoreError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('EDAEMON_POOL_STORE', message, options);
  }
}

/** What the file holds: the pools that parse, and one line per thing skipped. */
export interface StoredPools {
  specs: PoolSpec[];
  warnings: string[];
}

/** Spec fields that are paths on the daemon's host; stored, they must be absolute (the next daemon's cwd may differ). */
const PATH_FIELDS = ['rootfs', 'imageArchive', 'ociLayout', 'policy'] as const;

/**
 * Read the file's text (`path` names it in the warnings). Never throws: a file that is not JSON or not
 * this format gives no pools and one warning; each entry that is not a PoolSpec with size >= 1, a relative
 * path, limits that do not parse, or a pool already listed is one warning and skipped.
 */
export function parseStoredPools(text: string, path: string): StoredPools {
  const ignored = `its pools are not restored; the next \`lattice daemon pool set\` replaces it`;
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return { specs: [], warnings: [`${path} is not JSON (${errorMessage(err).split('\n')[0]}); ${ignored}`] };
  }
  const d = doc as { format?: unknown; pools?: unknown } | null;
  if (typeof d !== 'object' || d === null || d.format !== POOL_STORE_FORMAT || !Array.isArray(d.pools)) {
    return { specs: [], warnings: [`${path} is not a ${POOL_STORE_FORMAT} file (format ${JSON.stringify(d?.format)}); ${ignored}`] };
  }
  const specs: PoolSpec[] = [];
  const warnings: string[] = [];
  const seen = new Set<string>();
  d.pools.forEach((entry: unknown, i) => {
    const skip = (why: string) => warnings.push(`${path}: stored pool ${i + 1} skipped: ${why}`);
    const parsed = PoolSpec.safeParse(entry);
    if (!parsed.success) return skip(parsed.error.issues.map((x) => `${x.path.join('.') || 'entry'}: ${x.message}`).join('; '));
    const spec = parsed.data;
    if (spec.size === 0) return skip('size 0 (a removed pool is not stored)');
    const relative = PATH_FIELDS.find((k) => spec[k] !== undefined && !isAbsolute(spec[k]));
    if (relative) return skip(`${relative} ${spec[relative]} is not an absolute path`);
    let id: string;
    try {
      id = poolId(spec);
    } catch (err) {
      return skip(errorMessage(err));
    }
    if (seen.has(id)) return skip(`${formatPoolSpec(spec)} is listed twice`);
    seen.add(id);
    specs.push(spec);
  });
  return { specs, warnings };
}

/** The file's text for `specs` (pretty, one entry per pool, newline at the end). */
export function formatStoredPools(specs: readonly PoolSpec[]): string {
  return `${JSON.stringify({ format: POOL_STORE_FORMAT, pools: specs }, null, 2)}\n`;
}

/**
 * The stored list after a successful set of `spec`: its pool's entry replaced in place, or appended; size 0
 * removes it. Errors: UsageError when `spec` names no pool (poolId).
 */
export function withSet(specs: readonly PoolSpec[], spec: PoolSpec): PoolSpec[] {
  const id = poolId(spec);
  const i = specs.findIndex((s) => poolId(s) === id);
  if (spec.size === 0) return specs.filter((_, j) => j !== i);
  if (i < 0) return [...specs, spec];
  return specs.map((s, j) => (j === i ? spec : s));
}

/** A stored pool whose size a `--pool` flag replaced at this start. */
export interface Overridden {
  flag: PoolSpec;
  storedSize: number;
}

/**
 * The pools a daemon starts with: `flags` (in their order; the last of two flags for one pool wins, as
 * setting them in turn does), then the stored pools no flag names (`restored`). A flag wins over the stored
 * size of its pool (`overridden`). Errors: UsageError when a spec names no pool (poolId).
 */
export function mergePools(flags: readonly PoolSpec[], stored: readonly PoolSpec[]): { flags: PoolSpec[]; restored: PoolSpec[]; overridden: Overridden[] } {
  const flagged = new Map(flags.map((f) => [poolId(f), f]));
  const restored: PoolSpec[] = [];
  const overridden: Overridden[] = [];
  for (const s of stored) {
    const flag = flagged.get(poolId(s));
    if (!flag) restored.push(s);
    else if (flag.size !== s.size) overridden.push({ flag, storedSize: s.size });
  }
  return { flags: [...flags], restored, overridden };
}

/** The store of one daemon (see the top of this file): the list in memory, written after each set. */
export class PoolStore {
  private writes: Promise<void> = Promise.resolve();

  private constructor(
    readonly path: string,
    private specs: PoolSpec[],
  ) {}

  /**
   * Read `path` (a missing file is an empty list). Resolves with the store and what the file held; never
   * rejects: a file that cannot be read (not a file, permissions, I/O) is one warning, as a damaged one.
   */
  static async open(path: string): Promise<{ store: PoolStore; stored: StoredPools }> {
    let stored: StoredPools = { specs: [], warnings: [] };
    try {
      stored = parseStoredPools(await readFile(path, 'utf8'), path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') stored.warnings.push(`cannot read ${path} (${errorMessage(err)}); its pools are not restored; fix or remove it`);
    }
    return { store: new PoolStore(path, stored.specs), stored };
  }

  /** The stored list now. */
  list(): PoolSpec[] {
    return [...this.specs];
  }

  /**
   * Record a set that took effect now (call in the order sets take effect) and resolve once the file holds
   * it (and every set recorded before). Errors: PoolStoreError when the file cannot be written.
   */
  record(spec: PoolSpec): Promise<void> {
    this.specs = withSet(this.specs, spec);
    const text = formatStoredPools(this.specs);
    const write = this.writes.then(() =>
      writeFileAtomic(this.path, text, 0o600).catch((err: unknown) => {
        throw new PoolStoreError(`the pool is set but could not be saved in ${this.path} (${errorMessage(err)}), so a daemon restart forgets it; check the state dir's disk and permissions, then set it again`, { cause: err });
      }),
    );
    this.writes = write.catch(() => undefined);
    return write;
  }
}
