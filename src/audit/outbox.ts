import { open, readdir, readFile, unlink, writeFile, mkdir, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { LatticeError } from '../errors.js';
import { systemClock, type Clock } from '../clock.js';
import { writeFileAtomic, fsyncDir } from '../fsutil.js';
import { createLogger, type Logger } from '../log.js';
import {
  AUDIT_EVENT_VERSION, auditSubject, newEventId, validateAuditEvent, TOKEN_RE,
  type AuditEvent, type AuditEventDraft,
} from './events.js';

/*
 * Durable audit outbox.
 *
 *   append(draft) -> queue -> [group commit: one write + one fdatasync per batch] -> resolves (recorded)
 *                                      |
 *   publisher: readFrom(seq) <- segment files (only fsynced bytes) -> JetStream -> markAcked(seq)
 *                                                                                 -> state.json (atomic)
 *                                                                                 -> delete acked segments
 *
 * Directory layout:
 *   state.json                 {"v":1,"launcherId":"...","ackedSeq":N}; written atomically (tmp+fsync+rename)
 *   seg-<firstSeq 20 digits>.log   append-only; one entry per line:
 *                              "<crc32 8 hex> <seq> <id> <subject> <event json>\n"
 *                              crc32 covers everything after the first space up to (not incl.) "\n".
 *   lock                       pid of the process that owns the outbox
 *
 * An entry is recorded once its line is fsynced; `append` resolves only then. After a crash the last line
 * of a segment may be torn (no "\n"): it is truncated away on open, since its append never resolved.
 * A line in the middle that fails its CRC is skipped and counted (disk corruption), never thrown.
 * `seq` continues across restarts from max(ackedSeq, last seq on disk) + 1.
 *
 * Bounded: `maxBytes` caps the bytes of entries not yet acknowledged by the server. Disk use is at most
 * that plus one segment of already-acknowledged entries awaiting deletion.
 */

export class OutboxFullError extends LatticeError {
  override readonly name = 'OutboxFullError';
  constructor(maxBytes: number) {
    super('EOUTBOX_FULL', `audit outbox is full (${maxBytes} bytes of events not yet acknowledged by the control plane); check the NATS connection, or raise the outbox size`);
  }
}
/** Another process (or another Outbox in this one) owns the directory: `pid` is the owner's. */
export class OutboxLockedError extends LatticeError {
  override readonly name = 'OutboxLockedError';
  constructor(
    dir: string,
    readonly pid: number,
  ) {
    super('EOUTBOX_LOCKED', `audit outbox ${dir} is in use by process ${pid}; stop it first`);
  }
}
/** append() after close(). */
export class OutboxClosedError extends LatticeError {
  override readonly name = 'OutboxClosedError';
  constructor() {
    super('EOUTBOX_CLOSED', 'audit outbox is closed');
  }
}
/** A write or fdatasync of a segment failed; `cause` is the OS error. The appends of that batch reject. */
export class OutboxWriteError extends LatticeError {
  override readonly name = 'OutboxWriteError';
  constructor(cause: unknown) {
    super('EOUTBOX_WRITE', `cannot write the audit outbox: ${(cause as Error)?.message ?? String(cause)}`, { cause });
  }
}
/** append() of a draft that, once enveloped, fails validateAuditEvent (the schema); no seq is consumed. */
export class InvalidAuditEventError extends LatticeError {
  override readonly name = 'InvalidAuditEventError';
  constructor(reason: string) {
    super('EAUDIT_INVALID', `audit event rejected: ${reason}`);
  }
}

export const OUTBOX_DEFAULTS = {
  maxBytes: 256 * 1024 * 1024,
  segmentBytes: 8 * 1024 * 1024,
  maxLineBytes: 64 * 1024,
  /** isFull() clears once pending bytes fall below this fraction of maxBytes. */
  resumeFraction: 0.9,
  /** At most one "still full" warning per this many ms. */
  fullLogIntervalMs: 10_000,
} as const;

export interface OutboxOptions {
  dir: string;
  /** Identity stamped on every event; defaults to the one stored in the outbox, else a random one. */
  launcherId?: string;
  maxBytes?: number;
  segmentBytes?: number;
  /** One fdatasync for all appends queued while the previous one ran (default). false: one per event. */
  groupCommit?: boolean;
  clock?: Clock;
  logger?: Logger;
}

/** One recorded entry as the publisher sees it. */
export interface OutboxEntry {
  seq: number;
  id: string;
  subject: string;
  payload: Uint8Array;
  /** Bytes of the whole line on disk (what it counts against maxBytes). */
  bytes: number;
}

export interface OutboxStats {
  launcherId: string;
  nextSeq: number;
  durableSeq: number;
  ackedSeq: number;
  pendingBytes: number;
  maxBytes: number;
  refused: number;
  appended: number;
  fsyncs: number;
  corruptLines: number;
  tornBytes: number;
  segments: number;
  full: boolean;
}

interface Segment {
  path: string;
  firstSeq: number;
  /** Seq of the last valid line (firstSeq - 1 when empty). */
  lastSeq: number;
  /** Bytes known to be on disk and fsynced. */
  size: number;
}

interface Queued {
  seq: number;
  line: Buffer;
  event: AuditEvent;
  resolve: (ev: AuditEvent) => void;
  reject: (err: unknown) => void;
}

interface StateFile {
  v: 1;
  launcherId: string;
  ackedSeq: number;
}

const SEG_RE = /^seg-(\d{20})\.log$/;
const segName = (firstSeq: number) => `seg-${String(firstSeq).padStart(20, '0')}.log`;
const NL = 0x0a;

/** Encode one entry as its outbox line. Exported for tests and tools. */
export function encodeLine(seq: number, id: string, subject: string, json: string): Buffer {
  const buf = Buffer.from(`00000000 ${seq} ${id} ${subject} ${json}\n`, 'utf8');
  const crc = crc32(buf.subarray(9, buf.length - 1));
  buf.write(crc.toString(16).padStart(8, '0'), 0, 'latin1');
  return buf;
}

/** Decode one line (without "\n"); null when it fails its CRC or shape. */
export function decodeLine(line: Buffer): { seq: number; id: string; subject: string; payload: Buffer } | null {
  if (line.length < 12 || line[8] !== 0x20) return null;
  const crc = parseInt(line.toString('latin1', 0, 8), 16);
  const body = line.subarray(9);
  if (!Number.isFinite(crc) || crc32(body) !== crc) return null;
  const s1 = body.indexOf(0x20);
  const s2 = s1 < 0 ? -1 : body.indexOf(0x20, s1 + 1);
  const s3 = s2 < 0 ? -1 : body.indexOf(0x20, s2 + 1);
  if (s3 < 0) return null;
  const seq = Number(body.toString('latin1', 0, s1));
  if (!Number.isSafeInteger(seq) || seq < 1) return null;
  return {
    seq,
    id: body.toString('latin1', s1 + 1, s2),
    subject: body.toString('latin1', s2 + 1, s3),
    payload: body.subarray(s3 + 1),
  };
}

/**
 * The durable outbox (see the drawing above). Open with Outbox.open(); producers append(), one
 * OutboxPublisher reads and acknowledges; close() flushes and releases the directory.
 */
export class Outbox {
  readonly dir: string;
  readonly launcherId: string;
  readonly maxBytes: number;
  private readonly segmentBytes: number;
  private readonly groupCommit: boolean;
  private readonly clock: Clock;
  private readonly log: Logger;

  private segments: Segment[] = [];
  /** The segment appends go to; null until the first write after open or compaction. */
  private active: Segment | null = null;
  private fh: FileHandle | null = null;

  private nextSeq: number;
  private durableSeq: number;
  private ackedSeq: number;
  private persistedAckedSeq: number;
  private pendingBytes: number;

  private queue: Queued[] = [];
  private flushing = false;
  private writer: Promise<void> = Promise.resolve();
  private durableWaiters: Array<() => void> = [];
  private persisting: Promise<void> | null = null;
  private persistAgain = false;
  private closed = false;

  private full = false;
  private refused = 0;
  private refusedSinceLog = 0;
  private lastFullLog = -Infinity;
  private appended = 0;
  private fsyncs = 0;
  private corruptLines: number;
  private tornBytes: number;

  private constructor(opts: OutboxOptions, st: {
    launcherId: string; ackedSeq: number; segments: Segment[]; maxSeq: number; pendingBytes: number; corruptLines: number; tornBytes: number;
  }) {
    this.dir = opts.dir;
    this.launcherId = st.launcherId;
    this.maxBytes = opts.maxBytes ?? OUTBOX_DEFAULTS.maxBytes;
    this.segmentBytes = Math.max(4096, Math.min(opts.segmentBytes ?? OUTBOX_DEFAULTS.segmentBytes, Math.floor(this.maxBytes / 4)));
    this.groupCommit = opts.groupCommit ?? true;
    this.clock = opts.clock ?? systemClock;
    this.log = opts.logger ?? createLogger({ name: 'audit-outbox' });
    this.segments = st.segments;
    this.ackedSeq = st.ackedSeq;
    this.persistedAckedSeq = st.ackedSeq;
    this.nextSeq = st.maxSeq + 1;
    this.durableSeq = st.maxSeq;
    this.pendingBytes = st.pendingBytes;
    this.corruptLines = st.corruptLines;
    this.tornBytes = st.tornBytes;
  }

  /** Open (or create) the outbox in `dir`, recovering from a crash: torn tails are truncated. */
  static async open(opts: OutboxOptions): Promise<Outbox> {
    const dir = opts.dir;
    const log = opts.logger ?? createLogger({ name: 'audit-outbox' });
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await takeLock(dir);
    try {
      let state: StateFile | null = null;
      try {
        state = JSON.parse(await readFile(join(dir, 'state.json'), 'utf8')) as StateFile;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new LatticeError('EOUTBOX_STATE', `audit outbox state ${join(dir, 'state.json')} is unreadable; move it aside to start over`, { cause: err });
      }
      const ackedSeq = state && Number.isSafeInteger(state.ackedSeq) ? state.ackedSeq : 0;
      const launcherId = opts.launcherId ?? state?.launcherId ?? `l${randomBytes(8).toString('hex')}`;
      if (!TOKEN_RE.test(launcherId)) throw new LatticeError('EUSAGE', `launcher id ${JSON.stringify(launcherId)} must match ${TOKEN_RE}`);

      const names = (await readdir(dir)).filter((n) => SEG_RE.test(n)).sort();
      const segments: Segment[] = [];
      let maxSeq = ackedSeq;
      let pendingBytes = 0;
      let corruptLines = 0;
      let tornBytes = 0;
      for (const name of names) {
        const path = join(dir, name);
        const firstSeq = Number(SEG_RE.exec(name)![1]);
        const buf = await readFile(path);
        let lastSeq = firstSeq - 1;
        let off = 0;
        for (;;) {
          const nl = buf.indexOf(NL, off);
          if (nl < 0) break;
          const e = decodeLine(buf.subarray(off, nl));
          if (!e || e.seq <= lastSeq) {
            corruptLines++;
          } else {
            lastSeq = e.seq;
            if (e.seq > ackedSeq) pendingBytes += nl + 1 - off;
          }
          off = nl + 1;
        }
        if (off < buf.length) {
          // A torn last line: its append never resolved, so it was never recorded. Cut it off.
          tornBytes += buf.length - off;
          const fh = await open(path, 'r+');
          try {
            await fh.truncate(off);
            await fh.sync();
          } finally {
            await fh.close();
          }
          log.warn({ segment: name, bytes: buf.length - off }, 'audit outbox: truncated a torn line left by a crash');
        }
        if (corruptLines > 0) log.error({ segment: name, corruptLines }, 'audit outbox: skipped lines that fail their checksum');
        maxSeq = Math.max(maxSeq, lastSeq);
        if (lastSeq <= ackedSeq) {
          await unlink(path);
          continue;
        }
        segments.push({ path, firstSeq, lastSeq, size: off });
      }
      const ob = new Outbox(opts, { launcherId, ackedSeq, segments, maxSeq, pendingBytes, corruptLines, tornBytes });
      if (!state || state.launcherId !== launcherId) await ob.persistState();
      return ob;
    } catch (err) {
      await releaseLock(dir);
      throw err;
    }
  }

  /**
   * Record an event. Resolves with the full event once it is on disk (fsynced); rejects with
   * OutboxFullError when the outbox is full (the refusal is counted and logged).
   */
  append(draft: AuditEventDraft): Promise<AuditEvent> {
    if (this.closed) return Promise.reject(new OutboxClosedError());
    const now = this.clock.now();
    const seq = this.nextSeq;
    const event = {
      v: AUDIT_EVENT_VERSION,
      id: newEventId(now),
      seq,
      launcherId: this.launcherId,
      ...draft,
      ts: draft.ts ?? new Date(now).toISOString(),
    } as AuditEvent;
    const check = validateAuditEvent(event);
    if (!check.ok) return Promise.reject(new InvalidAuditEventError(check.reason));
    const line = encodeLine(seq, event.id, auditSubject(event), JSON.stringify(event));
    if (line.length > OUTBOX_DEFAULTS.maxLineBytes) return Promise.reject(new InvalidAuditEventError(`event is ${line.length} bytes, over ${OUTBOX_DEFAULTS.maxLineBytes}`));
    if (this.pendingBytes + line.length > this.maxBytes) return Promise.reject(this.refuse());
    this.nextSeq++;
    this.pendingBytes += line.length;
    return new Promise<AuditEvent>((resolve, reject) => {
      this.queue.push({ seq, line, event, resolve, reject });
      if (!this.flushing) void this.flushLoop();
    });
  }

  /** True while the outbox refuses (or is about to refuse) events: do not start new sandboxes. */
  isFull(): boolean {
    return this.full || this.pendingBytes >= this.maxBytes;
  }

  /** Counters and watermarks (seq numbers; bytes of entries not yet acknowledged). */
  stats(): OutboxStats {
    return {
      launcherId: this.launcherId,
      nextSeq: this.nextSeq,
      durableSeq: this.durableSeq,
      ackedSeq: this.ackedSeq,
      pendingBytes: this.pendingBytes,
      maxBytes: this.maxBytes,
      refused: this.refused,
      appended: this.appended,
      fsyncs: this.fsyncs,
      corruptLines: this.corruptLines,
      tornBytes: this.tornBytes,
      segments: this.segments.length,
      full: this.isFull(),
    };
  }

  get ackedThrough(): number {
    return this.ackedSeq;
  }

  get durableThrough(): number {
    return this.durableSeq;
  }

  private refuse(): OutboxFullError {
    this.refused++;
    this.refusedSinceLog++;
    const now = this.clock.monotonic();
    if (!this.full) {
      this.full = true;
      this.lastFullLog = now;
      this.refusedSinceLog = 0;
      this.log.error({ maxBytes: this.maxBytes, pendingBytes: this.pendingBytes, refused: this.refused },
        'AUDIT OUTBOX FULL: refusing audit events; new sandboxes will not start until the control plane acknowledges pending events');
    } else if (now - this.lastFullLog >= OUTBOX_DEFAULTS.fullLogIntervalMs) {
      this.lastFullLog = now;
      this.log.error({ refusedSinceLastLog: this.refusedSinceLog, refused: this.refused, pendingBytes: this.pendingBytes },
        'audit outbox still full: events refused');
      this.refusedSinceLog = 0;
    }
    return new OutboxFullError(this.maxBytes);
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.writer.then(fn);
    this.writer = run.then(() => undefined, () => undefined);
    return run;
  }

  private async flushLoop(): Promise<void> {
    this.flushing = true;
    try {
      while (this.queue.length > 0) {
        const batch = this.groupCommit ? this.queue.splice(0) : this.queue.splice(0, 1);
        await this.exclusive(() => this.writeBatch(batch));
      }
    } finally {
      this.flushing = false;
    }
  }

  private async writeBatch(batch: Queued[]): Promise<void> {
    const buf = batch.length === 1 ? batch[0].line : Buffer.concat(batch.map((q) => q.line));
    let seg = this.active;
    try {
      if (!seg || !this.fh || seg.size >= this.segmentBytes) {
        await this.closeActive();
        const path = join(this.dir, segName(batch[0].seq));
        this.fh = await open(path, 'a', 0o600);
        seg = { path, firstSeq: batch[0].seq, lastSeq: batch[0].seq - 1, size: 0 };
        this.active = seg;
        this.segments.push(seg);
        await fsyncDir(this.dir);
      }
      let off = 0;
      while (off < buf.length) {
        const { bytesWritten } = await this.fh.write(buf, off, buf.length - off);
        off += bytesWritten;
      }
      await this.fh.datasync();
      this.fsyncs++;
    } catch (err) {
      // Nothing of this batch counts: cut the file back, give the seqs back, fail everything queued behind it.
      const failed = [...batch, ...this.queue.splice(0)];
      if (seg && this.fh) await this.fh.truncate(seg.size).catch(() => undefined);
      this.nextSeq = batch[0].seq;
      for (const q of failed) this.pendingBytes -= q.line.length;
      const e = new OutboxWriteError(err);
      this.log.error({ err: e.message, events: failed.length }, 'audit outbox write failed');
      for (const q of failed) q.reject(e);
      return;
    }
    seg.size += buf.length;
    seg.lastSeq = batch[batch.length - 1].seq;
    this.durableSeq = seg.lastSeq;
    this.appended += batch.length;
    for (const q of batch) q.resolve(q.event);
    const waiters = this.durableWaiters.splice(0);
    for (const w of waiters) w();
  }

  private async closeActive(): Promise<void> {
    if (this.fh) {
      await this.fh.close();
      this.fh = null;
    }
    this.active = null;
  }

  /** Resolve when an entry after `seq` is durable, or after timeoutMs, or on close. */
  waitForDurable(seq: number, timeoutMs: number): Promise<void> {
    if (this.durableSeq > seq || this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        resolve();
      };
      const t = setTimeout(() => {
        const i = this.durableWaiters.indexOf(done);
        if (i >= 0) this.durableWaiters.splice(i, 1);
        resolve();
      }, timeoutMs);
      this.durableWaiters.push(done);
    });
  }

  /**
   * Read recorded entries with seq >= fromSeq, in order, up to maxEntries (only fsynced bytes).
   * Lines failing their checksum are skipped and counted.
   */
  async readFrom(fromSeq: number, maxEntries: number, maxBytes = 4 * 1024 * 1024): Promise<OutboxEntry[]> {
    const out: OutboxEntry[] = [];
    let budget = maxBytes;
    for (const seg of [...this.segments]) {
      if (seg.lastSeq < fromSeq || seg.size === 0) continue;
      let off = 0;
      // Continue a sequential read where the previous call stopped, instead of rescanning the segment.
      if (this.readCursor && this.readCursor.path === seg.path && this.readCursor.nextSeq === fromSeq) off = this.readCursor.offset;
      let fh: FileHandle;
      try {
        fh = await open(seg.path, 'r');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // compacted meanwhile
        throw err;
      }
      try {
        const limit = seg.size;
        while (off < limit && out.length < maxEntries && budget > 0) {
          const want = Math.min(limit - off, 1024 * 1024);
          const chunk = Buffer.allocUnsafe(want);
          const { bytesRead } = await fh.read(chunk, 0, want, off);
          if (bytesRead === 0) break;
          let p = 0;
          for (;;) {
            const nl = chunk.indexOf(NL, p);
            if (nl < 0 || nl >= bytesRead) break;
            const e = decodeLine(chunk.subarray(p, nl));
            const lineBytes = nl + 1 - p;
            p = nl + 1;
            if (!e) {
              this.corruptLines++;
              continue;
            }
            if (e.seq < fromSeq) continue;
            out.push({ seq: e.seq, id: e.id, subject: e.subject, payload: e.payload, bytes: lineBytes });
            budget -= lineBytes;
            fromSeq = e.seq + 1;
            if (out.length >= maxEntries || budget <= 0) break;
          }
          if (p === 0) break; // a line longer than the chunk cannot happen (maxLineBytes < chunk)
          off += p;
        }
        this.readCursor = { path: seg.path, offset: off, nextSeq: fromSeq };
      } finally {
        await fh.close();
      }
      if (out.length >= maxEntries || budget <= 0) break;
    }
    return out;
  }

  private readCursor: { path: string; offset: number; nextSeq: number } | null = null;

  /**
   * The server acknowledged every entry through `seq`, which together hold `bytes` line bytes.
   * The watermark is persisted (coalesced) and fully acknowledged segments are deleted.
   */
  markAcked(seq: number, bytes: number): void {
    if (seq <= this.ackedSeq) return;
    this.ackedSeq = seq;
    this.pendingBytes = Math.max(0, this.pendingBytes - bytes);
    if (this.full && this.pendingBytes <= this.maxBytes * OUTBOX_DEFAULTS.resumeFraction) {
      this.full = false;
      this.log.warn({ refused: this.refused, pendingBytes: this.pendingBytes }, 'audit outbox has room again');
    }
    this.schedulePersist();
  }

  private schedulePersist(): void {
    if (this.persisting) {
      this.persistAgain = true;
      return;
    }
    this.persisting = (async () => {
      try {
        do {
          this.persistAgain = false;
          await this.persistState();
          await this.compact();
        } while (this.persistAgain);
      } catch (err) {
        this.log.error({ err: (err as Error).message }, 'audit outbox: cannot persist the acknowledged watermark');
      } finally {
        this.persisting = null;
      }
    })();
  }

  /** Wait until the latest acknowledged watermark is on disk. */
  async flushAcks(): Promise<void> {
    while (this.persisting) await this.persisting;
    if (this.persistedAckedSeq < this.ackedSeq) await this.persistState();
  }

  private async persistState(): Promise<void> {
    const acked = this.ackedSeq;
    const st: StateFile = { v: 1, launcherId: this.launcherId, ackedSeq: acked };
    await writeFileAtomic(join(this.dir, 'state.json'), JSON.stringify(st) + '\n');
    this.persistedAckedSeq = Math.max(this.persistedAckedSeq, acked);
  }

  /** Delete segments whose every entry is acknowledged on disk; the active one only when idle. */
  private async compact(): Promise<void> {
    const acked = this.persistedAckedSeq;
    const victims = this.segments.filter((s) => s.lastSeq <= acked && s !== this.active);
    for (const s of victims) {
      await unlink(s.path).catch(() => undefined);
      this.segments.splice(this.segments.indexOf(s), 1);
    }
    const act = this.active;
    if (act && act.lastSeq <= acked && act.size >= Math.min(this.segmentBytes, 64 * 1024) && this.queue.length === 0) {
      await this.exclusive(async () => {
        if (this.active !== act || act.lastSeq > this.persistedAckedSeq) return;
        await this.closeActive();
        await unlink(act.path).catch(() => undefined);
        this.segments.splice(this.segments.indexOf(act), 1);
      });
    }
  }

  /** Flush queued appends, persist the watermark, release the lock. */
  async close(): Promise<void> {
    if (this.closed) return;
    while (this.flushing || this.queue.length > 0) await this.exclusive(async () => undefined);
    this.closed = true;
    for (const w of this.durableWaiters.splice(0)) w();
    await this.flushAcks();
    await this.exclusive(() => this.closeActive());
    await releaseLock(this.dir);
  }
}

// ---------------------------------------------------------------------------------------------
// One process per outbox directory.

/**
 * The lock file holds "<pid> <process start>": the owner's pid and its `performance.timeOrigin` (the
 * wall-clock ms at which that process started). One owner per directory:
 *   - our pid and our start: an outbox still open in this process (close deletes the file): locked;
 *   - our pid, another start: a process that died with our pid (a restarted container's pid 1): take over;
 *   - another pid that is alive: locked; a dead one (kill -9): take over.
 * Nothing is kept in the module: the file is the only record.
 */
async function takeLock(dir: string): Promise<void> {
  const path = join(dir, 'lock');
  const owner = `${process.pid} ${performance.timeOrigin}`;
  try {
    await writeFile(path, owner, { flag: 'wx', mode: 0o600 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const held = (await readFile(path, 'utf8').catch(() => '')).trim();
    const pid = Number(held.split(' ')[0]);
    if (pid === process.pid ? held === owner : pid > 0 && isAlive(pid)) throw new OutboxLockedError(dir, pid);
    // The owner died (e.g. kill -9): take over.
    await writeFileAtomic(path, owner);
  }
}

async function releaseLock(dir: string): Promise<void> {
  await unlink(join(dir, 'lock')).catch(() => undefined);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
