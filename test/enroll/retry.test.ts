import { describe, expect, it } from 'vitest';
import { BUSY_BACKOFF, ControlPlaneUnreachableError, EnrollError, retryWhileBusy, type RetryClock } from '../../src/enroll/client.js';
import { CpErrorCode } from '../../src/controlplane/types.js';
import { ManualTimers } from '../support/timers.js';
import { seededRandom } from '../support/random.js';

/** The launcher's EBUSY retry (src/enroll/client.ts) on manual timers: no wall clock, no sleeping. */

const busy = () => new EnrollError(CpErrorCode.Busy, 'the control plane is busy');

function manualClock(): { clock: RetryClock; timers: ManualTimers } {
  const timers = new ManualTimers();
  const rnd = seededRandom();
  return { timers, clock: { timers, now: () => timers.now, random: rnd.float } };
}

/** Let pending promise callbacks run (not a wait on time: manual timers only move by `advance`). */
const flush = () => new Promise<void>((r) => setImmediate(r));

/**
 * Drive `p` to its end: whenever it is parked on a backoff timer, move the manual clock to that timer.
 * Fails if `p` is neither settled nor waiting on a timer (a retry that hangs).
 */
async function drive<T>(p: Promise<T>, timers: ManualTimers): Promise<PromiseSettledResult<T>> {
  let result: PromiseSettledResult<T> | undefined;
  p.then(
    (value) => (result = { status: 'fulfilled', value }),
    (reason: unknown) => (result = { status: 'rejected', reason }),
  );
  for (let steps = 0; steps < 10_000; steps++) {
    await flush();
    if (result) return result;
    const [next] = timers.waiting;
    if (next === undefined) throw new Error('the retry neither finished nor waits on a timer');
    timers.advance(next);
  }
  throw new Error('the retry did not end after 10000 timer steps');
}

describe('retryWhileBusy', () => {
  it('retries EBUSY replies and returns the first success, each wait within the backoff bounds', async () => {
    const { clock, timers } = manualClock();
    const at: number[] = [];
    const r = await drive(
      retryWhileBusy(async () => {
        at.push(timers.now);
        if (at.length <= 5) throw busy();
        return 'enrolled';
      }, 30_000, clock),
      timers,
    );
    expect(r).toEqual({ status: 'fulfilled', value: 'enrolled' });
    expect(at).toHaveLength(6);
    const waits = at.slice(1).map((t, i) => t - at[i]);
    expect(waits[0]).toBe(BUSY_BACKOFF.initialMs);
    for (const w of waits) {
      expect(w).toBeGreaterThanOrEqual(BUSY_BACKOFF.initialMs);
      expect(w).toBeLessThanOrEqual(BUSY_BACKOFF.maxMs);
    }
  });

  it('gives up with the last EBUSY once the timeout has passed, never waiting past it by more than one ceiling', async () => {
    const { clock, timers } = manualClock();
    const timeoutMs = 10_000;
    const at: number[] = [];
    const remaining: number[] = [];
    const r = await drive(
      retryWhileBusy(async (left) => {
        at.push(timers.now);
        remaining.push(left);
        throw busy();
      }, timeoutMs, clock),
      timers,
    );
    expect(r.status).toBe('rejected');
    const err = (r as PromiseRejectedResult).reason as EnrollError;
    expect(err).toBeInstanceOf(EnrollError);
    expect(err.code).toBe(CpErrorCode.Busy);
    const last = at[at.length - 1];
    expect(last).toBeGreaterThanOrEqual(timeoutMs);
    expect(last).toBeLessThanOrEqual(timeoutMs + BUSY_BACKOFF.maxMs);
    // Every attempt before the deadline came earlier than it; the delays stayed within bounds.
    expect(at.slice(0, -1).every((t) => t < timeoutMs)).toBe(true);
    for (let i = 1; i < at.length; i++) {
      expect(at[i] - at[i - 1]).toBeGreaterThanOrEqual(BUSY_BACKOFF.initialMs);
      expect(at[i] - at[i - 1]).toBeLessThanOrEqual(BUSY_BACKOFF.maxMs);
    }
    // Each attempt is given what is left of the timeout, at least 1 s.
    at.forEach((t, i) => expect(remaining[i]).toBe(Math.max(1000, timeoutMs - t)));
    // The backoff grows: fewer attempts than polling every initialMs would make.
    expect(at.length).toBeLessThan(timeoutMs / BUSY_BACKOFF.initialMs);
  });

  it('throws any other error at once, without retrying or waiting', async () => {
    for (const make of [
      () => new EnrollError(CpErrorCode.TokenExpired, 'the token expired'),
      () => new EnrollError(CpErrorCode.Revoked, 'revoked'),
      () => new ControlPlaneUnreachableError('no control plane is serving'),
      () => new Error('unexpected'),
    ]) {
      const { clock, timers } = manualClock();
      let calls = 0;
      const thrown = make();
      const r = await drive(
        retryWhileBusy(async () => {
          calls++;
          throw thrown;
        }, 10_000, clock),
        timers,
      );
      expect(r).toEqual({ status: 'rejected', reason: thrown });
      expect(calls).toBe(1);
      expect(timers.now).toBe(0);
      expect(timers.waiting).toEqual([]);
    }
  });

  it('a non-busy error after some EBUSY replies ends the retry at once', async () => {
    const { clock, timers } = manualClock();
    let calls = 0;
    const r = await drive(
      retryWhileBusy(async () => {
        calls++;
        if (calls <= 3) throw busy();
        if (calls === 4) throw new EnrollError(CpErrorCode.TokenExpired, 'the token expired');
        return 'never';
      }, 30_000, clock),
      timers,
    );
    expect(r.status).toBe('rejected');
    expect(((r as PromiseRejectedResult).reason as EnrollError).code).toBe(CpErrorCode.TokenExpired);
    expect(calls).toBe(4);
  });
});
