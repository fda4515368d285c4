import { nanos, StorageType, DiscardPolicy, RetentionPolicy, type JetStreamManager, type StreamConfig } from 'nats';
import { AUDIT_SUBJECT_PREFIX } from './events.js';
import type { Logger } from '../log.js';
import { addStream, ensureReplicas } from '../natsserver/replicas.js';

/** The JetStream stream that holds the audit trail. Subjects: lattice.audit.<namespace>.<agentId>.<type>. */
export const AUDIT_STREAM = 'LATTICE_AUDIT';

export interface AuditStreamOptions {
  name?: string;
  /**
   * How long the server remembers message ids to drop replays. A launcher that crashed between the server's
   * ack and persisting its watermark replays those entries on restart; they are dropped only inside this window.
   */
  duplicateWindowMs?: number;
  /** How long events are kept (0 = forever). */
  maxAgeMs?: number;
  /** Cap on the stream's bytes (-1 = none); the oldest events go first. */
  maxBytes?: number;
  /**
   * Replicas (default 1). The server acknowledges a publish once a quorum of them (2 of 3) has stored it, so
   * with 3 an acknowledged event survives the crash of any one node. An existing stream with fewer is raised.
   */
  replicas?: number;
  /** Where a replica migration is logged. */
  log?: Logger;
}

export const AUDIT_STREAM_DEFAULTS = {
  duplicateWindowMs: 60 * 60 * 1000,
  maxAgeMs: 30 * 24 * 60 * 60 * 1000,
  maxBytes: -1,
} as const;

/** The JetStream stream holding every audit subject (lattice.audit.>), file storage, with a duplicate window for the event id. */
export function auditStreamConfig(opts: AuditStreamOptions = {}): Partial<StreamConfig> & { name: string } {
  return {
    name: opts.name ?? AUDIT_STREAM,
    subjects: [`${AUDIT_SUBJECT_PREFIX}.>`],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
    discard: DiscardPolicy.Old,
    duplicate_window: nanos(opts.duplicateWindowMs ?? AUDIT_STREAM_DEFAULTS.duplicateWindowMs),
    max_age: nanos(opts.maxAgeMs ?? AUDIT_STREAM_DEFAULTS.maxAgeMs),
    max_bytes: opts.maxBytes ?? AUDIT_STREAM_DEFAULTS.maxBytes,
    num_replicas: opts.replicas ?? 1,
  };
}

/**
 * Create the audit stream if it does not exist yet. An existing stream's config is left alone, except that one
 * with fewer replicas than `opts.replicas` is raised to them (logged; natsserver/replicas.ts).
 */
export async function ensureAuditStream(jsm: JetStreamManager, opts: AuditStreamOptions = {}): Promise<void> {
  const cfg = auditStreamConfig(opts);
  let exists = true;
  try {
    await jsm.streams.info(cfg.name);
  } catch (err) {
    if (!/not found/i.test((err as Error).message)) throw err;
    exists = false;
  }
  if (exists) {
    if (opts.replicas !== undefined) await ensureReplicas(jsm, cfg.name, opts.replicas, opts.log);
    return;
  }
  try {
    await addStream(jsm, cfg);
  } catch (err) {
    // Another launcher or the control plane may have created it meanwhile.
    await jsm.streams.info(cfg.name).catch(() => {
      throw err;
    });
  }
}
