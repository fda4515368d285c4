import { Backoff } from '../backoff.js';
import { LatticeError } from '../errors.js';

/**
 * The only storage seam of the control plane: a key-value bucket with compare-and-set on a revision,
 * shaped like a JetStream KV bucket. The service holds no state of its own; every read-modify-write
 * goes through `update(key, value, revision)` (or `create`) and retries on KvConflictError, so any
 * number of control-plane processes can share one bucket set.
 *
 * Keys follow NATS subject rules: tokens separated by '.', each of [-_=a-zA-Z0-9/]; filters may use
 * '*' (one token) and '>' (the rest).
 */
export interface KvEntry {
  readonly key: string;
  readonly value: Uint8Array;
  readonly revision: number;
}

export const KvOp = { Put: 'PUT', Delete: 'DEL' } as const;
export type KvOp = (typeof KvOp)[keyof typeof KvOp];

export interface KvChange {
  readonly key: string;
  readonly op: KvOp;
  /** Empty for deletes. */
  readonly value: Uint8Array;
  readonly revision: number;
}

export interface KvWatch {
  stop(): void;
}

export interface KvBucket {
  readonly name: string;
  /** The live entry, or null when absent or deleted. */
  get(key: string): Promise<KvEntry | null>;
  /** Create; KvConflictError when the key holds a live value. Returns the new revision. */
  create(key: string, value: Uint8Array): Promise<number>;
  /** Compare-and-set; KvConflictError when the key's revision is no longer `revision`. */
  update(key: string, value: Uint8Array, revision: number): Promise<number>;
  /** Delete; with `revision`, only if the key is still at it (KvConflictError otherwise). */
  delete(key: string, revision?: number): Promise<void>;
  /** Live keys matching `filter` (default: all). */
  keys(filter?: string): Promise<string[]>;
  /**
   * Watch keys matching `filter`: current values first, then `onReady`, then every change as it happens.
   */
  watch(filter: string, onChange: (c: KvChange) => void, onReady?: () => void): Promise<KvWatch>;
}

export interface KvStore {
  bucket(name: string): Promise<KvBucket>;
}

/** A compare-and-set lost against a concurrent writer: re-read and retry. */
export class KvConflictError extends LatticeError {
  override readonly name = 'KvConflictError';
  constructor(key: string, options?: { cause?: unknown }) {
    super('EKV_CONFLICT', `concurrent update of ${key}`, options);
  }
}

const enc = new TextEncoder();
const dec = new TextDecoder();
export const encodeJson = (v: unknown): Uint8Array => enc.encode(JSON.stringify(v));
export const decodeJson = <T>(b: Uint8Array): T => JSON.parse(dec.decode(b)) as T;

export interface JsonEntry<T> {
  readonly value: T;
  readonly revision: number;
}

/** The live entry at `key` decoded as JSON, with its revision; null when absent. @throws SyntaxError on a value that is not JSON. */
export async function getJson<T>(b: KvBucket, key: string): Promise<JsonEntry<T> | null> {
  const e = await b.get(key);
  return e ? { value: decodeJson<T>(e.value), revision: e.revision } : null;
}

/**
 * Read-modify-write with compare-and-set, retried on conflict. `fn` gets the current value (or null)
 * and returns the next one, `undefined` to leave the key alone, or throws to abort. The first few
 * retries are immediate; later ones wait a jittered 1..50 ms (`backoff`, see src/backoff.ts).
 * @throws LatticeError EKV_CONTENTION after `maxAttempts` lost races; whatever `fn` or the bucket throws.
 */
export async function casUpdate<T>(
  b: KvBucket,
  key: string,
  fn: (cur: T | null) => T | undefined,
  maxAttempts = 1000,
  backoff: Backoff = new Backoff({ initialMs: 1, maxMs: 50 }),
): Promise<{ value: T | null; revision: number; changed: boolean }> {
  for (let attempt = 0; attempt < maxAttempts; attempt++) {
    const cur = await getJson<T>(b, key);
    const next = fn(cur ? cur.value : null);
    if (next === undefined) return { value: cur ? cur.value : null, revision: cur?.revision ?? 0, changed: false };
    try {
      const revision = cur ? await b.update(key, encodeJson(next), cur.revision) : await b.create(key, encodeJson(next));
      return { value: next, revision, changed: true };
    } catch (err) {
      if (!(err instanceof KvConflictError)) throw err;
      if (attempt > 3) await backoff.wait();
    }
  }
  throw new LatticeError('EKV_CONTENTION', `gave up updating ${key} after ${maxAttempts} conflicting attempts`);
}

