/**
 * The host cgroup of a sandbox: runsc creates /lattice/<id> under each controller hierarchy (cgroup v1) or once
 * (v2) when the spec sets limits, and removes it when `runsc run` exits normally. It stays behind when the
 * sandbox ends another way (`runsc delete --force` of an orphan, a sandbox continued by `runsc restore`, a
 * sandbox that hit its pids limit), so lattice removes it itself.
 */
import { readdir, rmdir } from 'node:fs/promises';
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
