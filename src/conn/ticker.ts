/**
 * The OS-timer edge of the WireGuard device. Device keeps its timers as monotonic deadlines and fires the
 * expired ones from tick(); a Ticker decides when tick() runs. Tests pass none and call tick() after
 * moving a ManualClock; the runtime passes an IntervalTicker.
 */
export interface Ticker {
  /** Call `tick` on this ticker's schedule from now on. Called once, by Device.up(). */
  start(tick: () => void): void;
  /** Stop calling; idempotent. Called by Device.close(). */
  stop(): void;
}

/** Ticks every `periodMs` milliseconds with setInterval; the timer does not keep the process alive. */
export class IntervalTicker implements Ticker {
  private timer?: ReturnType<typeof setInterval>;

  /** @param periodMs tick period in ms, > 0 (100 is plenty: WireGuard's timers are whole seconds). */
  constructor(readonly periodMs: number) {
    if (!(periodMs > 0)) throw new RangeError(`tick period must be > 0 ms, got ${periodMs}`);
  }

  start(tick: () => void): void {
    this.stop();
    this.timer = setInterval(tick, this.periodMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
