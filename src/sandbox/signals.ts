import type { Logger } from 'pino';

export interface SignalStopper {
  /** The signal that stopped the sandbox, if one did. */
  signal?: NodeJS.Signals;
  /** Stop as if this signal had arrived (revocation uses it). */
  stop(sig: NodeJS.Signals): void;
  dispose(): void;
}

/** Default grace period between the stop signal and SIGKILL (ms), as `docker stop`'s 10 s. */
export const DEFAULT_STOP_GRACE_MS = 10_000;

/**
 * Forward SIGINT/SIGTERM to a sandbox through `kill`: the signal first, SIGKILL after the grace
 * period, or at once on a second signal (a second Ctrl-C). Shared by the runsc and Docker engines.
 * `listen` false: the process's own signals are not watched; only `stop()` stops (the daemon's sandboxes).
 */
export function stopOnSignals(kill: (sig: NodeJS.Signals) => Promise<unknown>, id: string, graceMs: number, log: Logger, listen = true): SignalStopper {
  let timer: NodeJS.Timeout | undefined;
  const state: SignalStopper = {
    stop: (sig) => {
      if (state.signal) {
        log.info({ id }, 'second stop signal: killing the sandbox now');
        kill('SIGKILL').catch(() => undefined);
        return;
      }
      state.signal = sig;
      log.info({ id, signal: sig }, 'stopping sandbox');
      kill(sig).catch(() => undefined);
      timer = setTimeout(() => void kill('SIGKILL').catch(() => undefined), graceMs);
    },
    dispose: () => {
      process.off('SIGINT', state.stop);
      process.off('SIGTERM', state.stop);
      if (timer) clearTimeout(timer);
    },
  };
  if (listen) {
    process.on('SIGINT', state.stop);
    process.on('SIGTERM', state.stop);
  }
  return state;
}

export function signalNumber(sig: string): number {
  return ({ SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 } as Record<string, number>)[sig] ?? 1;
}
