import type { JetStreamManager, ServerInfo, StreamConfig } from 'nats';
import { LatticeError, UsageError } from '../errors.js';
import type { Logger } from '../log.js';

/**
 * Replication of the control plane's JetStream state (every KV bucket and the audit stream).
 *
 * One replica on a single server; three when the server is part of a cluster (a three-node Raft
 * group keeps a quorum with one node down). `--replicas N` overrides. A bucket or stream that
 * already exists with fewer replicas is raised to N by a stream update (JetStream copies the data
 * to the new peers itself) and the change is logged; one that has more is left alone, since
 * lowering replication is never done behind an operator's back.
 *
 * JetStream's own limits: 1..5 replicas, and no more than the cluster has JetStream servers.
 */
export const MAX_REPLICAS = 5;
export const CLUSTER_REPLICAS = 3;

/** The default for a server: 1 alone, 3 in a cluster (INFO carries `cluster` only when clustered). */
export function defaultReplicas(info: Pick<ServerInfo, 'cluster'> | undefined): number {
  return info?.cluster ? CLUSTER_REPLICAS : 1;
}

/** `--replicas` text -> 1..5; UsageError otherwise. */
export function parseReplicas(s: string): number {
  const n = Number(s);
  if (!/^\d+$/.test(s) || !Number.isInteger(n) || n < 1 || n > MAX_REPLICAS) {
    throw new UsageError(`--replicas ${s} is not a replica count (1 to ${MAX_REPLICAS}; 3 for a three-node cluster)`);
  }
  return n;
}

/** The cluster cannot hold the replicas asked for (fewer JetStream servers than N, or some are down). */
export class ReplicasError extends LatticeError {
  override readonly name = 'ReplicasError';
  constructor(stream: string, replicas: number, cause: unknown) {
    super('EREPLICAS', `cannot place ${replicas} replicas of ${stream}: ${(cause as Error)?.message ?? cause}; start the missing NATS nodes or pass --replicas with at most the number of JetStream servers`, { cause });
  }
}

/** Stream creation with the replica count's failure made clear. */
export async function addStream(jsm: JetStreamManager, cfg: Partial<StreamConfig> & { name: string }): Promise<void> {
  try {
    await jsm.streams.add(cfg);
  } catch (err) {
    if (isPlacementError(err)) throw new ReplicasError(cfg.name, cfg.num_replicas ?? 1, err);
    throw err;
  }
}

/** What `ensureReplicas` did: nothing (already enough), or a migration from..to. */
export type ReplicaChange = { stream: string; from: number; to: number } | null;

/**
 * Raise an existing stream (a KV bucket is the stream KV_<bucket>) to `want` replicas if it has fewer.
 * Logged before and after (warn: an operator should know their state moved). Never lowers. Returns once
 * a replicated stream has a leader (a new or changed one elects first, answering 503 until then).
 * Errors: ReplicasError when the cluster cannot place them; EREPLICAS when no leader is elected in time;
 * others from JetStream as they come.
 */
export async function ensureReplicas(jsm: JetStreamManager, stream: string, want: number, log?: Logger): Promise<ReplicaChange> {
  const info = await jsm.streams.info(stream);
  const have = info.config.num_replicas ?? 1;
  if (have >= want) {
    if (have > 1 && !info.cluster?.leader) await untilLed(jsm, stream);
    return null;
  }
  log?.warn({ stream, from: have, to: want }, `replication: raising ${stream} from ${have} to ${want} replicas`);
  try {
    await jsm.streams.update(stream, { ...info.config, num_replicas: want });
  } catch (err) {
    if (isPlacementError(err)) throw new ReplicasError(stream, want, err);
    throw err;
  }
  await untilLed(jsm, stream);
  log?.warn({ stream, from: have, to: want }, `replication: ${stream} now has ${want} replicas`);
  return { stream, from: have, to: want };
}

/** How long a stream may take to elect a leader after its replicas change (ms); milliseconds on a healthy cluster. */
const LEADER_TIMEOUT_MS = 30_000;

/**
 * Wait until `stream` has a leader again. A replica change makes the stream elect one, and until it has, every
 * request to it (the next KV get or put) is answered 503 "no responders". @throws LatticeError EREPLICAS after
 * LEADER_TIMEOUT_MS.
 */
async function untilLed(jsm: JetStreamManager, stream: string): Promise<void> {
  const deadline = Date.now() + LEADER_TIMEOUT_MS;
  for (;;) {
    const info = await jsm.streams.info(stream).catch(() => undefined);
    if (info?.cluster?.leader) return;
    if (Date.now() > deadline) {
      throw new LatticeError('EREPLICAS', `${stream} has no leader ${LEADER_TIMEOUT_MS / 1000} s after its replicas changed; check that every nats-server of the cluster runs and routes to the others`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** JetStream 10005 "insufficient resources" / "no suitable peers", 10074 "replicas > 1 not supported in non-clustered mode". */
export function isPlacementError(err: unknown): boolean {
  const e = err as { api_error?: { err_code?: number }; message?: string };
  const code = e?.api_error?.err_code;
  return code === 10005 || code === 10074 || /insufficient resources|not supported in non-clustered mode|no suitable peers/i.test(String(e?.message ?? ''));
}
