import { stat } from 'node:fs/promises';
import { execa } from 'execa';
import { UsageError } from '../errors.js';
import { isLauncherAlive, type SandboxRegistry, type SandboxRecord } from './registry.js';

export interface GcResult {
  removed: string[];
}

/**
 * Removes the engine resources of one record (runsc container, Docker container and its netns
 * mapping file); tolerates "already gone" and never touches another record's resources.
 */
export type RecordCleaner = (record: SandboxRecord) => Promise<void>;

/**
 * The cleaner of each engine, loaded on first use (a Docker client is made only when a Docker record
 * is met). The caller (the CLI, or an engine) chooses which engines it knows: `sandbox/` imports no engine.
 */
export type EngineCleaners = Partial<Record<SandboxRecord['engine'], () => Promise<RecordCleaner>>>;

/** Stray directories younger than this may belong to a launcher that is still writing its record. */
const STRAY_GRACE_MS = 60_000;

/**
 * Remove what a crashed or killed launcher left behind, record by record: its container (through the
 * record's engine in `cleaners`), its network namespace, its bundle and its host-egress nftables
 * table (a daemon's record stays, marked reaped). Live launchers' sandboxes are never touched; records of an engine without a cleaner stay.
 * Returns the ids (and egress table names) removed.
 */
export async function collectOrphans(registry: SandboxRegistry, cleaners: EngineCleaners, opts: { kept?: boolean } = {}): Promise<GcResult> {
  const removed: string[] = [];
  for (const r of await registry.list()) {
    if ((r.kept && !opts.kept) || isLauncherAlive(r) || !cleaners[r.engine]) continue;
    await removeSandboxResources(r, cleaners);
    // A daemon's sandbox outlives no daemon (its network lived in the daemon's process), but its record and
    // output.log stay, marked reaped, so `sandbox ls` and `sandbox logs` say what happened until `sandbox rm`.
    // An untaken warm-pool sandbox ran nothing of anyone's: it goes entirely.
    if (r.daemon && !r.kept && !r.warm) await registry.save({ ...r, kept: true, reaped: true });
    else await registry.remove(r.id);
    removed.push(r.id);
  }
  // Host egress tables carry their launcher in a comment: reaped whatever state dir made them.
  const { reapEgressTables } = await import('../egress/host.js');
  for (const table of await reapEgressTables().catch(() => [])) removed.push(table);
  for (const id of await registry.strays()) {
    const st = await stat(registry.dirOf(id)).catch(() => undefined);
    if (st && Date.now() - st.mtimeMs > STRAY_GRACE_MS) {
      await registry.remove(id);
      removed.push(id);
    }
  }
  return { removed };
}

/**
 * `sandbox rm`: the records that `which` (ids or names) picks. A name that several sandboxes share is
 * refused with their ids; a running sandbox is refused (stop its launcher instead).
 */
export function pickForRemoval(records: readonly SandboxRecord[], which: readonly string[], alive: (r: SandboxRecord) => boolean): SandboxRecord[] {
  const picked: SandboxRecord[] = [];
  for (const w of which) {
    const byId = records.filter((r) => r.id === w);
    const hits = byId.length > 0 ? byId : records.filter((r) => r.name === w);
    if (hits.length === 0) {
      const known = records.map((r) => (r.name === r.id ? r.id : `${r.id} (${r.name})`)).join(', ');
      throw new UsageError(`no sandbox has id or name ${w}; sandboxes: ${known || 'none'}`);
    }
    if (hits.length > 1) throw new UsageError(`${hits.length} sandboxes are named ${w}; name one by id: ${hits.map((r) => r.id).join(' ')}`);
    const r = hits[0]!;
    if (!r.kept && alive(r)) throw new UsageError(`sandbox ${w} is running (launcher pid ${r.launcherPid}); stop it with Ctrl-C or kill ${r.launcherPid}`);
    if (!picked.includes(r)) picked.push(r);
  }
  return picked;
}

/**
 * The resources of one record: its engine's (through `cleaners[r.engine]`, if given) and its netns.
 * Best effort: each step tolerates "already gone"; nothing of another record is touched.
 */
export async function removeSandboxResources(r: SandboxRecord, cleaners: EngineCleaners): Promise<void> {
  const cleaner = await cleaners[r.engine]?.();
  await cleaner?.(r).catch(() => undefined);
  if (r.netns) await execa('ip', ['netns', 'delete', r.netns], { reject: false });
}
