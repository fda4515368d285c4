/**
 * One sandbox lifecycle for every engine (runsc directly, or Docker under the lattice-runsc runtime),
 * the way testcontainers-node puts its container clients behind one interface:
 *
 *   engine.prepare()            prerequisites (runsc version, dockerd + runtime), nothing recorded yet
 *   gc                          orphans of dead launchers, each removed by its own record's engine
 *   record                      <state>/sandboxes/<id>/meta.json, before any resource (a crash leaves it for gc)
 *   network                     the caller's hook (WireGuard, host egress, or none)
 *   engine.create(record, net)  bundle + config.json (runsc) or the container (docker), recorded
 *   engine.start(record)        stdio attached; SIGINT/SIGTERM and `stopWhen` become engine.kill
 *   running.wait()              the sandbox's own exit status wins, also after a stop signal
 *   teardown                    engine.teardown, network.close, record removed (or marked kept):
 *                               last opened first, on every path, each step bounded (Teardown)
 *
 * Engines know nothing of each other: `sandbox/` never imports `docker/`; gc reaches a Docker record
 * through the `cleaners` its caller passes in.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { OciMount } from '../oci/spec.js';
import type { RunscNetwork } from '../runsc/client.js';
import type { CgroupKill } from '../runsc/cgroup-kill.js';
import { statePaths } from '../state.js';
import { collectOrphans, type EngineCleaners } from './gc.js';
import { SandboxRegistry, ownedByThisLauncher, type SandboxRecord } from './registry.js';
import { stopOnSignals, DEFAULT_STOP_GRACE_MS } from './signals.js';
import { Teardown } from './teardown.js';

/** What the sandbox's network looks like, prepared before the engine creates the sandbox and torn down after. */
export interface SandboxNetwork {
  /** runsc --network mode. */
  mode: RunscNetwork;
  netnsName?: string;
  netnsPath?: string;
  address?: string;
  /** Extra bind mounts (e.g. resolv.conf pointing at the launcher's DNS). */
  mounts?: OciMount[];
  close(): Promise<void>;
}

/** How a sandbox's process ended: its exit status and, when the host stopped it, which limit did. */
export interface SandboxExit {
  code: number;
  cause?: CgroupKill;
}

/** A started sandbox. */
export interface RunningSandbox {
  /** Forward a signal to every process of the sandbox (the stop path: SIGTERM, then SIGKILL). */
  kill(signal: NodeJS.Signals): Promise<unknown>;
  /** Resolves with the exit once the process ended and its output is drained; rejects on the engine's own failure. */
  wait(): Promise<SandboxExit>;
}

/** One engine behind the lifecycle. An instance runs one sandbox. */
export interface SandboxEngine {
  readonly kind: SandboxRecord['engine'];
  /** Check prerequisites before anything is recorded; throws PrerequisiteError/UsageError. */
  prepare(): Promise<void>;
  /** The record's view of the sandbox's filesystem and command. */
  describe(id: string, dir: string): Pick<SandboxRecord, 'bundleDir' | 'rootfs' | 'args' | 'image'>;
  /** Create the sandbox (not started) in `network` with `mounts`; may set record fields (containerId), which the lifecycle saves. */
  create(record: SandboxRecord, network: SandboxNetwork | undefined, mounts: OciMount[]): Promise<void>;
  /** Start what create made, stdio attached. */
  start(record: SandboxRecord): Promise<RunningSandbox>;
  /** Remove what create and start made (keep: what `--keep` keeps stays). Called once, on every path after create began. */
  teardown(record: SandboxRecord, opts: { keep: boolean }): Promise<void>;
}

