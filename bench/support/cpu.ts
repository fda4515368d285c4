/**
 * Where a transfer's CPU went, machine-wide: /proc/stat (all cores) and one process's /proc/PID/stat, sampled
 * through the run together with the bytes crossing one network namespace. Only the samples inside the
 * transfer window count (byte rate at least half its peak), so a sandbox's start-up and teardown stay out.
 * Not a bench itself (make bench runs bench/*.ts only). Linux only; clock ticks are USER_HZ (100 Hz).
 */
import { readFile } from 'node:fs/promises';
import { cpus } from 'node:os';

/** What one transfer cost, in cores (CPU-seconds per second) averaged over its window. */
export interface TransferCpu {
  /** Every core's busy time (user, nice, system, irq, softirq, steal) over the window, in cores. */
  machineCores: number;
  /** The sampled process's own CPU over the window, in cores (0 when none was given). */
  processCores: number;
  /** Sample intervals inside the window (each ~SAMPLE_MS). */
  intervals: number;
}

const SAMPLE_MS = 200;

/** /proc/stat's `cpu` line: busy and total ticks over all cores (idle and iowait are not busy). */
async function machineTicks(): Promise<{ busy: number; total: number }> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n', 1)[0]!;
  const f = line.trim().split(/\s+/).slice(1, 9).map(Number); // user nice system idle iowait irq softirq steal
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - f[3]! - f[4]!, total };
}

/** utime + stime of `pid` in ticks; undefined once it is gone. */
export async function processTicks(pid: number | undefined): Promise<number | undefined> {
  if (!pid) return undefined;
  const s = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  if (!s) return undefined;
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
}

/** Bytes received plus sent on every link but lo of the netns that `pid` lives in (/proc/PID/net/dev). */
async function netnsBytes(pid: number): Promise<number> {
  const text = await readFile(`/proc/${pid}/net/dev`, 'utf8').catch(() => '');
  let n = 0;
  for (const line of text.split('\n').slice(2)) {
    const [name, counters] = line.split(':');
    if (!counters || name!.trim() === 'lo') continue;
    const c = counters.trim().split(/\s+/).map(Number);
    n += c[0]! + c[8]!;
  }
  return n;
}

/** The first child of `pid` (/proc/PID/task/PID/children), e.g. the node under /usr/bin/time. */
export async function firstChild(pid: number | undefined): Promise<number | undefined> {
  if (!pid) return undefined;
  const text = await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '');
  const child = Number(text.trim().split(/\s+/)[0]);
  return child > 0 ? child : undefined;
}

/**
 * Start sampling: `netnsPid` is any process in the namespace the transfer crosses; `processPid` resolves the
 * process whose own share is wanted (asked again until it answers, so a child not yet spawned is found).
 * Call the returned function when the transfer has ended.
 */
export function sampleTransfer(netnsPid: number, processPid: () => Promise<number | undefined> = async () => undefined): () => Promise<TransferCpu> {
  const samples: Array<{ busy: number; total: number; bytes: number; proc: number | undefined }> = [];
  let pid: number | undefined;
  let stopped = false;
  let wake: (() => void) | undefined;
  const loop = (async () => {
    while (!stopped) {
      pid ??= await processPid();
      const [m, bytes, proc] = await Promise.all([machineTicks(), netnsBytes(netnsPid), processTicks(pid)]);
      samples.push({ ...m, bytes, proc });
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, SAMPLE_MS);
      });
    }
  })();
  return async () => {
    stopped = true;
    wake?.();
    await loop;
    return windowOf(samples);
  };
}

function windowOf(samples: Array<{ busy: number; total: number; bytes: number; proc: number | undefined }>): TransferCpu {
  const steps = samples.slice(1).map((s, i) => {
    const p = samples[i]!;
    // A process that exited between two samples has no figure for that step: count none of it.
    const proc = s.proc !== undefined && p.proc !== undefined ? s.proc - p.proc : 0;
    return { busy: s.busy - p.busy, total: s.total - p.total, bytes: s.bytes - p.bytes, proc };
  });
  const peak = Math.max(0, ...steps.map((s) => s.bytes / Math.max(s.total, 1)));
  const inWindow = steps.filter((s) => s.total > 0 && s.bytes / s.total >= peak / 2);
  const sum = (k: 'busy' | 'total' | 'proc') => inWindow.reduce((a, s) => a + s[k], 0);
  // /proc/stat's total ticks are summed over every core: per core, they are the window's elapsed ticks.
  const elapsed = sum('total') / cpus().length;
  return { machineCores: elapsed > 0 ? sum('busy') / elapsed : NaN, processCores: elapsed > 0 ? sum('proc') / elapsed : NaN, intervals: inWindow.length };
}
