import { cpus, totalmem } from 'node:os';
import { UsageError } from '../errors.js';
import { parseByteSize, parseCount } from '../units.js';

/**
 * What one sandbox may take from the host: OCI runtime spec `linux.resources` (config-linux.md,
 * "Control groups"). runsc applies them to the host cgroup it creates at `linux.cgroupsPath` for the
 * whole sandbox (Sentry, gofer and the agent's address spaces), and sizes the Sentry's view of
 * memory and CPUs from them.
 *
 * Defaults protect the host from one runaway agent while leaving normal agents unbothered:
 *  - memory: 2 GiB or half the host's RAM, whichever is smaller (swap disabled: memory+swap = memory);
 *  - cpus:   the host's CPUs minus one (at least 1), as a CFS quota per 100 ms period;
 *  - pids:   1024 host tasks. gVisor's own Sentry and gofer threads count against this (about 60),
 *            so values below MIN_PIDS would kill the sandbox at start and are refused.
 */
export interface OciResources {
  memory: { limit: number; swap: number };
  /** CFS quota and period in µs; shares: the CFS weight (cgroup v1 cpu.shares, default 1024), set for parked warm-pool sandboxes only. */
  cpu: { quota: number; period: number; shares?: number };
  pids: { limit: number };
}

export interface ResourceLimits {
  /** Bytes of memory (host RAM charged to the sandbox's cgroup). */
  memoryBytes: number;
  /** CPUs, possibly fractional (1.5 = one and a half cores' worth of time). */
  cpus: number;
  /** Host tasks (threads and processes) of the whole sandbox. */
  pids: number;
}

export const CPU_PERIOD_US = 100_000;
export const MIN_PIDS = 128;
export const MIN_MEMORY_BYTES = 32 * 2 ** 20;

export function defaultResourceLimits(host = { mem: totalmem(), cpus: cpus().length }): ResourceLimits {
  return {
    memoryBytes: Math.min(2 * 2 ** 30, Math.floor(host.mem / 2)),
    cpus: Math.max(1, host.cpus - 1),
    pids: 1024,
  };
}

export interface ResourceFlags {
  memory?: string;
  cpus?: string;
  pidsLimit?: string;
}

/** --memory / --cpus / --pids-limit over the defaults. Throws UsageError on a bad value. */
export function parseResourceFlags(f: ResourceFlags, defaults = defaultResourceLimits()): ResourceLimits {
  const out = { ...defaults };
  if (f.memory !== undefined) {
    out.memoryBytes = parseByteSize(f.memory, '--memory');
    if (out.memoryBytes < MIN_MEMORY_BYTES) throw new UsageError(`--memory ${f.memory} is below the ${MIN_MEMORY_BYTES >> 20}m gVisor needs to start`);
  }
  if (f.cpus !== undefined) {
    const n = Number(f.cpus);
    if (!/^\d+(\.\d+)?$/.test(f.cpus.trim()) || !(n >= 0.01)) throw new UsageError(`--cpus ${JSON.stringify(f.cpus)} must be a number of CPUs of at least 0.01, e.g. 1 or 0.5`);
    out.cpus = n;
  }
  if (f.pidsLimit !== undefined) {
    out.pids = parseCount(f.pidsLimit, '--pids-limit');
    if (out.pids < MIN_PIDS) throw new UsageError(`--pids-limit ${out.pids} is below ${MIN_PIDS}: gVisor's own threads count against it and the sandbox would not start`);
  }
  return out;
}

export function ociResources(l: ResourceLimits): OciResources {
  return {
    memory: { limit: l.memoryBytes, swap: l.memoryBytes },
    cpu: { quota: Math.max(1000, Math.round(l.cpus * CPU_PERIOD_US)), period: CPU_PERIOD_US },
    pids: { limit: l.pids },
  };
}

/** "2 GiB", "512 MiB": for messages. */
export function formatBytes(n: number): string {
  for (const [unit, v] of [['GiB', 2 ** 30], ['MiB', 2 ** 20], ['KiB', 2 ** 10]] as const) {
    if (n >= v) return `${Number((n / v).toFixed(1))} ${unit}`;
  }
  return `${n} B`;
}
