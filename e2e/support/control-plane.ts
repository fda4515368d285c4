import { freePort, type StartedNatsServer } from '../../src/natsserver/server.js';
import { cleanup, startCpProcess, tempDir, withNats } from '../controlplane/helpers.js';
import { requireBinary } from './env.js';

/**
 * A real control plane for CLI-level tests: a nats-server (JetStream) and `lattice control-plane start`
 * as its own process, with the admin HTTP API on a free loopback port and a fresh state dir.
 */
export interface ControlPlaneFixture {
  /** The state dir (also holds the NATS store and control-plane/admin-token). */
  readonly dir: string;
  readonly nats: StartedNatsServer;
  readonly cp: Awaited<ReturnType<typeof startCpProcess>>;
  /** The admin HTTP API base URL (http://127.0.0.1:PORT). */
  readonly api: string;
  /** Stop the control plane and nats-server, then remove the state dir. */
  close(): Promise<void>;
}

export async function startControlPlane(tag: string): Promise<ControlPlaneFixture> {
  await requireBinary('nats-server');
  const dir = await tempDir(tag);
  let nats: StartedNatsServer | undefined;
  let cp: Awaited<ReturnType<typeof startCpProcess>> | undefined;
  const close = async (): Promise<void> => {
    await cp?.stop();
    await nats?.stop();
    await cleanup(dir);
  };
  try {
    nats = await withNats(dir);
    cp = await startCpProcess(['--nats', nats.url, '--http', `127.0.0.1:${await freePort()}`, '--state-dir', dir]);
    return { dir, nats, cp, api: cp.info.http!, close };
  } catch (err) {
    await close();
    throw err;
  }
}
