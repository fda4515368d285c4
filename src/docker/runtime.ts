import { readFile } from 'node:fs/promises';
import { execa } from 'execa';
import { writeFileAtomic } from '../fsutil.js';
import { LatticeError, UsageError } from '../errors.js';
import { COMPAT_WRAPPER } from '../runsc/compat.js';

export const DOCKER_RUNTIME_NAME = 'lattice-runsc';
export const DAEMON_JSON = '/etc/docker/daemon.json';
/**
 * Global runsc flags Docker passes before every command. Our TUN has no virtio-net header and no
 * checksum offload: netstack must hand us complete, checksummed packets (as src/runsc/client.ts
 * does for the direct engine). Without them TCP stalls after the handshake.
 */
export const DOCKER_RUNTIME_ARGS: readonly string[] = ['--gso=false', '--software-gso=false', '--tx-checksum-offload=false'];

export interface RuntimeEntry {
  path?: string;
  runtimeArgs?: string[];
}

/** Whether a runtime entry (from daemon.json or dockerd's info) is exactly what we register. */
export function sameRuntime(entry: RuntimeEntry | undefined, path: string, runtimeArgs?: readonly string[]): boolean {
  if (entry?.path !== path) return false;
  const have = entry.runtimeArgs ?? [];
  const want = runtimeArgs ?? [];
  return have.length === want.length && have.every((a, i) => a === want[i]);
}

/**
 * Merge our runtime into daemon.json without touching any other setting. Pure: text in, text out.
 * Invalid JSON is refused (we never rewrite a file we cannot read).
 */
export function mergeRuntime(existing: string | undefined, name: string, path: string, runtimeArgs?: readonly string[]): { text: string; changed: boolean } {
  let config: Record<string, unknown> = {};
  if (existing !== undefined && existing.trim() !== '') {
    try {
      config = JSON.parse(existing) as Record<string, unknown>;
    } catch (err) {
      throw new UsageError(`${DAEMON_JSON} is not valid JSON (${(err as Error).message}); fix it by hand, then rerun`, { cause: err });
    }
    if (typeof config !== 'object' || config === null || Array.isArray(config)) {
      throw new UsageError(`${DAEMON_JSON} must hold a JSON object; fix it by hand, then rerun`);
    }
  }
  const runtimes = (config.runtimes ?? {}) as Record<string, RuntimeEntry>;
  if (typeof runtimes !== 'object' || Array.isArray(runtimes)) throw new UsageError(`${DAEMON_JSON}: "runtimes" must be an object`);
  const changed = !sameRuntime(runtimes[name], path, runtimeArgs);
  config.runtimes = { ...runtimes, [name]: runtimeArgs && runtimeArgs.length ? { path, runtimeArgs: [...runtimeArgs] } : { path } };
  return { text: JSON.stringify(config, null, 2) + '\n', changed };
}

/** Register the compat wrapper as a Docker runtime and ask a running dockerd to reload. */
export async function installDockerRuntime(
  opts: { daemonJson?: string; name?: string; wrapper?: string; runtimeArgs?: readonly string[] } = {},
): Promise<{ changed: boolean; reloaded: boolean }> {
  const file = opts.daemonJson ?? DAEMON_JSON;
  const existing = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return undefined;
    throw new LatticeError('EDOCKER_CONFIG', `cannot read ${file}: ${err.message}`, { cause: err });
  });
  const { text, changed } = mergeRuntime(existing, opts.name ?? DOCKER_RUNTIME_NAME, opts.wrapper ?? COMPAT_WRAPPER, opts.runtimeArgs ?? DOCKER_RUNTIME_ARGS);
  if (changed) await writeFileAtomic(file, text, 0o644);
  const reloaded = changed ? await reloadDockerd() : false;
  return { changed, reloaded };
}

/** SIGHUP makes dockerd re-read daemon.json's reloadable keys, runtimes among them. */
async function reloadDockerd(): Promise<boolean> {
  const r = await execa('pidof', ['dockerd'], { reject: false });
  const pids = String(r.stdout).trim().split(/\s+/).filter(Boolean);
  for (const pid of pids) process.kill(Number(pid), 'SIGHUP');
  return pids.length > 0;
}
