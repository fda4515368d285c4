import { AckPolicy, DeliverPolicy, nanos, type JetStreamClient, type JetStreamManager, type JsMsg } from 'nats';
import { LatticeError } from '../errors.js';

/*
 * Reading every message of a stream subject, each exactly once, with a pull consumer that does not ack.
 *
 * Why not just fetch until empty: nats.js ends a fetch() at its `expires` on the client's own timer. When the
 * server is still sending the batch then (a consumer's first batch after a node restart took 2.3 s for 5,000
 * messages on a loaded machine), the client unsubscribes and the rest of the batch, already counted as delivered
 * by the server, is dropped; without acks it is never sent again. Seen: fetch(5000, expires 2 s) got 3,337,
 * the next message had consumer sequence 5,001, and the consumer then said 0 pending: the read-back ended at
 * 48,337 of 50,000 (at ~40,000 in the failover e2e, a tail lost on several slow batches).
 *
 * So the reader does what an ordered consumer does (JetStream ADR-17): the consumer sequence of the deliveries
 * must go 1, 2, 3...; a jump, or an empty fetch while the consumer has delivered more than we received, is a gap,
 * and the consumer is replaced by a new one starting at the stream sequence after the last message received.
 * ReadCursor is that bookkeeping, pure; readAll is the I/O around it.
 */

/** One delivery as the cursor sees it: consumer sequence, stream sequence, messages left after it. */
export interface Delivery {
  deliverySeq: number;
  streamSeq: number;
  pending: number;
}

/** What to do with a delivery: `visit` it (and continue, or stop when `done`), or `reset` (a gap: drop it). */
export type CursorStep = { action: 'visit'; done: boolean } | { action: 'reset' };

/**
 * The read position of one pass over a subject: `next` is the stream sequence a new consumer starts at.
 * `accept` for each delivery of the current consumer; `onEmpty` when a fetch brought nothing; `restart` when
 * a new consumer replaces the current one (its deliveries count from 1 again).
 */
export class ReadCursor {
  private delivered = 0;
  /** Stream sequence the next consumer starts at (1 = from the start). */
  next: number;
  resets = 0;

  constructor(startSeq = 1) {
    this.next = Math.max(1, startSeq);
  }

  accept(d: Delivery): CursorStep {
    if (d.deliverySeq !== this.delivered + 1) return { action: 'reset' };
    this.delivered = d.deliverySeq;
    this.next = d.streamSeq + 1;
    return { action: 'visit', done: d.pending === 0 };
  }

  /**
   * A fetch came back empty; `info` is the consumer's own view. Done when it has nothing pending and delivered
   * no more than we received; a reset when it delivered more (the tail of a batch was lost on the way).
   */
  onEmpty(info: { numPending: number; deliveredSeq: number }): 'done' | 'reset' | 'wait' {
    if (info.deliveredSeq > this.delivered) return 'reset';
    return info.numPending === 0 ? 'done' : 'wait';
  }

  restart(): void {
    this.delivered = 0;
    this.resets++;
  }
}

/** The read-back needed more than `maxResets` new consumers (code EAUDIT_READBACK). */
export class ReadBackError extends LatticeError {
  override readonly name = 'ReadBackError';
  constructor(stream: string, filter: string, resets: number, next: number) {
    super('EAUDIT_READBACK', `reading ${filter} from stream ${stream} lost deliveries ${resets} times (stopped at stream sequence ${next}); the NATS cluster is losing messages to this client: check its load and retry`);
  }
}

export interface ReadAllOptions {
  stream: string;
  /** Subject filter, e.g. `lattice.audit.ns.>`. */
  filter: string;
  /** First stream sequence to read (default 1). */
  startSeq?: number;
  /** Messages per fetch (default 1000). */
  batch?: number;
  /** A fetch's wait for its batch, ms (default 5000). */
  expiresMs?: number;
  /** New consumers allowed after gaps (default 20). */
  maxResets?: number;
  /** Empty fetches in a row while the consumer still reports pending messages before giving up (default 10). */
  maxIdle?: number;
}

/**
 * Call `visit` with every message on `filter` from `startSeq` up to the end of the stream as it is when the pass
 * catches up, in stream order, each once. Every consumer is ephemeral, R1, in memory, without acks, deleted
 * afterwards (and expires after 60 s idle if we crash). Returns how many were read and how many gaps forced a
 * new consumer. Errors: ReadBackError after `maxResets` gaps; JetStream errors of consumer creation as thrown.
 */
export async function readAll(js: JetStreamClient, jsm: JetStreamManager, o: ReadAllOptions, visit: (m: JsMsg) => void): Promise<{ read: number; resets: number }> {
  const cursor = new ReadCursor(o.startSeq);
  const maxResets = o.maxResets ?? 20;
  let read = 0;
  for (;;) {
    const ci = await jsm.consumers.add(o.stream, {
      ack_policy: AckPolicy.None,
      filter_subject: o.filter,
      deliver_policy: DeliverPolicy.StartSequence,
      opt_start_seq: cursor.next,
      inactive_threshold: nanos(60_000),
      mem_storage: true,
      num_replicas: 1,
    });
    let outcome: 'done' | 'reset' = 'done';
    try {
      if (ci.num_pending > 0) outcome = await pass(js, o, ci.name, cursor, (m) => {
        read++;
        visit(m);
      });
    } finally {
      await jsm.consumers.delete(o.stream, ci.name).catch(() => undefined);
    }
    if (outcome === 'done') return { read, resets: cursor.resets };
    cursor.restart();
    if (cursor.resets > maxResets) throw new ReadBackError(o.stream, o.filter, cursor.resets, cursor.next);
  }
}

/** Fetch from one consumer until caught up ('done') or a gap ('reset'). */
async function pass(js: JetStreamClient, o: ReadAllOptions, name: string, cursor: ReadCursor, visit: (m: JsMsg) => void): Promise<'done' | 'reset'> {
  const consumer = await js.consumers.get(o.stream, name);
  for (let idle = 0; ; ) {
    let got = 0;
    for await (const m of await consumer.fetch({ max_messages: o.batch ?? 1000, expires: o.expiresMs ?? 5000 })) {
      got++;
      const step = cursor.accept({ deliverySeq: m.info.deliverySequence, streamSeq: m.seq, pending: m.info.pending });
      if (step.action === 'reset') return 'reset';
      visit(m);
      if (step.done) return 'done';
    }
    if (got > 0) {
      idle = 0;
      continue;
    }
    const info = await consumer.info();
    const next = cursor.onEmpty({ numPending: info.num_pending, deliveredSeq: info.delivered.consumer_seq });
    if (next !== 'wait') return next;
    // Pending but nothing came: the consumer's node is slow or changing; a new consumer after maxIdle tries.
    if (++idle >= (o.maxIdle ?? 10)) return 'reset';
  }
}
