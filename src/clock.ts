/** Time is injected so protocol timers, expiries and retries are tested without sleeping. */
export interface Clock {
  /** Milliseconds since the epoch (wall clock, for expiries and audit timestamps). */
  now(): number;
  /** Monotonic milliseconds (for timers and durations). */
  monotonic(): number;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
};

/** A clock the test moves by hand. */
export class ManualClock implements Clock {
  constructor(
    private wall = 1_700_000_000_000,
    private mono = 0,
  ) {}
  now(): number {
    return this.wall;
  }
  monotonic(): number {
    return this.mono;
  }
  advance(ms: number): void {
    this.wall += ms;
    this.mono += ms;
  }
}

/**
 * Wait for `p`, but at most `ms` milliseconds: resolves to `p`'s value, or `undefined` when time ran out
 * first (`p` keeps running; its rejection after that is ignored). The timer is cleared as soon as `p`
 * settles, so a bounded wait never leaves a timer behind the caller (a closed component holds none).
 */
export async function settleWithin<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  p.catch(() => undefined);
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
