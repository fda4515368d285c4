import type { JetStreamManager, KV, KvEntry as NatsKvEntry, NatsConnection } from 'nats';
import { LatticeError } from '../errors.js';
import type { Logger } from '../log.js';
import { ensureReplicas, isPlacementError, ReplicasError } from '../natsserver/replicas.js';
import { KvConflictError, KvOp, type KvBucket, type KvChange, type KvEntry, type KvStore, type KvWatch } from './kv.js';

/** JetStream's "wrong last sequence": the compare-and-set lost. */
const JS_WRONG_LAST_SEQUENCE = 10071;

function isConflict(err: unknown): boolean {
  const e = err as { api_error?: { err_code?: number }; message?: string };
  return e?.api_error?.err_code === JS_WRONG_LAST_SEQUENCE || /wrong last sequence/i.test(String(e?.message ?? ''));
}

async function cas<T>(key: string, p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (err) {
    if (isConflict(err)) throw new KvConflictError(key, { cause: err });
    throw err;
  }
}

function live(e: NatsKvEntry | null): e is NatsKvEntry {
  return !!e && e.operation === 'PUT';
}

/**
 * How long one KV request waits for JetStream, in ms. A write to a bucket whose stream leader died gets no
 * answer at all until the survivors elect a new one (nats-server 2.9.10: a follower campaigns after 4-9 s
 * without a heartbeat, server/raft.go), so the wait is what a caller loses on top of the election: with
 * JetStream's default 5 s the control plane answered EBUSY only after 5 s; at 2 s the launcher's retry
 * (enroll/client.ts retryWhileBusy) lands within about 2 s of the new leader. A healthy R3 write takes
 * milliseconds, even on a loaded machine.
 */
export const KV_OP_TIMEOUT_MS = 2000;

/**
 * The KvStore over JetStream KV buckets (created on first use, history 1, file storage, `replicas`
 * replicas; an existing bucket with fewer is raised to `replicas`, logged: natsserver/replicas.ts).
 */
export class NatsKvStore implements KvStore {
  private readonly opened = new Map<string, Promise<KvBucket>>();
  constructor(
    private readonly nc: NatsConnection,
    /**
     * bindOnly: open existing buckets only (clients must not create control-plane state).
     * opTimeoutMs: how long a get/put/delete/keys/watch request waits for JetStream (default KV_OP_TIMEOUT_MS).
     */
    private readonly opts: { replicas?: number; bindOnly?: boolean; log?: Logger; opTimeoutMs?: number } = {},
  ) {}

  bucket(name: string): Promise<KvBucket> {
    let b = this.opened.get(name);
    if (!b) {
      b = this.open(name);
      b.catch(() => this.opened.delete(name));
      this.opened.set(name, b);
    }
    return b;
  }

  private async open(name: string): Promise<KvBucket> {
    const replicas = this.opts.replicas ?? 1;
    const bindOnly = this.opts.bindOnly ?? false;
    let created: KV;
    try {
      created = await this.nc.jetstream().views.kv(name, { history: 1, replicas, bindOnly });
    } catch (err) {
      if (isPlacementError(err)) throw new ReplicasError(`KV_${name}`, replicas, err);
      throw err;
    }
    if (!bindOnly && replicas > 1) await ensureReplicas(await this.nc.jetstreamManager(), `KV_${name}`, replicas, this.opts.log);
    // Reads and writes go through a handle with the shorter timeout (creation above kept JetStream's 5 s);
    // binding reads no stream info, so direct get is carried over from the created handle.
    const direct = (created as Partial<{ direct: boolean }>).direct;
    const kv = await this.nc.jetstream({ timeout: this.opts.opTimeoutMs ?? KV_OP_TIMEOUT_MS }).views.kv(name, { bindOnly: true, ...(direct !== undefined ? { allow_direct: direct } : {}) });
    return new NatsKvBucket(name, kv, () => this.nc.isClosed(), bindOnly ? undefined : await this.nc.jetstreamManager());
  }
}

