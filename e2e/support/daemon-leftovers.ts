/** What a sandbox of a state dir can leave on the host: runsc containers, network namespaces, cgroups (daemon e2e). */
import { execa } from 'execa';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';

/** Container ids in the state dir's runsc root. */
export async function ourContainers(stateDir: string): Promise<string[]> {
  const r = await execa('runsc', ['--root', join(stateDir, 'runsc'), 'list', '-quiet'], { reject: false });
  return String(r.stdout).split('\n').filter(Boolean);
}

/** Network namespaces whose name holds sandbox `id`. */
export const netnsOf = async (id: string) => String((await execa('ip', ['netns', 'list'])).stdout).split('\n').filter((l) => l.includes(id));

/** The sandbox's cgroups (/lattice/<id>) under the v1 controllers or the v2 tree. */
export async function cgroupsOf(id: string): Promise<string[]> {
  const out: string[] = [];
  for (const base of ['/sys/fs/cgroup/memory/lattice', '/sys/fs/cgroup/pids/lattice', '/sys/fs/cgroup/lattice']) {
    out.push(...(await readdir(base).catch(() => [] as string[])).filter((d) => d === id));
  }
  return out;
}
