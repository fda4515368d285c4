import { describe, expect, it } from 'vitest';
import { NatsError } from 'nats';
import { describeError } from '../../src/controlplane/http.js';
import { replyForError } from '../../src/controlplane/natsapi.js';
import { KvConflictError } from '../../src/controlplane/kv.js';
import { KvTimeoutError, unavailable } from '../../src/controlplane/natskv.js';
import { ControlPlaneError, CpErrorCode } from '../../src/controlplane/types.js';

/** A JetStream API error as nats.js builds it from the server's {error: {code, err_code, description}}. */
function apiError(code: number, errCode: number, description: string): NatsError {
  const e = new NatsError(description, String(code));
  (e as NatsError & { api_error: unknown }).api_error = { code, err_code: errCode, description };
  return e;
}

describe('errors of a request the control plane cannot serve now: EBUSY with one line, never "internal error"', () => {
  const passing: [string, unknown, 'store' | 'connection'][] = [
    // Seen when a control-plane instance stopped with enrollments in flight: its handlers' KV requests failed.
    ['this instance draining its NATS connection', new NatsError('CONNECTION_DRAINING', 'CONNECTION_DRAINING'), 'connection'],
    ['this instance closed', new NatsError('CONNECTION_CLOSED', 'CONNECTION_CLOSED'), 'connection'],
    ['this instance between servers', new NatsError('DISCONNECT', 'DISCONNECT'), 'connection'],
    ['no responders', new NatsError('503', '503'), 'store'],
    ['the client timed out', new NatsError('TIMEOUT', 'TIMEOUT'), 'store'],
    ['KV retries exhausted', new KvTimeoutError('lattice_agents', 'keys', 3, new Error('TIMEOUT')), 'store'],
    ['no meta leader', apiError(500, 10009, 'JetStream cluster can not handle request'), 'store'],
    ['temporarily unavailable', apiError(503, 10008, 'JetStream system temporarily unavailable'), 'store'],
    ['raft', apiError(500, 10041, 'raft: not leader'), 'store'],
    ['not assigned', apiError(500, 10007, 'JetStream cluster not assigned to this server'), 'store'],
  ];
  for (const [what, err, why] of passing) {
    it(`${what}: ${why}, EBUSY over NATS and 503 EBUSY over HTTP`, () => {
      expect(unavailable(err)).toBe(why);
      const r = replyForError(err);
      expect(r.outcome).toBe('unavailable');
      expect(r.reply.error.code).toBe(CpErrorCode.Busy);
      expect(r.reply.error.message).toMatch(/retry shortly/);
      expect(r.reply.error.message).not.toMatch(/\n/);
      expect(describeError(err)).toEqual({ status: 503, code: CpErrorCode.Busy, message: r.reply.error.message });
    });
  }

  it('a refusal keeps its code; a lost compare-and-set and unknown errors stay internal (logged), not retried', () => {
    expect(replyForError(new ControlPlaneError(CpErrorCode.TokenUnknown, 'unknown enrollment token'))).toEqual({ reply: { error: { code: CpErrorCode.TokenUnknown, message: 'unknown enrollment token' } }, outcome: 'refused' });
    for (const err of [new KvConflictError('k'), new TypeError('x is undefined'), apiError(400, 10071, 'wrong last sequence: 3'), apiError(500, 10012, 'consumer create failed')]) {
      expect(unavailable(err)).toBeUndefined();
      expect(replyForError(err)).toEqual({ reply: { error: { code: CpErrorCode.Internal, message: 'internal error in the control plane; see its log' } }, outcome: 'internal' });
      expect(describeError(err).status).toBe(500);
    }
  });
});