/** What every engine's run takes, besides the engine's own options. */
export interface LifecycleOptions {
  stateDir: string;
  name?: string;
  /** Keep the finished sandbox (record marked kept; the Docker engine also keeps its container). */
  keep?: boolean;
  /** Builds the sandbox network once the id and directory are known; default: no network at all. */
  network?: (id: string, dir: string) => Promise<SandboxNetwork>;
  /** Bind mounts on top of the network's. */
  mounts?: OciMount[];
  log: Logger;
  /** Called once the sandbox runs (status, audit, tests). */
  onStarted?: (record: SandboxRecord) => void;
  /** Grace period between the stop signal and SIGKILL when lattice is asked to stop (ms; --stop-timeout). */
  stopGraceMs?: number;
  /** Stop the sandbox when this resolves (e.g. the control plane revoked the agent, or the daemon's `stop`). */
  stopWhen?: Promise<unknown>;
  /**
   * Whether the launcher's own SIGINT/SIGTERM stop this sandbox (default true: the CLI's foreground run).
   * The daemon, which owns many sandboxes, passes false and stops each one through `stopWhen`.
   */
  signals?: boolean;
  /** The sandbox's id, when the caller must know it before the run (the daemon opens its log first); default: newSandboxId(). */
  id?: string;
  /** Marks the record as owned by the resident daemon (`sandbox ls`, `sandbox stop`); default: a foreground launcher. */
  daemon?: boolean;
  /** Marks the record as an untaken warm-pool sandbox (src/daemon/pool.ts; the daemon clears it when a request takes it). */
  warm?: boolean;
  /** Called with the exit code (and why the host stopped it, if it did) before teardown (audit). */
  onExited?: (record: SandboxRecord, code: number, cause?: CgroupKill) => void;
  /**
   * Collect orphans of dead launchers before the run (default true). The daemon passes false: it reaped at
   * its start, and per request the collection costs several runsc/nft processes (`sandbox ls`/`gc` still collect).
   */
  gc?: boolean;
  /** How gc removes orphaned records of each engine; records of an engine not listed are left alone. */
  cleaners?: EngineCleaners;
}

/** Bound on each teardown step of a run (ms): removing a container may take a while on a loaded host. */
const RUN_TEARDOWN_STEP_MS = 30_000;

/** A fresh sandbox id: `lt-` and 8 hex digits. */
export function newSandboxId(): string {
  return `lt-${randomBytes(4).toString('hex')}`;
}

/** Docker and runsc accept [A-Za-z0-9-] hostnames up to 63 characters: the sandbox name made into one. */
export function hostnameOf(name: string): string {
  return name.replace(/[^A-Za-z0-9-]/g, '-').slice(0, 63).replace(/^-+|-+$/g, '') || 'sandbox';
}

/**
 * Run one sandbox with `engine` through the lifecycle above and return its exit code.
 * Errors: whatever prepare, the network hook, create or start throw (after teardown of what was made).
 */
export async function runLifecycle(engine: SandboxEngine, o: LifecycleOptions): Promise<number> {
  const { log } = o;
  await engine.prepare();
  const registry = new SandboxRegistry(o.stateDir);
  const gc = o.gc === false ? { removed: [] } : await collectOrphans(registry, o.cleaners ?? {});
  if (gc.removed.length) log.info({ removed: gc.removed }, 'removed orphaned sandboxes');

  const id = o.id ?? newSandboxId();
  const dir = registry.dirOf(id);
  const record: SandboxRecord = {
    id,
    name: o.name ?? id,
    engine: engine.kind,
    ...ownedByThisLauncher(),
    runscRoot: statePaths(o.stateDir).runscRoot,
    ...engine.describe(id, dir),
    ...(o.daemon ? { daemon: true } : {}),
    ...(o.warm ? { warm: true } : {}),
  };
  // The record exists before any resource, so a crash at any later point leaves something gc can find.
  await registry.save(record);
  const keep = Boolean(o.keep);
  const t = new Teardown(log, RUN_TEARDOWN_STEP_MS);
  t.defer('record', () => (keep ? registry.save({ ...record, kept: true }) : registry.remove(id)));
  try {
    const network = o.network ? t.adopt('network', await o.network(id, dir), (n) => n.close()) : undefined;
    if (network) {
      record.netns = network.netnsName;
      record.address = network.address;
      await registry.save(record);
    }
    t.defer('engine', () => engine.teardown(record, { keep }));
    await engine.create(record, network, [...(network?.mounts ?? []), ...(o.mounts ?? [])]);
    await registry.save(record);
    const running = await engine.start(record);
    const stopper = stopOnSignals((sig) => running.kill(sig), id, o.stopGraceMs ?? DEFAULT_STOP_GRACE_MS, log, o.signals ?? true);
    void o.stopWhen?.then(() => stopper.stop('SIGTERM'));
    let exit: SandboxExit;
    try {
      o.onStarted?.(record);
      exit = await running.wait();
    } finally {
      stopper.dispose();
    }
    // A kept record says how the sandbox ended (`sandbox ls`, the daemon's API).
    record.exitCode = exit.code;
    o.onExited?.(record, exit.code, exit.cause);
    return exit.code;
  } finally {
    await t.close();
  }
}
