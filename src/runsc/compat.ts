import { existsSync } from 'node:fs';
import { release } from 'node:os';
import { fileURLToPath } from 'node:url';

/**
 * gVisor issue 10704: runsc builds up to 2024-07-30 think any netns exposing
 * /proc/sys/net/core/rmem_default is the root netns; kernels >= 6.x expose it everywhere, so
 * --network=sandbox fails. The fix shipped after 20240729; the workaround is runsc/lattice-runsc.
 */
const FIXED_AFTER = 20240730;
export const NETNS_BUG_MESSAGE = 'cannot run with network enabled in root network namespace';

/** The wrapper that applies the workaround; Docker registers the same file as a runtime. */
export const COMPAT_WRAPPER = fileURLToPath(new URL('../../runsc/lattice-runsc', import.meta.url));

export interface RunscVersion {
  raw: string;
  /** Build date as yyyymmdd when the version string carries one (0.0~20240729.0, release-20240729.0). */
  date?: number;
}

export function parseRunscVersion(output: string): RunscVersion {
  const first = output.split('\n')[0]?.trim() ?? '';
  const m = /(?:~|release-|version )(\d{8})/.exec(first);
  return { raw: first.replace(/^runsc version /, ''), date: m ? Number(m[1]) : undefined };
}

export function kernelMajor(rel = release()): number {
  return Number.parseInt(rel.split('.')[0] ?? '0', 10);
}

/**
 * Whether this runsc build on this kernel needs the private-mount-namespace workaround for
 * --network=sandbox. An unknown build date on a new kernel is assumed affected only if old-style;
 * the runtime fallback (retry on NETNS_BUG_MESSAGE) covers a wrong guess.
 */
export function needsNetnsWorkaround(v: RunscVersion, kernel = kernelMajor(), rmemVisible = existsSync('/proc/sys/net/core/rmem_default')): boolean {
  if (v.date === undefined || v.date >= FIXED_AFTER) return false;
  return kernel >= 6 && rmemVisible;
}
