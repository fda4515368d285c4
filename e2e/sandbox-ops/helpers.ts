import type { ResultPromise } from 'execa';
import { lattice, waitFor } from '../support/env.js';

/** A shell loop that counts up in /tmp/c every 50 ms: the observable "memory state" of the ops tests. */
export const COUNTER = 'i=0; while true; do i=$((i+1)); echo $i > /tmp/c; sleep 0.05; done';

/** A foreground `lattice sandbox run --name NAME` of `script`, ready once `sandbox exec NAME` can read /tmp/c. */
export interface Box {
  name: string;
  child: ResultPromise;
  /** The counter's current value, read through `sandbox exec`. */
  count(): Promise<number>;
  stop(): Promise<void>;
}

export async function startBox(stateDir: string, rootfs: string, name: string, script = COUNTER, extra: string[] = []): Promise<Box> {
  const child = lattice(stateDir, ['sandbox', 'run', '--name', name, '--rootfs', rootfs, ...extra, '--', 'sh', '-c', script]);
  let exited = false;
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
    stop: async () => {
      if (!exited) child.kill('SIGTERM');
      await child;
    },
  };
}
