import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { busyboxRootfs, lattice, requireBinary, tempDir } from '../support/env.js';

// An agent that tries to use up the host meets the sandbox's limits, enforced by runsc through the
// host cgroup /lattice/<id>, and the user is told which limit stopped it.

let work: Awaited<ReturnType<typeof tempDir>>;
let rootfs: string;
let stateDir: string;
/** The sandbox cgroups that were there before this file ran (another lattice on the machine may own them). */
const before = new Map<string, string[]>();

beforeAll(async () => {
  await requireBinary('runsc');
  work = await tempDir('lt-e2e-limits');
  rootfs = await busyboxRootfs(work.path);
  stateDir = join(work.path, 'state');
  for (const c of CONTROLLERS) before.set(c, await cgroupsOf(c));
});

afterAll(async () => {
  await work?.remove();
});

const CONTROLLERS = ['memory', 'pids', 'cpu'];
const cgroupsOf = async (controller: string) => (await readdir(`/sys/fs/cgroup/${controller}/lattice`).catch(() => [] as string[])).filter((d) => d.startsWith('lt-'));

describe('resource limits under gVisor', () => {
  it('--memory: a process that keeps allocating is OOM-killed; exit status 137 and a one-line message', async () => {
    const r = await lattice(stateDir, ['sandbox', 'run', '--name', 'hog', '--rootfs', rootfs, '--memory', '64m', '--', 'sh', '-c', 'echo started; x=a; while true; do x="$x$x"; done']);
    expect(String(r.stdout)).toContain('started');
    expect(r.exitCode).toBe(137);
    const lines = String(r.stderr).trim().split('\n');
    expect(lines).toContain('lattice: sandbox hog was killed: out of memory (limit 64 MiB, raise it with --memory); exit status 137');
  });

  it('--memory: the sandbox sees its limit as its total memory', async () => {
    const r = await lattice(stateDir, ['sandbox', 'run', '--rootfs', rootfs, '--memory', '96m', '--', 'sh', '-c', 'head -1 /proc/meminfo']);
    expect(r.exitCode).toBe(0);
    expect(String(r.stdout)).toMatch(/^MemTotal:\s+98304 kB/);
  });

  it('--pids-limit: a process storm stops at the limit and says so', async () => {
    const r = await lattice(stateDir, ['sandbox', 'run', '--name', 'storm', '--rootfs', rootfs, '--pids-limit', '128', '--', 'sh', '-c', 'i=0; while [ $i -lt 400 ]; do sleep 600 & i=$((i+1)); done; echo all-started']);
    expect(String(r.stdout)).not.toContain('all-started');
    expect(r.exitCode).not.toBe(0);
    expect(String(r.stderr)).toContain('lattice: sandbox storm was stopped: it reached its limit of 128 tasks (raise it with --pids-limit); exit status');
  });

  it('the same storm with the default limit runs to the end', async () => {
    const r = await lattice(stateDir, ['sandbox', 'run', '--rootfs', rootfs, '--', 'sh', '-c', 'i=0; while [ $i -lt 100 ]; do sleep 600 & i=$((i+1)); done; echo all-started; kill $(jobs -p)']);
    expect(String(r.stdout)).toContain('all-started');
    expect(r.exitCode).toBe(0);
  });

  it('--tmp-size: /tmp is full at the limit', async () => {
    const r = await lattice(stateDir, ['sandbox', 'run', '--rootfs', rootfs, '--tmp-size', '1m', '--', 'sh', '-c', 'head -c 3000000 /dev/zero > /tmp/f; echo "rc=$?"; wc -c < /tmp/f']);
    expect(String(r.stdout).trim().split('\n')).toEqual(['rc=1', '1048576']);
  });

  it('bad limit flags exit 2 before anything starts', async () => {
    for (const flags of [['--memory', 'lots'], ['--memory', '1m'], ['--cpus', '-1'], ['--pids-limit', '10'], ['--tmp-size', 'x']]) {
      const r = await lattice(stateDir, ['sandbox', 'run', '--rootfs', rootfs, ...flags, '--', 'true']);
      expect(r.exitCode, flags.join(' ')).toBe(2);
      expect(String(r.stderr).trim().split('\n')).toHaveLength(1);
      expect(String(r.stderr)).toContain(flags[0]);
    }
  });

  it('no sandbox cgroup of these runs is left behind', async () => {
    for (const c of CONTROLLERS) expect((await cgroupsOf(c)).filter((d) => !before.get(c)!.includes(d)), c).toEqual([]);
  });
});
