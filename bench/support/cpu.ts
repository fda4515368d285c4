/**
 * Where a transfer's CPU went, machine-wide: /proc/stat (all cores) and one process's /proc/PID/stat, sampled
 * through the run together with the bytes crossing one network namespace. Only the samples inside the
 * transfer window count (byte rate at least half its peak), so a sandbox's start-up and teardown stay out.
 * Not a bench itself (make bench runs bench/*.ts only). Linux only; clock ticks are USER_HZ (100 Hz).
 */
import { readFile } from 'node:fs/promises';
import { cpus } from 'node:os';

/** What one transfer cost over its window (the intervals at >= half the peak byte rate). */
export interface TransferCpu {
  /** Wall seconds of the window; NaN when no bytes crossed (then so is every field but backgroundCores). */
  seconds: number;
  /** Busy CPU-seconds of the whole machine in the window (user, nice, system, irq, softirq; not idle, iowait, steal). */
  machineCpu: number;
  /** CPU-seconds of the sampled process in the window (0 when none was given). */
  processCpu: number;
  /** Busy cores in the second before the transfer began: other tenants and idle helpers, to subtract. */
  backgroundCores: number;
  /** The window's share (0..1) of all bytes that crossed the netns in the run: the GB in the window is this x the run's. */
  byteShare: number;
}

const SAMPLE_MS = 200;
/** How long the machine is watched before the transfer, for its background load. */
const BACKGROUND_MS = 1000;
const USER_HZ = 100;

/** /proc/stat's `cpu` line: busy and total ticks over all cores (idle, iowait and steal are not busy). */
async function machineTicks(): Promise<{ busy: number; total: number }> {
  const line = (await readFile('/proc/stat', 'utf8')).split('\n', 1)[0]!;
  const f = line.trim().split(/\s+/).slice(1, 9).map(Number); // user nice system idle iowait irq softirq steal
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - f[3]! - f[4]! - f[7]!, total };
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
 * Watch the machine for a second (its background load), then start sampling: `netnsPid` is any process in the
 * namespace the transfer crosses; `processPid` resolves the process whose own share is wanted (asked again until
 * it answers, so a child spawned after this resolves is found). Start the transfer once this resolves; call the
 * returned function when it has ended.
 */
export async function sampleTransfer(netnsPid: number, processPid: () => Promise<number | undefined> = async () => undefined): Promise<() => Promise<TransferCpu>> {
  const b0 = await machineTicks();
  await new Promise((r) => setTimeout(r, BACKGROUND_MS));
  const b1 = await machineTicks();
  const backgroundCores = (cpus().length * (b1.busy - b0.busy)) / Math.max(b1.total - b0.total, 1);
  const samples: Sample[] = [];
  let pid: number | undefined;
  let stopped = false;
  let failed: unknown;
  let wake: (() => void) | undefined;
  const loop = (async () => {
    for (;;) {
      pid ??= await processPid();
      const [m, bytes, proc] = await Promise.all([machineTicks(), netnsBytes(netnsPid), processTicks(pid)]);
      samples.push({ ...m, bytes, proc });
      if (stopped) return;
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, SAMPLE_MS);
      });
    }
  })().catch((err: unknown) => {
    failed = err; // rethrown by the stop function, never an unhandled rejection
  });
  return async () => {
    stopped = true;
    wake?.();
    await loop;
    if (failed) throw failed;
    return { ...windowOf(samples), backgroundCores };
  };
}

interface Sample {
  busy: number;
  total: number;
  bytes: number;
  proc: number | undefined;
}

function windowOf(samples: Sample[]): Omit<TransferCpu, 'backgroundCores'> {
  const steps = samples.slice(1).map((s, i) => {
    const p = samples[i]!;
    // A process that exited between two samples has no figure for that step: count none of it.
    const proc = s.proc !== undefined && p.proc !== undefined ? s.proc - p.proc : 0;
    return { busy: s.busy - p.busy, total: s.total - p.total, bytes: s.bytes - p.bytes, proc };
  });
  const peak = Math.max(0, ...steps.map((s) => s.bytes / Math.max(s.total, 1)));
  const inWindow = steps.filter((s) => peak > 0 && s.total > 0 && s.bytes / s.total >= peak / 2);
  const sum = (xs: typeof steps, k: 'busy' | 'total' | 'proc' | 'bytes') => xs.reduce((a, s) => a + s[k], 0);
  if (inWindow.length === 0) return { seconds: NaN, machineCpu: NaN, processCpu: NaN, byteShare: NaN };
  // /proc/stat's total ticks are summed over every core: per core, they are the window's elapsed ticks.
  return {
    seconds: sum(inWindow, 'total') / cpus().length / USER_HZ,
    machineCpu: sum(inWindow, 'busy') / USER_HZ,
    processCpu: sum(inWindow, 'proc') / USER_HZ,
    byteShare: sum(inWindow, 'bytes') / sum(steps, 'bytes'),
  };
}
