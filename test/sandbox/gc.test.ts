import { describe, it, expect, afterEach } from 'vitest';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { collectOrphans, removeSandboxResources, type EngineCleaners } from '../../src/sandbox/gc.js';
import { SandboxRegistry, ownedByThisLauncher, type SandboxRecord } from '../../src/sandbox/registry.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

function record(id: string, engine: SandboxRecord['engine'], alive: boolean): SandboxRecord {
  const owner = alive ? ownedByThisLauncher() : { createdAt: new Date(0).toISOString(), launcherPid: 0, launcherStartTicks: 1 };
  return { id, name: id, engine, ...owner, runscRoot: '/nonexistent', bundleDir: '/nonexistent', rootfs: '/', args: ['true'] };
}

/** Cleaners that only write down which record they were asked to clean. */
function recording(): { cleaners: EngineCleaners; calls: string[] } {
  const calls: string[] = [];
  const cleaner = (engine: string) => async () => async (r: SandboxRecord) => {
    calls.push(`${engine}:${r.id}`);
  };
  return { cleaners: { runsc: cleaner('runsc'), docker: cleaner('docker') }, calls };
}

describe('gc works per record', () => {
  it('removes each dead launcher\'s record through its own engine, and nothing of live or kept records', async () => {
    const state = await mkdtemp(join(tmpdir(), 'lt-gc-'));
    dirs.push(state);
    const registry = new SandboxRegistry(state);
    await registry.save(record('lt-deadrun', 'runsc', false));
    await registry.save(record('lt-deaddok', 'docker', false));
    await registry.save(record('lt-livedok', 'docker', true));
    await registry.save({ ...record('lt-keptdok', 'docker', false), kept: true });
    const { cleaners, calls } = recording();
    const { removed } = await collectOrphans(registry, cleaners);
    expect(calls.sort()).toEqual(['docker:lt-deaddok', 'runsc:lt-deadrun']);
    expect(removed).toEqual(expect.arrayContaining(['lt-deaddok', 'lt-deadrun']));
    expect((await registry.list()).map((r) => r.id).sort()).toEqual(['lt-keptdok', 'lt-livedok']);
  });

  it('leaves records of an engine it was given no cleaner for', async () => {
    const state = await mkdtemp(join(tmpdir(), 'lt-gc-'));
    dirs.push(state);
    const registry = new SandboxRegistry(state);
    await registry.save(record('lt-deaddok', 'docker', false));
    const { cleaners, calls } = recording();
    await collectOrphans(registry, { runsc: cleaners.runsc });
    expect(calls).toEqual([]);
    expect((await registry.list()).map((r) => r.id)).toEqual(['lt-deaddok']);
  });

  it('removeSandboxResources of one docker record asks the docker cleaner about that record only', async () => {
    const { cleaners, calls } = recording();
    await removeSandboxResources(record('lt-one', 'docker', false), cleaners);
    expect(calls).toEqual(['docker:lt-one']);
  });
});

describe('no import cycle between src/sandbox and src/docker', () => {
  it('src/sandbox imports nothing from src/docker (statically or dynamically)', async () => {
    const dir = join(import.meta.dirname, '../../src/sandbox');
    const offenders: string[] = [];
    for (const f of await readdir(dir)) {
      if (!f.endsWith('.ts')) continue;
      if (/['"]\.\.\/docker\//.test(await readFile(join(dir, f), 'utf8'))) offenders.push(f);
    }
    expect(offenders).toEqual([]);
  });
});