/**
 * Start a watch on `filter` and resolve once it has delivered the current values (its `onReady`);
 * `onChange` keeps receiving changes until the returned watch is stopped.
 */
export async function watchCurrent(b: KvBucket, filter: string, onChange: (c: KvChange) => void): Promise<KvWatch> {
  let ready!: () => void;
  const isReady = new Promise<void>((r) => (ready = r));
  const w = await b.watch(filter, onChange, ready);
  await isReady;
  return w;
}

/** NATS subject matching for KV key filters ('*' one token, '>' the rest). */
export function keyMatches(filter: string, key: string): boolean {
  const f = filter.split('.');
  const k = key.split('.');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '>') return k.length > i;
    if (i >= k.length) return false;
    if (f[i] !== '*' && f[i] !== k[i]) return false;
  }
  return f.length === k.length;
}

const KEY_RE = /^[-_=/a-zA-Z0-9]+(\.[-_=/a-zA-Z0-9]+)*$/;
/** True for a key of NATS subject tokens ([-_=/a-zA-Z0-9]+ separated by '.'), no wildcards. */
export function isValidKey(key: string): boolean {
  return KEY_RE.test(key);
}

/** In-memory twin of a JetStream KV store for unit tests of the service logic. */
export class MemoryKvStore implements KvStore {
  private readonly buckets = new Map<string, MemoryKvBucket>();
  bucket(name: string): Promise<KvBucket> {
    let b = this.buckets.get(name);
    if (!b) {
      b = new MemoryKvBucket(name);
      this.buckets.set(name, b);
    }
    return Promise.resolve(b);
  }
}

class MemoryKvBucket implements KvBucket {
  private seq = 0;
  private readonly data = new Map<string, { value: Uint8Array; revision: number; deleted: boolean }>();
  private readonly watchers = new Set<{ filter: string; fn: (c: KvChange) => void }>();
  constructor(readonly name: string) {}

  get(key: string): Promise<KvEntry | null> {
    const e = this.data.get(key);
    return Promise.resolve(e && !e.deleted ? { key, value: e.value, revision: e.revision } : null);
  }
  create(key: string, value: Uint8Array): Promise<number> {
    this.check(key);
    const e = this.data.get(key);
    if (e && !e.deleted) return Promise.reject(new KvConflictError(key));
    return Promise.resolve(this.put(key, value, false));
  }
  update(key: string, value: Uint8Array, revision: number): Promise<number> {
    this.check(key);
    const e = this.data.get(key);
    if (!e || e.revision !== revision) return Promise.reject(new KvConflictError(key));
    return Promise.resolve(this.put(key, value, false));
  }
  delete(key: string, revision?: number): Promise<void> {
    const e = this.data.get(key);
    if (revision !== undefined && (!e || e.revision !== revision)) return Promise.reject(new KvConflictError(key));
    if (e && !e.deleted) this.put(key, new Uint8Array(), true);
    return Promise.resolve();
  }
  keys(filter = '>'): Promise<string[]> {
    return Promise.resolve([...this.data].filter(([k, e]) => !e.deleted && keyMatches(filter, k)).map(([k]) => k));
  }
  watch(filter: string, fn: (c: KvChange) => void, onReady?: () => void): Promise<KvWatch> {
    for (const [key, e] of this.data) {
      if (!e.deleted && keyMatches(filter, key)) fn({ key, op: KvOp.Put, value: e.value, revision: e.revision });
    }
    onReady?.();
    const w = { filter, fn };
    this.watchers.add(w);
    return Promise.resolve({ stop: () => this.watchers.delete(w) });
  }
  private put(key: string, value: Uint8Array, deleted: boolean): number {
    const revision = ++this.seq;
    this.data.set(key, { value, revision, deleted });
    const c: KvChange = { key, op: deleted ? KvOp.Delete : KvOp.Put, value, revision };
    for (const w of this.watchers) if (keyMatches(w.filter, key)) w.fn(c);
    return revision;
  }
  private check(key: string): void {
    if (!isValidKey(key)) throw new LatticeError('EKV_KEY', `invalid key ${JSON.stringify(key)}`);
  }
}

/**
 * Serializes work per key inside one process. Compare-and-set keeps processes correct; this only keeps
 * many concurrent requests in one process from losing the same race over and over (e.g. one token
 * used by 200 enrollments at once).
 */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<unknown>>();
  run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return run;
  }
}
