/**
 * `lattice sandbox checkpoint NAME --to DIR`: save a running sandbox (memory, processes, gVisor's netstack)
 * with `runsc checkpoint`, which stops it once saved. `sandbox restore DIR` (ops/restore.ts) continues it.
 *
 *   DIR (0700, new or empty; refused when it holds anything, a symlink, or its parent is missing)
 *   ├── lattice-checkpoint.json   what the restore needs besides the image (ops/restore.ts CheckpointMeta)
 *   ├── config.json               the sandbox's OCI spec as it ran
 *   └── image/                    runsc's image (checkpoint.img ...): the sandbox's whole memory
 *
 * The image holds everything the sandbox held in memory, secrets included: DIR is the caller's only, and no
 * key material of lattice's own goes into it (the WireGuard key stays in the state dir's credentials).
 * The original sandbox stops: its launcher sees `runsc run` exit and tears its network down; checkpoint
 * returns once that launcher has let the sandbox go, so a restore right after finds the identity free.
 */
import { chmod, lstat, mkdir, readdir, readFile, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { UsageError } from '../../errors.js';
import { writeFileAtomic } from '../../fsutil.js';
import { credentialsPath } from '../../enroll/credentials.js';
import { Runsc } from '../../runsc/client.js';
import { isLauncherAlive, type SandboxRecord, type SandboxRegistry } from '../registry.js';
import { CHECKPOINT_FORMAT, CHECKPOINT_IMAGE, CHECKPOINT_META, CHECKPOINT_SPEC, CheckpointError, type CheckpointMeta } from './restore.js';

/**
 * The connection named by runsc's refusal to save a connected TCP endpoint ("endpoint cannot be saved in
 * connected state: local A:P, remote B:Q"), or undefined for any other failure.
 */
export function connectionHeld(err: unknown): string | undefined {
  const m = /cannot be saved in connected state: (local [^,]+, remote [^\s:]+(?::\d+)?)/.exec(String((err as Error)?.message ?? err));
  return m?.[1];
}

/** How long checkpoint waits for the original's launcher to let it go (ms): a safety net, teardown is bounded. */
const RELEASE_WAIT_MS = 120_000;

/**
 * Make `dir` the checkpoint's directory: created 0700 (its parent must exist), or an existing empty one
 * made 0700. Returns the absolute path and whether it was created. Errors: UsageError, nothing changed.
 */
export async function prepareCheckpointDir(dir: string): Promise<{ path: string; created: boolean }> {
  const path = resolve(dir);
  const st = await lstat(path).catch(() => undefined);
  if (st) {
    if (st.isSymbolicLink() || !st.isDirectory()) throw new UsageError(`--to ${dir} exists and is not a directory; give a new or empty directory`);
    if ((await readdir(path)).length > 0) throw new UsageError(`--to ${dir} is not empty; give a new or empty directory (a checkpoint never overwrites one)`);
    await chmod(path, 0o700);
    return { path, created: false };
  }
  if (!(await lstat(dirname(path)).catch(() => undefined))?.isDirectory()) throw new UsageError(`--to ${dir}: ${dirname(path)} is not a directory; create it first`);
  await mkdir(path, { mode: 0o700 });
  await chmod(path, 0o700); // mkdir's mode is masked by the umask
  return { path, created: true };
}

/**
 * Which network the checkpoint carries: none, or the enrolled identity of `sandbox start` (credentials of
 * the sandbox's name in `stateDir`). Errors: CheckpointError for any other network (host egress of
 * `sandbox run`), before anything is written.
 */
export async function checkpointNetworkOf(record: SandboxRecord, stateDir: string): Promise<Pick<CheckpointMeta, 'network' | 'agent'>> {
  if (!record.netns) return { network: 'none' };
  if (await lstat(credentialsPath(stateDir, record.name)).catch(() => undefined)) return { network: 'enrolled', agent: record.name };
  throw new CheckpointError(`sandbox ${record.name} has a network that is not an enrolled identity (sandbox run --egress?); checkpoint carries sandboxes without a network or started with sandbox start`);
}

/**
 * Checkpoint `record` into `dir` and wait until its launcher let it go. Returns the checkpoint's path.
 * gVisor refuses to save a TCP endpoint that is connected (established, closing, or in TIME_WAIT) on the
 * sandbox's network, and runsc then ends the sandbox (observed with release 20240729).
 * Errors: UsageError (dir), CheckpointError (network; a TCP connection held: the sandbox is gone), RunscError
 * (runsc refused otherwise). On any error what was written to `dir` is removed.
 */
export async function checkpointSandbox(record: SandboxRecord, dir: string, o: { registry: SandboxRegistry; runsc?: Runsc }): Promise<string> {
  const net = await checkpointNetworkOf(record, o.registry.stateDir);
  const spec = await readFile(join(record.bundleDir, 'config.json'), 'utf8');
  const { path, created } = await prepareCheckpointDir(dir);
  const meta: CheckpointMeta = {
    format: CHECKPOINT_FORMAT,
    name: record.name,
    sandboxId: record.id,
    createdAt: new Date().toISOString(),
    ...net,
    stateDir: resolve(o.registry.stateDir),
  };
  try {
    await writeFileAtomic(join(path, CHECKPOINT_SPEC), spec, 0o600);
    await writeFileAtomic(join(path, CHECKPOINT_META), JSON.stringify(meta, null, 2) + '\n', 0o600);
    await mkdir(join(path, CHECKPOINT_IMAGE), { mode: 0o700 });
    const err = await (o.runsc ?? new Runsc({ root: record.runscRoot })).checkpoint(record.id, join(path, CHECKPOINT_IMAGE)).then(() => undefined, (e: unknown) => e);
    const held = err === undefined ? undefined : connectionHeld(err);
    // runsc (20240729) ends the sandbox when it refuses the save: say so, the user cannot retry.
    if (held) throw new CheckpointError(`sandbox ${record.name} held a TCP connection (${held}), which runsc cannot checkpoint, and runsc ended the sandbox; checkpoint only with no TCP connection open or closed in the last 60 s (TIME_WAIT)`, { cause: err });
    if (err !== undefined) throw err;
  } catch (err) {
    if (created) await rm(path, { recursive: true, force: true });
    else for (const f of await readdir(path)) await rm(join(path, f), { recursive: true, force: true });
    throw err;
  }
  await released(o.registry, record);
  return path;
}

/** Resolves once `record` no longer runs: its record removed or kept, or its launcher gone. */
async function released(registry: SandboxRegistry, record: SandboxRecord): Promise<void> {
  const deadline = Date.now() + RELEASE_WAIT_MS;
  for (;;) {
    const now = (await registry.list()).find((r) => r.id === record.id);
    if (!now || now.kept || now.reaped || !isLauncherAlive(now)) return;
    if (Date.now() > deadline) throw new CheckpointError(`sandbox ${record.name} was checkpointed but its launcher (pid ${record.launcherPid}) has not let it go; stop that launcher before restoring`);
    await new Promise((r) => setTimeout(r, 50)); // the launcher's teardown is the event; no signal tells us of it
  }
}
