import { createConnection } from 'node:net';
import { join } from 'node:path';

/** The daemon's socket for a state dir: $LATTICE_DAEMON_SOCKET, else <state>/daemon.sock. */
export function defaultSocket(stateDir: string): string {
  return process.env.LATTICE_DAEMON_SOCKET ?? join(stateDir, 'daemon.sock');
}

/** Whether something accepts connections on the Unix socket at `path` (the CLI's "is a daemon there?"). */
export function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
