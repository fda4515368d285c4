import { join, resolve } from 'node:path';

export const DEFAULT_STATE_DIR = '/var/lib/lattice';

/**
 * The state directory: --state-dir, else LATTICE_STATE_DIR, else /var/lib/lattice; always absolute
 * (runsc resolves relative bind-mount sources against the bundle, so `--state-dir st` must mean ./st).
 */
export function resolveStateDir(flag?: string): string {
  return resolve(flag ?? process.env.LATTICE_STATE_DIR ?? DEFAULT_STATE_DIR);
}

/** Where each kind of state lives under the state directory. One place, so modules agree. */
export function statePaths(stateDir: string) {
  return {
    root: stateDir,
    sandboxes: join(stateDir, 'sandboxes'),
    sandbox: (id: string) => join(stateDir, 'sandboxes', id),
    runscRoot: join(stateDir, 'runsc'),
    images: join(stateDir, 'images'),
    credentials: join(stateDir, 'credentials'),
    /** The audit outbox of one `sandbox start` agent: one per name, so agents on a host never share a writer. */
    outbox: (name: string) => join(stateDir, 'outbox', name),
    /** The directory holding every agent's outbox. */
    outboxes: join(stateDir, 'outbox'),
    controlPlane: join(stateDir, 'control-plane'),
  } as const;
}
