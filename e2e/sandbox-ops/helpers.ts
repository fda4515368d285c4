import type { ResultPromise } from 'execa';
import { lattice, waitFor } from '../support/env.js';

/** A shell loop that counts up in /tmp/c every 50 ms: the observable "memory state" of the ops tests. */
// /tmp/c is replaced by a rename, never truncated: a reader between `>`'s truncate and its write saw "" (0).
export const COUNTER = 'i=0; while true; do i=$((i+1)); echo $i > /tmp/c.new; mv /tmp/c.new /tmp/c; echo $i; sleep 0.05; done';

/** A foreground `lattice sandbox run --name NAME` of `script`, ready once `sandbox exec NAME` can read /tmp/c. */
export interface Box {
  name: string;
  child: ResultPromise;
  /** The counter's current value, read through `sandbox exec`. */
  count(): Promise<number>;
  /** The last number the sandbox printed on its stdout (observable while it is paused). */
  printed(): number;
  stop(): Promise<void>;
}

export async function startBox(stateDir: string, rootfs: string, name: string, script = COUNTER, extra: string[] = []): Promise<Box> {
  const child = lattice(stateDir, ['sandbox', 'run', '--name', name, '--rootfs', rootfs, ...extra, '--', 'sh', '-c', script]);
  let exited = false;
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-256)));
  const printed = () => Number(out.trim().split('\n').at(-1) ?? 0);
  void child.then(() => (exited = true));
  const count = async () => {
    const r = await lattice(stateDir, ['sandbox', 'exec', name, '--', 'cat', '/tmp/c']);
    if (r.exitCode !== 0) throw new Error(`sandbox exec ${name} cat /tmp/c: exit ${r.exitCode}: ${String(r.stderr)}`);
    return Number(String(r.stdout).trim());
  };
  await waitFor(async () => {
    if (exited) throw new Error(`sandbox ${name} exited before it was ready: ${String((await child).stderr)}`);
    return (await count()) > 0;
  }, 60_000, `sandbox ${name} counting`);
  return {
    name,
    child,
    count,
    printed,
    stop: async () => {
      if (!exited) child.kill('SIGTERM');
      await child;
    },
  };
}
