import { stat } from 'node:fs/promises';
import { execa } from 'execa';
import type { Runsc } from '../runsc/client.js';
import { isLauncherAlive, type SandboxRegistry, type SandboxRecord } from './registry.js';

export interface GcResult {
  removed: string[];
}

/** Stray directories younger than this may belong to a launcher that is still writing its record. */
const STRAY_GRACE_MS = 60_000;

/**
 * Remove what a crashed or killed launcher left behind: its runsc container, its network namespace,
 * its bundle and its host-egress nftables table. Live launchers' sandboxes are never touched.
 */
export async function collectOrphans(registry: SandboxRegistry, runscFor: (r: SandboxRecord) => Runsc): Promise<GcResult> {
  const removed: string[] = [];
  for (const r of await registry.list()) {
    if (r.kept || isLauncherAlive(r)) continue;
    await removeSandboxResources(r, runscFor(r));
    await registry.remove(r.id);
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

/** Best effort: each step tolerates "already gone". */
export async function removeSandboxResources(r: SandboxRecord, runsc: Runsc): Promise<void> {
  if (r.engine === 'docker') {
    // The container carries its launcher's pid and start time as labels: remove it if that launcher is gone.
    await import('../docker/engine.js').then((m) => m.reapDockerOrphans()).catch(() => undefined);
  } else {
    await runsc.delete(r.id, { force: true }).catch(() => undefined);
  }
  if (r.netns) await execa('ip', ['netns', 'delete', r.netns], { reject: false });
}
