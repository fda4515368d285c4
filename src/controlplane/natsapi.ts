import type { Msg, NatsConnection, Subscription } from 'nats';
import type { Logger } from '../log.js';
import type { ControlPlaneService } from './service.js';
import { unavailable, unavailableMessage } from './natskv.js';
import { CpErrorCode, ControlPlaneError, SUBJECTS, type ErrorReply } from './types.js';

/** Largest request body accepted over NATS; anything bigger is answered with EBADREQ and counted. */
export const MAX_REQUEST_BYTES = 64 * 1024;

/** Every control-plane instance joins this queue group, so each request is served by exactly one of them. */
export const QUEUE_GROUP = 'lattice-control-plane';

/** Requests handled at once by one instance; more are answered EBUSY at once instead of queueing without bound. */
export const MAX_IN_FLIGHT = 1024;

/** How long stop() waits for the handlers in flight (each KV step is bounded by KV_OP_TIMEOUT_MS, natskv.ts). */
export const STOP_GRACE_MS = 10_000;

const enc = new TextEncoder();
const dec = new TextDecoder();

export interface NatsApiStats {
  requests: number;
  malformed: number;
  /** Failed requests (unavailable included). */
  errors: number;
  /** Of `errors`: the store (JetStream) did not answer, answered EBUSY "retry shortly". */
  unavailable: number;
  busy: number;
}

/**
 * Serve enrollment, endpoint updates and directory snapshots over NATS request/reply. `stop()` drains: no new
 * request is taken, and those in flight are answered (within `graceMs`) before the caller closes the connection.
 */
export function serveNatsApi(
  nc: NatsConnection,
  svc: ControlPlaneService,
  log?: Logger,
  /** More subjects served by the same loop (agentops.ts: delegation, egress requests). */
  extra: Record<string, (req: unknown) => Promise<unknown>> = {},
): { stats: NatsApiStats; stop(graceMs?: number): Promise<void> } {
  const stats: NatsApiStats = { requests: 0, malformed: 0, errors: 0, unavailable: 0, busy: 0 };
  let inFlight = 0;
  const handlers: Record<string, (req: unknown) => Promise<unknown>> = {
    [SUBJECTS.enroll]: (r) => svc.enroll(r),
    [SUBJECTS.endpoint]: (r) => svc.updateEndpoint(r),
    [SUBJECTS.directory]: (r) => svc.directory(r),
    [SUBJECTS.routes]: (r) => svc.updateRoutes(r),
    ...extra,
  };
  const subs: Subscription[] = [];
  for (const [subject, handler] of Object.entries(handlers)) {
    subs.push(
      nc.subscribe(subject, {
        queue: QUEUE_GROUP,
        callback: (err, msg) => {
          if (err) return;
          void handle(msg, handler);
        },
      }),
    );
  }

  async function handle(msg: Msg, handler: (req: unknown) => Promise<unknown>): Promise<void> {
    stats.requests++;
    let reply: unknown;
    if (inFlight >= MAX_IN_FLIGHT) {
      stats.busy++;
      reply = errorReply(CpErrorCode.Busy, 'control plane is busy; retry shortly');
    } else if (msg.data.length > MAX_REQUEST_BYTES) {
      stats.malformed++;
      reply = errorReply(CpErrorCode.BadRequest, `request larger than ${MAX_REQUEST_BYTES} bytes`);
    } else {
      let body: unknown;
      try {
        body = JSON.parse(dec.decode(msg.data));
      } catch {
        stats.malformed++;
        reply = errorReply(CpErrorCode.BadRequest, 'request is not JSON');
      }
      if (reply === undefined) {
        inFlight++;
        try {
          reply = await handler(body);
        } catch (err) {
          stats.errors++;
          const r = replyForError(err);
          reply = r.reply;
          if (r.outcome === 'unavailable') {
            // A NATS node died, a stream elects its leader, or this instance is stopping (seconds): the caller retries (enroll does).
            stats.unavailable++;
            log?.warn({ err: (err as Error).message, subject: msg.subject }, 'control-plane request not served now (EBUSY)');
          } else if (r.outcome === 'internal') {
            log?.error({ err: (err as Error).message, subject: msg.subject }, 'control-plane request failed');
          }
        } finally {
          inFlight--;
        }
      }
    }
    // A request without a reply subject (a plain publish) gets nothing back.
    if (msg.reply) {
      try {
        msg.respond(enc.encode(JSON.stringify(reply)));
      } catch {
        // connection closing: the requester times out
      }
    }
  }

  return {
    stats,
    stop: async (graceMs = STOP_GRACE_MS) => {
      // Drain, not unsubscribe: requests the server routed to us before it saw the UNSUB are still handled,
      // and every handler in flight finishes while the connection is open, so its caller gets its answer
      // (a stopping instance used to fail them with CONNECTION_DRAINING, answered "internal error").
      await Promise.all(subs.map((s) => s.drain().catch(() => undefined)));
      const deadline = Date.now() + graceMs;
      while (inFlight > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    },
  };
}

/**
 * The reply to a request whose handler threw `err`: a ControlPlaneError as it is ('refused'); a passing
 * unavailability of the store or of this instance's connection as EBUSY with a one-line reason
 * ('unavailable', natskv.ts `unavailable`); anything else EINTERNAL ('internal', logged by the caller).
 */
export function replyForError(err: unknown): { reply: ErrorReply; outcome: 'refused' | 'unavailable' | 'internal' } {
  if (err instanceof ControlPlaneError) return { reply: errorReply(err.code, err.message, err.challenge), outcome: 'refused' };
  const why = unavailable(err);
  if (why) return { reply: errorReply(CpErrorCode.Busy, unavailableMessage(why)), outcome: 'unavailable' };
  return { reply: errorReply(CpErrorCode.Internal, 'internal error in the control plane; see its log'), outcome: 'internal' };
}

/** The error reply of the NATS API: {error: {code, message, challenge?}}; challenge only for a proof-of-key retry. */
export function errorReply(code: CpErrorCode, message: string, challenge?: { nonce: string; key: string; namespace: string }): ErrorReply {
  return { error: { code, message, ...(challenge ? { challenge } : {}) } };
}
