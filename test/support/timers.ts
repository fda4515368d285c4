import type { Timers } from '../../src/backoff.js';

/** Timers a test moves by hand: `advance(ms)` runs, in due order, every callback due by then. */
export class ManualTimers implements Timers {
  private nowMs = 0;
  private seq = 0;
  private readonly pending: { at: number; seq: number; fn: () => void }[] = [];

  get now(): number {
    return this.nowMs;
  }

  /** Delays (ms from when they were scheduled) of the callbacks still waiting, soonest first. */
  get waiting(): number[] {
    return this.pending.map((p) => p.at - this.nowMs);
  }

  after(ms: number, fn: () => void): () => void {
    const entry = { at: this.nowMs + ms, seq: this.seq++, fn };
    this.pending.push(entry);
    this.pending.sort((a, b) => a.at - b.at || a.seq - b.seq);
    return () => {
      const i = this.pending.indexOf(entry);
      if (i >= 0) this.pending.splice(i, 1);
    };
  }

  advance(ms: number): void {
    const until = this.nowMs + ms;
    while (this.pending.length > 0 && this.pending[0].at <= until) {
      const p = this.pending.shift()!;
      this.nowMs = p.at;
      p.fn();
    }
    this.nowMs = until;
  }
}
