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

/** CPU time of a cgroup (OCI linux.resources.cpu): CFS quota per period in µs, and weight as v1 cpu.shares (2..262144). */
export interface CgroupCpu {
  quota: number;
  period: number;
  shares: number;
}

/**
 * Set the CPU time of cgroup `path` while its processes run: cgroup v1 cpu.cfs_period_us, cpu.cfs_quota_us
 * and cpu.shares, or cgroup v2 cpu.max and cpu.weight (shares converted as runc does: 1 + (shares - 2) *
 * 9999 / 262142). A new quota takes effect at once, also for a cgroup throttled now. Throws the first
 * write's error (ENOENT: no such cgroup).
 */
export async function setCpu(path: string, cpu: CgroupCpu): Promise<void> {
  const write = (file: string, value: number | string) => writeFile(file, String(value), { flag: 'r+' });
  const v1 = join(ROOT, 'cpu', path);
  try {
    await write(join(v1, 'cpu.shares'), cpu.shares);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    const v2 = join(ROOT, path);
    await write(join(v2, 'cpu.max'), `${cpu.quota} ${cpu.period}`);
    await write(join(v2, 'cpu.weight'), 1 + Math.floor(((cpu.shares - 2) * 9999) / 262142));
    return;
  }
  await write(join(v1, 'cpu.cfs_period_us'), cpu.period);
  await write(join(v1, 'cpu.cfs_quota_us'), cpu.quota);
}

/**
 * Lift any CPU quota of cgroup `path` (v1 cpu.cfs_quota_us -1, v2 cpu.max "max"), so that processes about to
 * be killed get the CPU to exit: a parked warm-pool sandbox is throttled to 1 ms per second, and its
 * `runsc delete --force` after a daemon's kill -9 otherwise took minutes. Never throws (no cgroup: nothing to do).
 */
export async function liftCpuQuota(path: string): Promise<void> {
  const write = (file: string, value: string) => writeFile(file, value, { flag: 'r+' });
  await write(join(ROOT, 'cpu', path, 'cpu.cfs_quota_us'), '-1').catch(() => write(join(ROOT, path, 'cpu.max'), 'max')).catch(() => undefined);
}
