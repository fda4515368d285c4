import type { KV, KvEntry as NatsKvEntry, NatsConnection } from 'nats';
import type { Logger } from '../log.js';
import { ensureReplicas, ReplicasError } from '../natsserver/replicas.js';
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
 * The KvStore over JetStream KV buckets (created on first use, history 1, file storage, `replicas`
 * replicas; an existing bucket with fewer is raised to `replicas`, logged: natsserver/replicas.ts).
 */
export class NatsKvStore implements KvStore {
  private readonly opened = new Map<string, Promise<KvBucket>>();
  constructor(
    private readonly nc: NatsConnection,
    /** bindOnly: open existing buckets only (clients must not create control-plane state). */
    private readonly opts: { replicas?: number; bindOnly?: boolean; log?: Logger } = {},
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
    let kv: KV;
    try {
      kv = await this.nc.jetstream().views.kv(name, { history: 1, replicas, bindOnly });
    } catch (err) {
      if (/insufficient resources|non-clustered mode/i.test(String((err as Error)?.message))) throw new ReplicasError(`KV_${name}`, replicas, err);
      throw err;
    }
    if (!bindOnly && replicas > 1) await ensureReplicas(await this.nc.jetstreamManager(), `KV_${name}`, replicas, this.opts.log);
    return new NatsKvBucket(name, kv);
  }
}

class NatsKvBucket implements KvBucket {
  constructor(
    readonly name: string,
    private readonly kv: KV,
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
  async keys(filter?: string): Promise<string[]> {
    const out: string[] = [];
    for await (const k of await this.kv.keys(filter)) out.push(k);
    return out;
  }
  async watch(filter: string, onChange: (c: KvChange) => void, onReady?: () => void): Promise<KvWatch> {
    let ready = false;
    const signalReady = () => {
      if (!ready) {
        ready = true;
        onReady?.();
      }
    };
    const it = await this.kv.watch({ key: filter, initializedFn: signalReady });
    void (async () => {
      for await (const e of it) {
        onChange({
          key: e.key,
          op: e.operation === 'PUT' ? KvOp.Put : KvOp.Delete,
          value: e.operation === 'PUT' ? e.value : new Uint8Array(),
          revision: e.revision,
        });
      }
    })().catch(() => undefined);
    return { stop: () => it.stop() };
  }
}