class NatsKvBucket implements KvBucket {
  constructor(
    readonly name: string,
    private readonly kv: KV,
    /** True once the NATS connection is closed for good (no watch is re-created then). */
    private readonly closed: () => boolean,
    /** For listing keys without a consumer (absent for bind-only clients, which may not read stream info). */
    private readonly jsm?: JetStreamManager,
  ) {}

  async get(key: string): Promise<KvEntry | null> {
    const e = await this.kv.get(key);
    return live(e) ? { key, value: e.value, revision: e.revision } : null;
  }
  create(key: string, value: Uint8Array): Promise<number> {
    return cas(key, this.kv.create(key, value));
  }
  update(key: string, value: Uint8Array, revision: number): Promise<number> {
    return cas(key, this.kv.update(key, value, revision));
  }
  delete(key: string, revision?: number): Promise<void> {
    return cas(key, this.kv.delete(key, revision === undefined ? undefined : { previousSeq: revision }));
  }
  /**
   * Listing creates a short-lived consumer. When that times out (nats-server 2.9 may place it on a node that
   * is down), the keys are listed without a consumer instead: the stream leader's per-subject state
   * (STREAM.INFO with subjects_filter) names every key with a message, and a get (direct get where the
   * bucket allows it) of each keeps the live ones. Slower for big buckets, but it works while a node is down.
   */
  async keys(filter?: string): Promise<string[]> {
    try {
      const out: string[] = [];
      for await (const k of await this.kv.keys(filter)) out.push(k);
      return out;
    } catch (err) {
      if (!isTimeout(err) || !this.jsm) throw err;
      return retryOnTimeout(this.name, 'keys', () => this.keysWithoutConsumer(filter ?? '>'));
    }
  }

  private async keysWithoutConsumer(filter: string): Promise<string[]> {
    const prefix = `$KV.${this.name}.`;
    const si = await this.jsm!.streams.info(`KV_${this.name}`, { subjects_filter: `${prefix}${filter}` });
    const subjects = Object.keys(si.state.subjects ?? {});
    const out: string[] = [];
    for (const subject of subjects) {
      const key = subject.slice(prefix.length);
      if (await this.get(key)) out.push(key);
    }
    return out;
  }

  /**
   * A watch that outlives its consumer: when the server side ends it (a node died, the consumer was lost),
   * it is created again from the revision after the last one seen (`resumeFromRevision`), so every change
   * in the gap, deletes included, still arrives in order. Creation is retried on timeout; re-creation stops
   * when the connection is closed or the watch is stopped.
   */
  async watch(filter: string, onChange: (c: KvChange) => void, onReady?: () => void): Promise<KvWatch> {
    let stopped = false;
    let current: { stop(): void } | undefined;
    let lastRevision = 0;
    let readySignalled = false;
    const signalReady = () => {
      if (readySignalled) return;
      readySignalled = true;
      onReady?.();
    };
    const open = async (): Promise<void> => {
      const it = await retryOnTimeout(this.name, 'watch', () =>
        this.kv.watch(lastRevision > 0 ? { key: filter, resumeFromRevision: lastRevision + 1 } : { key: filter, initializedFn: signalReady }),
      );
      current = it;
      void (async () => {
        for await (const e of it) {
          lastRevision = Math.max(lastRevision, e.revision);
          const put = e.operation === 'PUT';
          onChange({ key: e.key, op: put ? KvOp.Put : KvOp.Delete, value: put ? e.value : new Uint8Array(), revision: e.revision });
        }
      })()
        .catch(() => undefined)
        .then(async () => {
          // Ended by the server side, not by stop(): watch again (at most once a second) until it works, we are
          // stopped, or the connection is gone.
          while (!stopped && !this.closed()) {
            await new Promise((r) => setTimeout(r, 1000).unref());
            if (stopped || this.closed()) return;
            try {
              await open();
              return;
            } catch {
              // next round
            }
          }
        });
    };
    await open();
    return {
      stop: () => {
        stopped = true;
        current?.stop();
      },
    };
  }
}

