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
