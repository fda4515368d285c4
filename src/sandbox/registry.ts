import { readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../fsutil.js';
import { statePaths } from '../state.js';
import { processStartTicks } from '../proc.js';

/** What lattice remembers about a sandbox it started, in <state>/sandboxes/<id>/meta.json. */
export interface SandboxRecord {
  id: string;
  name: string;
  engine: 'runsc' | 'docker';
  createdAt: string;
  /** The launcher process that owns the sandbox; when it is gone, the sandbox is an orphan. */
  launcherPid: number;
  /** The launcher's start time in clock ticks since boot (/proc/PID/stat field 22), against PID reuse. */
  launcherStartTicks: number;
  runscRoot: string;
  bundleDir: string;
  rootfs: string;
  args: string[];
  netns?: string;
  address?: string;
  /** Docker engine: the image and the container. */
  image?: string;
  containerId?: string;
  /** Finished, kept on purpose (--keep, or a daemon sandbox until `sandbox rm`): gc leaves it alone. */
  kept?: boolean;
  /** The sandboxed command's exit status, once it ended (kept records). */
  exitCode?: number;
  /** A daemon sandbox whose daemon died (kill -9, crash): its container and network were removed, its record and logs stay until `sandbox rm`. */
  reaped?: boolean;
  /** Started by the resident daemon (`lattice daemon`), which is its launcher (launcherPid). */
  daemon?: boolean;
  /** A warm-pool sandbox of the daemon nobody has taken yet (src/daemon/pool.ts): gc removes its record too. */
  warm?: boolean;
}


/** What `sandbox ls` shows for a record: running, exited (N) when kept, orphan when its launcher is gone. */
export function statusOf(r: SandboxRecord, alive: (r: SandboxRecord) => boolean = isLauncherAlive): string {
  if (r.reaped) return 'reaped';
  if (r.kept) return r.exitCode === undefined ? 'exited (kept)' : `exited (${r.exitCode})`;
  return alive(r) ? 'running' : 'orphan';
}

/** Whether the launcher that owns `r` (a foreground `sandbox run`/`start`, or the daemon) still runs (PID and start time). */
export function isLauncherAlive(r: Pick<SandboxRecord, 'launcherPid' | 'launcherStartTicks'>): boolean {
  return processStartTicks(r.launcherPid) === r.launcherStartTicks;
}

/** The fields that tie a record to the launcher creating it now (gc's liveness check). */
export function ownedByThisLauncher(): Pick<SandboxRecord, 'createdAt' | 'launcherPid' | 'launcherStartTicks'> {
  return { createdAt: new Date().toISOString(), launcherPid: process.pid, launcherStartTicks: processStartTicks(process.pid) ?? 0 };
}

export class SandboxRegistry {
  private readonly paths;
  constructor(readonly stateDir: string) {
    this.paths = statePaths(stateDir);
  }

  dirOf(id: string): string {
    return this.paths.sandbox(id);
  }

  async save(r: SandboxRecord): Promise<void> {
    await writeFileAtomic(join(this.dirOf(r.id), 'meta.json'), JSON.stringify(r, null, 2) + '\n', 0o600);
  }

  async list(): Promise<SandboxRecord[]> {
    let ids: string[];
    try {
      ids = await readdir(this.paths.sandboxes);
    } catch {
      return [];
    }
    const out: SandboxRecord[] = [];
    for (const id of ids.sort()) {
      try {
        out.push(JSON.parse(await readFile(join(this.dirOf(id), 'meta.json'), 'utf8')) as SandboxRecord);
      } catch {
        // A directory without readable metadata is a crash between mkdir and save; gc removes it.
      }
    }
    return out;
  }

  /** Directory names under sandboxes/ that hold no readable record. */
  async strays(): Promise<string[]> {
    let ids: string[];
    try {
      ids = await readdir(this.paths.sandboxes);
    } catch {
      return [];
    }
    const known = new Set((await this.list()).map((r) => r.id));
    return ids.filter((id) => !known.has(id));
  }

  async remove(id: string): Promise<void> {
    await rm(this.dirOf(id), { recursive: true, force: true });
  }
}
