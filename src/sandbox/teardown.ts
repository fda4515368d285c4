/**
 * A stack of undo steps for everything opened on the way to a running sandbox: the shape of TC39's
 * AsyncDisposableStack (explicit resource management; Node 20 has no AsyncDisposableStack yet).
 *
 *   const t = new Teardown(log);
 *   const outbox = t.adopt('outbox', await Outbox.open(...), (o) => o.close());
 *   const nc = t.adopt('nats', await connect(...), (c) => c.close());
 *   ... any throw here: `await t.close()` closes nc, then outbox (last opened, first closed)
 *   return { close: t.move().close };   // success: the caller owns what was opened
 *
 * Closing never throws and never hangs: each step runs once, its error is logged, and a step that
 * does not finish within `stepDeadlineMs` is left behind (logged) so the next one still runs. A
 * resource whose close hangs (a publisher waiting on an unreachable server) must not keep the
 * others open, nor the command from exiting.
 */
import type { Logger } from 'pino';

/** Default bound on one undo step (ms). */
export const TEARDOWN_STEP_DEADLINE_MS = 3000;

interface Step {
  name: string;
  undo: () => unknown;
}

export class Teardown {
  private steps: Step[] = [];
  private closing: Promise<void> | undefined;

  /**
   * @param log where failed or overdue steps are reported (warn level, with the step's name).
   * @param stepDeadlineMs bound on each undo step in ms.
   */
  constructor(
    private readonly log?: Pick<Logger, 'warn'>,
    private readonly stepDeadlineMs = TEARDOWN_STEP_DEADLINE_MS,
  ) {}

  /** Register `undo` to run at close(), before every step registered earlier. */
  defer(name: string, undo: () => unknown): void {
    if (this.closing) throw new Error(`Teardown: "${name}" registered after close()`);
    this.steps.push({ name, undo });
  }

  /** Register `close(resource)` and return the resource (for `const x = t.adopt(...)`). */
  adopt<T>(name: string, resource: T, close: (resource: T) => unknown): T {
    this.defer(name, () => close(resource));
    return resource;
  }

  /** The step names still registered, first registered first. */
  pending(): string[] {
    return this.steps.map((s) => s.name);
  }

  /**
   * Hand every registered step to a new Teardown and leave this one empty (closing it then does
   * nothing): the success path's transfer of ownership.
   */
  move(): Teardown {
    const next = new Teardown(this.log, this.stepDeadlineMs);
    next.steps = this.steps;
    this.steps = [];
    return next;
  }

  /** Run every step once, last registered first. Resolves when all ran or overran; never rejects. */
  close(): Promise<void> {
    this.closing ??= this.run();
    return this.closing;
  }

  /**
   * Run `body`; if it throws, close everything registered so far and rethrow the original error.
   * The idiom for a constructor-like function that opens several things.
   */
  async guard<T>(body: () => Promise<T>): Promise<T> {
    try {
      return await body();
    } catch (err) {
      await this.close();
      throw err;
    }
  }

  private async run(): Promise<void> {
    const steps = this.steps.splice(0).reverse();
    for (const step of steps) {
      let timer: NodeJS.Timeout | undefined;
      const overdue = new Promise<'overdue'>((resolve) => {
        timer = setTimeout(() => resolve('overdue'), this.stepDeadlineMs);
      });
      try {
        const r = await Promise.race([Promise.resolve().then(step.undo), overdue]);
        if (r === 'overdue') this.log?.warn({ step: step.name, ms: this.stepDeadlineMs }, 'teardown step did not finish in time; going on');
      } catch (err) {
        this.log?.warn({ step: step.name, err: (err as Error)?.message ?? String(err) }, 'teardown step failed');
      } finally {
        clearTimeout(timer);
      }
    }
  }
}