/**
 * JetStream API errors (the server's err_code, nats-server server/errors.json) that a clustered JetStream gives
 * while it cannot serve a request for a moment: 10004 incomplete results, 10007 cluster not assigned to this
 * server, 10008 system temporarily unavailable, 10009 cluster can not handle request (no meta leader), 10041
 * a Raft error, 10063 expected stream sequence does not match. They pass once a leader is elected.
 */
const CLUSTER_TRANSIENT = new Set([10004, 10007, 10008, 10009, 10041, 10063]);

/**
 * nats.js codes of a connection that is draining, closed or between servers: this control-plane instance is
 * stopping (nc.drain() fails the requests its in-flight handlers make) or reconnecting; another instance, or
 * this one once reconnected, answers a retry.
 */
const CONNECTION_GONE = new Set(['CONNECTION_DRAINING', 'CONNECTION_CLOSED', 'DISCONNECT']);

/** Why a request could not be served now: the store (JetStream) or this instance's NATS connection; undefined for anything else. */
export type Unavailable = 'store' | 'connection';

/**
 * Classify `err` as a passing unavailability (the caller answers "busy, retry" rather than "internal error"):
 * 'store' for the client's TIMEOUT, '503' (no responders, or JetStream temporarily unavailable), KvTimeoutError
 * and the CLUSTER_TRANSIENT API errors; 'connection' for CONNECTION_GONE; undefined otherwise.
 */
export function unavailable(err: unknown): Unavailable | undefined {
  if (err instanceof KvTimeoutError) return 'store';
  const e = err as { code?: string; api_error?: { err_code?: number } } | undefined;
  if (e?.code !== undefined && CONNECTION_GONE.has(e.code)) return 'connection';
  if (e?.code === '503' || isTimeout(err)) return 'store';
  if (e?.api_error?.err_code !== undefined && CLUSTER_TRANSIENT.has(e.api_error.err_code)) return 'store';
  return undefined;
}

/**
 * True for the errors JetStream gives while a node is down or a stream's leader is being elected, and for a
 * connection that is stopping or between servers (`unavailable`). They pass within seconds on a healthy
 * cluster: callers answer "busy, retry" rather than "internal error".
 */
export function isStoreUnavailable(err: unknown): boolean {
  return unavailable(err) !== undefined;
}

/** The one-line EBUSY message for an `unavailable` cause, the same over NATS and HTTP. */
export function unavailableMessage(why: Unavailable): string {
  return why === 'store'
    ? "the control plane's store (JetStream) did not answer: a NATS node may be down or electing a leader; retry shortly"
    : 'this control-plane instance is stopping or reconnecting to NATS; retry shortly (another instance answers)';
}

/** A JetStream request that got no answer in time (the client's TIMEOUT), after every retry. */
export class KvTimeoutError extends LatticeError {
  override readonly name = 'KvTimeoutError';
  constructor(bucket: string, op: string, attempts: number, cause: unknown) {
    super('EKV_TIMEOUT', `JetStream did not answer ${op} on ${bucket} (${attempts} attempts): a NATS node may be down or the cluster has no leader for it; retry, and check the NATS cluster`, { cause });
  }
}

const TIMEOUT_ATTEMPTS = 3;

function isTimeout(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  return e?.code === 'TIMEOUT' || /^TIMEOUT$|timed? ?out/i.test(String(e?.message ?? ''));
}

/**
 * nats-server 2.9 may place a short-lived consumer (KV keys, watch) on a node that is down; the request
 * then times out (5 s) while a new attempt usually lands on a live node. Idempotent operations are retried
 * up to 3 times; after that a KvTimeoutError says what happened.
 */
async function retryOnTimeout<T>(bucket: string, op: string, fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (!isTimeout(err)) throw err;
      if (attempt >= TIMEOUT_ATTEMPTS) throw new KvTimeoutError(bucket, op, attempt, err);
    }
  }
}
