import type { Msg, NatsConnection, Subscription } from 'nats';
import type { Logger } from '../log.js';
import type { ControlPlaneService } from './service.js';
import { isStoreUnavailable } from './natskv.js';
import { CpErrorCode, ControlPlaneError, SUBJECTS, type ErrorReply } from './types.js';

/** Largest request body accepted over NATS; anything bigger is answered with EBADREQ and counted. */
export const MAX_REQUEST_BYTES = 64 * 1024;

/** Every control-plane instance joins this queue group, so each request is served by exactly one of them. */
export const QUEUE_GROUP = 'lattice-control-plane';

/** Requests handled at once by one instance; more are answered EBUSY at once instead of queueing without bound. */
export const MAX_IN_FLIGHT = 1024;

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

/** Serve enrollment, endpoint updates and directory snapshots over NATS request/reply. */
export function serveNatsApi(
  nc: NatsConnection,
  svc: ControlPlaneService,
  log?: Logger,
  /** More subjects served by the same loop (agentops.ts: delegation, egress requests). */
  extra: Record<string, (req: unknown) => Promise<unknown>> = {},
): { stats: NatsApiStats; stop(): void } {
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
          if (err instanceof ControlPlaneError) reply = errorReply(err.code, err.message, err.challenge);
          else if (isStoreUnavailable(err)) {
            // A NATS node died or a stream elects its leader (seconds): the caller retries (enroll does).
            stats.unavailable++;
            log?.warn({ err: (err as Error).message, subject: msg.subject }, 'control-plane store did not answer');
            reply = errorReply(CpErrorCode.Busy, 'the control plane\'s store (JetStream) did not answer: a NATS node may be down or electing a leader; retry shortly');
          } else {
            log?.error({ err: (err as Error).message, subject: msg.subject }, 'control-plane request failed');
            reply = errorReply(CpErrorCode.Internal, 'internal error in the control plane; see its log');
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
    stop: () => {
      for (const s of subs) s.unsubscribe();
    },
  };
}

/** The error reply of the NATS API: {error: {code, message, challenge?}}; challenge only for a proof-of-key retry. */
export function errorReply(code: CpErrorCode, message: string, challenge?: { nonce: string; key: string; namespace: string }): ErrorReply {
  return { error: { code, message, ...(challenge ? { challenge } : {}) } };
}
