import { LatticeError } from '../../errors.js';
import { isLauncherAlive, type SandboxRecord, type SandboxRegistry } from '../registry.js';

/** No running runsc sandbox has the id or name the user gave (or several do). */
export class SandboxNotRunningError extends LatticeError {
  override readonly name = 'SandboxNotRunningError';
  constructor(message: string) {
    super('ESANDBOX_NOT_RUNNING', message);
  }
}

/**
 * The record of the one running runsc sandbox whose id or name is `which`: its launcher alive, not kept.
 * Errors: SandboxNotRunningError when none or several match, or when it runs under the Docker engine.
 */
export async function findRunningSandbox(registry: SandboxRegistry, which: string): Promise<SandboxRecord> {
  const all = (await registry.list()).filter((r) => r.id === which || r.name === which);
  const running = all.filter((r) => !r.kept && isLauncherAlive(r));
  if (running.length === 0) throw new SandboxNotRunningError(`no running sandbox has id or name ${which}; see lattice sandbox ls`);
  if (running.length > 1) throw new SandboxNotRunningError(`${running.length} running sandboxes are named ${which}; name one by id: ${running.map((r) => r.id).join(' ')}`);
  const r = running[0]!;
  if (r.engine !== 'runsc') throw new SandboxNotRunningError(`sandbox ${which} runs under the Docker engine; use docker exec/cp/pause on container ${r.containerId ?? r.id}`);
  return r;
}
