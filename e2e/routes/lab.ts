/**
 * The routes e2e's lab: four network namespaces with a random prefix, the control plane in one.
 *
 *   <p>-pub: br0 198.18.0.1/24   nats-server :4222, control plane (admin API on 127.0.0.1:<httpPort>)
 *   <p>-r:   eth0 198.18.0.21    the router / exit node (`lattice up`)
 *   <p>-b:   eth0 198.18.0.22    the sandbox's host
 *   <p>-s:   behind the router, wired by the test's `behind(r, s)`
 *
 * stop() kills every child (SIGTERM, then SIGKILL) and removes the namespaces and the work dir.
 */
import { execa, type ResultPromise } from 'execa';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { requireBinary, requireRoot, tempDir, waitFor, CLI } from '../support/env.js';
import { createNetns, deleteNetns, ip } from '../../src/netns/ip.js';

export const NATS = 'nats://198.18.0.1:4222';

export interface Lab {
  pub: string;
  r: string;
  s: string;
  b: string;
  work: string;
  children: ResultPromise[];
  /** The CLI inside netns `ns` with state dir `state` (under the work dir). */
  inNs(ns: string, state: string, args: string[]): ResultPromise;
  /** `lattice <args> --api ...` against the control plane. */
  admin(args: string[]): ResultPromise;
  stop(): Promise<void>;
}

/** Collect a child's output into a getter. */
export function collect(c: ResultPromise, stream: 'stdout' | 'stderr'): () => string {
  let s = '';
  c[stream]?.on('data', (d: Buffer) => (s += d.toString()));
  return () => s;
}

export async function startLab(prefix: string, httpPort: number, behind: (r: string, s: string) => Promise<void>): Promise<Lab> {
  requireRoot();
  for (const bin of ['runsc', 'nats-server', 'nft', 'nsenter', 'busybox']) await requireBinary(bin);
  const dir = await tempDir(`lt-e2e-${prefix}`);
  const [pub, r, s, b] = ['pub', 'r', 's', 'b'].map((x) => `${prefix}-${x}`) as [string, string, string, string];
  const children: ResultPromise[] = [];
  const made: string[] = [];
  const inNs = (ns: string, state: string, args: string[]) =>
    execa('nsenter', [`--net=/var/run/netns/${ns}`, process.execPath, CLI, '--state-dir', join(dir.path, state), ...args], { reject: false, stdin: 'ignore' });
  const stop = async () => {
    for (const c of children.reverse()) {
      c.kill('SIGTERM');
      const t = setTimeout(() => c.kill('SIGKILL'), 5000);
      await c.catch(() => undefined);
      clearTimeout(t);
    }
    for (const n of made.reverse()) await deleteNetns(n).catch(() => undefined);
    await dir.remove();
  };
  try {
    for (const n of [pub, r, s, b]) {
      await createNetns(n);
      made.push(n);
      await ip(['link', 'set', 'lo', 'up'], n);
    }
    await ip(['link', 'add', 'br0', 'type', 'bridge'], pub);
    await ip(['addr', 'add', '198.18.0.1/24', 'dev', 'br0'], pub);
    await ip(['link', 'set', 'br0', 'up'], pub);
    for (const [n, addr, side] of [[r, '198.18.0.21', 'hr'], [b, '198.18.0.22', 'hb']] as const) {
      await ip(['link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', side, 'netns', pub], n);
      await ip(['link', 'set', side, 'master', 'br0', 'up'], pub);
      await ip(['addr', 'add', `${addr}/24`, 'dev', 'eth0'], n);
      await ip(['link', 'set', 'eth0', 'up'], n);
    }
    await behind(r, s);
    const jsDir = join(dir.path, 'js');
    await mkdir(jsDir);
    children.push(execa('nsenter', [`--net=/var/run/netns/${pub}`, 'nats-server', '-a', '198.18.0.1', '-p', '4222', '-js', '-sd', jsDir], { reject: false, stdin: 'ignore' }));
    await waitFor(async () => (await execa('nsenter', [`--net=/var/run/netns/${pub}`, 'bash', '-c', 'exec 3<>/dev/tcp/198.18.0.1/4222'], { reject: false })).exitCode === 0, 60_000, 'nats-server');
    const cp = inNs(pub, 'cp', ['control-plane', 'start', '--nats', NATS, '--http', `127.0.0.1:${httpPort}`]);
    children.push(cp);
    const cpOut = collect(cp, 'stdout');
    await waitFor(() => cpOut().includes('control plane ready'), 60_000, 'control plane ready');
  } catch (err) {
    await stop();
    throw err;
  }
  return { pub, r, s, b, work: dir.path, children, inNs, admin: (args) => inNs(pub, 'cp', [...args, '--api', `http://127.0.0.1:${httpPort}`]), stop };
}
