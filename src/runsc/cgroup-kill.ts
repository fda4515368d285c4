import * as fs from 'node:fs';

/**
 * Why the host kernel stopped a sandbox, read from the kernel log (/dev/kmsg), which names the
 * cgroup each time it acts on one:
 *   "oom-kill:constraint=CONSTRAINT_MEMCG,...,oom_memcg=/lattice/lt-1234abcd,task_memcg=..."
 *   "cgroup: fork rejected by pids controller in /lattice/lt-1234abcd"
 * The sandbox's cgroup path is unique (it holds the sandbox id), so older records and other
 * sandboxes' records cannot match. runsc removes the cgroup (and its counters) as the sandbox exits,
 * which is why the log, not memory.oom_control, is the witness.
 */
export const CgroupKill = {
  /** The memory cgroup hit --memory and the kernel OOM-killed the sandbox. */
  Oom: 'oom',
  /** The pids cgroup refused a new task (--pids-limit); gVisor's Sentry cannot run without it. */
  PidsLimit: 'pids-limit',
} as const;
export type CgroupKill = (typeof CgroupKill)[keyof typeof CgroupKill];

/** Pure: the cause named for `cgroupPath` in kernel log records (each "prio,seq,usec,flags;text"). */
export function cgroupKillFromLog(records: readonly string[], cgroupPath: string): CgroupKill | undefined {
  let pids = false;
  for (const rec of records) {
    const text = rec.slice(rec.indexOf(';') + 1).trimEnd();
    if (text.startsWith('oom-kill:') && text.includes(`,oom_memcg=${cgroupPath},`)) return CgroupKill.Oom;
    if (text === `cgroup: fork rejected by pids controller in ${cgroupPath}`) pids = true;
  }
  return pids ? CgroupKill.PidsLimit : undefined;
}

/** Every record in the kernel's log buffer now (non-blocking); [] when /dev/kmsg cannot be read. */
export function readKernelLog(): string[] {
  let fd: number;
  try {
    fd = fs.openSync('/dev/kmsg', fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch {
    return [];
  }
  const out: string[] = [];
  const buf = Buffer.alloc(8192); // one record per read; records are at most ~1 KiB
  try {
    for (;;) {
      let n: number;
      try {
        n = fs.readSync(fd, buf, 0, buf.length, null);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EPIPE') continue; // records overwritten while reading: go on with the next
        break; // EAGAIN: the end of the buffer
      }
      if (n <= 0) break;
      out.push(buf.toString('utf8', 0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return out;
}
