/**
 * `lattice sandbox pause|resume`: freeze and thaw every process of a running sandbox (`runsc pause`/`resume`).
 * A paused sandbox keeps its memory, its network namespace and its launcher; its packets queue or drop
 * (nothing inside answers) until it is resumed. The launcher's own timers (WireGuard keepalives) go on.
 */
import { Runsc } from '../../runsc/client.js';
import type { SandboxRecord } from '../registry.js';

/** Freeze `record`'s sandbox. Errors: RunscError (not running, already paused...). */
export async function pauseSandbox(record: SandboxRecord, o: { runsc?: Runsc } = {}): Promise<void> {
  await (o.runsc ?? new Runsc({ root: record.runscRoot })).pause(record.id);
}

/** Thaw `record`'s paused sandbox. Errors: RunscError (not paused...). */
export async function resumeSandbox(record: SandboxRecord, o: { runsc?: Runsc } = {}): Promise<void> {
  await (o.runsc ?? new Runsc({ root: record.runscRoot })).resume(record.id);
}
