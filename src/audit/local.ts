import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { pino } from 'pino';
import type { AuditEventDraft } from './events.js';

/**
 * The local audit trail: one JSON line per event, appended to a file through pino (synchronous
 * writes, so a line is on disk before the packet it describes moves on). The durable outbox to the
 * control plane (outbox.ts) is the other sink; this one needs no control plane at all.
 */
export function ndjsonAuditSink(file: string, base: Record<string, unknown> = {}) {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const dest = pino.destination({ dest: file, sync: true, mkdir: true });
  const log = pino({ base, timestamp: pino.stdTimeFunctions.isoTime }, dest);
  const sink = (event: AuditEventDraft) => log.info(event);
  /** Flush what is buffered and close the file; resolves once the descriptor is closed. */
  let closed: Promise<void> | undefined;
  const close = () =>
    (closed ??= new Promise<void>((resolve) => {
      dest.once('close', () => resolve());
      dest.flushSync();
      dest.end();
    }));
  return Object.assign(sink, { close });
}
