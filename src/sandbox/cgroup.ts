/**
 * The host cgroup of a sandbox: runsc creates /lattice/<id> under each controller hierarchy (cgroup v1) or once
 * (v2) when the spec sets limits, and removes it when `runsc run` exits normally. It stays behind when the
 * sandbox ends another way (`runsc delete --force` of an orphan, a sandbox continued by `runsc restore`, a
 * sandbox that hit its pids limit), so lattice removes it itself.
 */
import { readdir, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';

const ROOT = '/sys/fs/cgroup';

/** How long teardown waits for the sandbox's last processes to leave its cgroup (rmdir says EBUSY until then). */
export const CGROUP_DRAIN_TIMEOUT_MS = 10_000;
const RETRY_MS = 20;

/** The host cgroup path of a sandbox, as in the OCI spec's linux.cgroupsPath. */
export const cgroupPathOf = (id: string) => `/lattice/${id}`;

/**
 * Remove cgroup `path` (e.g. /lattice/lt-1234) from every hierarchy that has it. rmdir refuses a cgroup that
 * still holds a process; the processes of a sandbox that has just been killed are on their way out, so EBUSY
 * is retried every 20 ms until `timeoutMs`. Resolves with the hierarchies where it is still there (empty when
 * all went); never throws.
 */
export async function removeCgroup(path: string, timeoutMs = CGROUP_DRAIN_TIMEOUT_MS): Promise<string[]> {
  const hierarchies = (await readdir(ROOT, { withFileTypes: true }).catch(() => [])).filter((d) => d.isDirectory()).map((d) => join(ROOT, d.name));
  const deadline = Date.now() + timeoutMs;
  const left = await Promise.all([ROOT, ...hierarchies].map(async (h) => {
    for (;;) {
      const code = await rmdir(join(h, path)).then(() => undefined, (err: NodeJS.ErrnoException) => err.code);
      if (code === undefined || code === 'ENOENT' || code === 'ENOTDIR') return undefined;
      if (code !== 'EBUSY' || Date.now() >= deadline) return h;
      await delay(RETRY_MS);
    }
  }));
  return left.filter((h): h is string => h !== undefined);
}

/** The kernel's default CFS weight, as cgroup v1 cpu.shares (v2 cpu.weight 100). */
export const DEFAULT_CPU_SHARES = 1024;

/**
 * Set the CFS weight of cgroup `path`: cgroup v1 cpu.shares (2..262144), or cgroup v2 cpu.weight converted
 * as runc does (1 + (shares - 2) * 9999 / 262142). A weight only matters while CPUs are contended; it is not
 * a limit. Throws the write's error (ENOENT: no such cgroup).
 */
export async function setCpuShares(path: string, shares: number): Promise<void> {
  try {
    await writeFile(join(ROOT, 'cpu', path, 'cpu.shares'), String(shares), { flag: 'r+' });
    return;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await writeFile(join(ROOT, path, 'cpu.weight'), String(1 + Math.floor(((shares - 2) * 9999) / 262142)), { flag: 'r+' });
}
