/**
 * The stop signal of a long-running command (daemon, controlplane, up, relay, wg up).
 *
 * Its listeners stay installed for the life of the process. execa installs signal-exit with the first child
 * process, and signal-exit re-raises a signal when, as it is delivered, its own listeners are the only ones
 * left. A listener that removed itself (process.once, or off() in the handler) therefore got the process
 * killed by the signal before its shutdown ran: a daemon with a warm pool left its sandboxes, cgroups and
 * socket behind.
 */

/** Resolves with the first SIGINT or SIGTERM this process gets from now on; its listeners are never removed. */
export function stopSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    for (const sig of ['SIGINT', 'SIGTERM'] as const) process.on(sig, () => resolve(sig));
  });
}
