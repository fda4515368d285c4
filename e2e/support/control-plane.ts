import { freePort, type StartedNatsServer } from '../../src/natsserver/server.js';
import { execa, type ResultPromise } from 'execa';
import { cleanup, startCpProcess, tempDir, withNats } from '../controlplane/helpers.js';
import { CLI, requireBinary, waitFor } from './env.js';

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

/**
 * `lattice control-plane start` of the built CLI (dist/) as a child, for sandbox-level e2e tests: by default
 * with its embedded nats-server on a free loopback port and the admin HTTP API on another; resolves once it
 * printed "control plane ready". `args` are more `control-plane start` options; `nats` points it at an existing server instead; `netns` runs it inside that
 * network namespace (nsenter, host mounts kept so the rest of the CLI behaves as on the host).
 */
export interface EmbeddedControlPlane {
  /** The control plane's state dir (token/agent admin commands take it as --state-dir). */
  readonly stateDir: string;
  /** nats://host:port the launchers enroll through. */
  readonly natsUrl: string;
  /** The admin HTTP API base URL (http://127.0.0.1:PORT). */
  readonly api: string;
  readonly child: ResultPromise;
  /** SIGTERM (SIGKILL after 5 s) and wait for the exit. */
  stop(): Promise<void>;
}

export async function startEmbeddedControlPlane(
  stateDir: string,
  opts: { nats?: string; httpPort?: number; netns?: string; readyTimeoutMs?: number; args?: string[] } = {},
): Promise<EmbeddedControlPlane> {
  const natsPort = opts.nats ? undefined : await freePort();
  const natsUrl = opts.nats ?? `nats://127.0.0.1:${natsPort}`;
  const api = `http://127.0.0.1:${opts.httpPort ?? (await freePort())}`;
  const args = [CLI, '--state-dir', stateDir, 'control-plane', 'start', ...(opts.nats ? ['--nats', opts.nats] : ['--nats-port', String(natsPort)]), '--http', api.slice('http://'.length), ...(opts.args ?? [])];
  const child = opts.netns
    ? execa('nsenter', [`--net=/var/run/netns/${opts.netns}`, process.execPath, ...args], { reject: false, stdin: 'ignore' })
    : execa(process.execPath, args, { reject: false, stdin: 'ignore' });
  let out = '';
  let err = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  const stop = async (): Promise<void> => {
    child.kill('SIGTERM');
    const t = setTimeout(() => child.kill('SIGKILL'), 5000);
    await child.catch(() => undefined);
    clearTimeout(t);
  };
  try {
    await waitFor(() => child.exitCode !== null || out.includes('control plane ready'), opts.readyTimeoutMs ?? 60_000, 'control plane ready');
  } catch (e) {
    await stop();
    throw new Error(`${(e as Error).message}: ${err.slice(-400)}`, { cause: e });
  }
  if (!out.includes('control plane ready')) throw new Error(`control plane exited ${child.exitCode} before ready: ${err.slice(-400)}`);
  return { stateDir, natsUrl, api, child, stop };
}
