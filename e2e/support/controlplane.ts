import { execa } from 'execa';
import { CLI } from './env.js';
import { waitFor } from './wgpeer.js';
import { freePort } from '../../src/natsserver/server.js';

/** A control plane started as the user starts it (`lattice control-plane start`), on free loopback ports. */
export interface CliControlPlane {
  readonly natsUrl: string;
  /** The admin HTTP API's base URL, for `--api`. */
  readonly api: string;
  stop(): Promise<void>;
}

/** Start `lattice --state-dir STATE control-plane start` and resolve once it prints "control plane ready". */
export async function startCliControlPlane(state: string): Promise<CliControlPlane> {
  const natsPort = await freePort();
  const httpPort = await freePort();
  const cp = execa(process.execPath, [CLI, '--state-dir', state, 'control-plane', 'start', '--nats-port', String(natsPort), '--http', `127.0.0.1:${httpPort}`], { reject: false });
  let out = '';
  cp.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  const stop = async () => {
    cp.kill('SIGTERM');
    await cp;
  };
  try {
    await waitFor(async () => out.includes('control plane ready'), 60_000, 'control plane ready');
  } catch (err) {
    await stop();
    throw err;
  }
  return { natsUrl: `nats://127.0.0.1:${natsPort}`, api: `http://127.0.0.1:${httpPort}`, stop };
}
