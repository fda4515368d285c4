/**
 * One backoff for every retry loop (relay reconnects, ICE rebuilds, audit publishing, KV compare-and-set).
 *
 * Delays follow "decorrelated jitter" (AWS Architecture Blog, "Exponential Backoff And Jitter", 2015):
 *
 *   delay(0) = initialMs
 *   delay(n) = min(maxMs, uniform(initialMs, delay(n-1) * 3))
 *
 * so retries from many clients spread out instead of arriving in lock-step, a delay is never below
 * `initialMs` (no busy loop) and never above `maxMs`. `reset()` starts over (call it after a success).
 *
 * Time and chance are injected: `timers` schedules the wait (tests pass a manual twin and move it by hand)
 * and `random` returns floats in [0, 1) (tests pass a seeded generator). Nothing here reads a global clock.
 */

/** Schedules one callback; the seam a test replaces to run retries without sleeping. */
export interface Timers {
  /** Call `fn` once after `ms` milliseconds; the returned function cancels it (a no-op once it ran). */
  after(ms: number, fn: () => void): () => void;
}

/** Node's timers. `unref` ones do not keep the process alive on their own. */
export function systemTimers(opts: { unref?: boolean } = {}): Timers {
  return {
    after(ms, fn) {
      const t = setTimeout(fn, ms);
      if (opts.unref) t.unref();
      return () => clearTimeout(t);
    },
  };
}

export interface BackoffOptions {
  /** First delay and the floor of every later one, in ms (> 0). */
  initialMs: number;
  /** Ceiling of every delay, in ms (>= initialMs). */
  maxMs: number;
  /** Floats in [0, 1); default Math.random. */
  random?: () => number;
  /** Where waits are scheduled; default Node's timers (referenced). */
  timers?: Timers;
}

export class Backoff {
  private prev = 0;
  private n = 0;
  private readonly random: () => number;
  private readonly timers: Timers;

  /** @throws RangeError when initialMs is not > 0 or maxMs < initialMs. */
  constructor(private readonly opts: BackoffOptions) {
    if (!(opts.initialMs > 0) || !(opts.maxMs >= opts.initialMs)) {
      throw new RangeError(`backoff needs 0 < initialMs <= maxMs, got ${opts.initialMs} and ${opts.maxMs}`);
    }
    this.random = opts.random ?? Math.random;
    this.timers = opts.timers ?? systemTimers();
  }

  /** Delays handed out since construction or the last reset. */
  get attempts(): number {
    return this.n;
  }

  /** The next delay in ms (an integer in [initialMs, maxMs]); each call counts as one attempt. */
  next(): number {
    const { initialMs, maxMs } = this.opts;
    const d = this.n === 0 ? initialMs : Math.min(maxMs, initialMs + this.random() * (this.prev * 3 - initialMs));
    this.n++;
    this.prev = Math.round(Math.max(initialMs, Math.min(maxMs, d)));
    return this.prev;
  }

  /** Start over from `initialMs` (after a success). */
  reset(): void {
    this.n = 0;
    this.prev = 0;
  }

  /** Run `fn` after the next delay; returns a function that cancels it. */
  schedule(fn: () => void): () => void {
    return this.timers.after(this.next(), fn);
  }

  /** Wait the next delay. Resolves early (without an error) when `signal` aborts. */
  wait(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = (): void => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      };
      const cancel = this.schedule(done);
      const onAbort = (): void => {
        cancel();
        done();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }
}
