import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { buildSpec, type OciMount } from '../oci/spec.js';
import { writeBundle } from '../oci/bundle.js';
import { formatBytes, type OciResources } from '../oci/resources.js';
import { CgroupKill, cgroupKillFromLog, readKernelLog } from '../runsc/cgroup-kill.js';
import { Runsc, type RunscNetwork } from '../runsc/client.js';
import { RunscError, commandStartError, runscMessage } from '../runsc/errors.js';
import { statePaths } from '../state.js';
import { SandboxRegistry, ownedByThisLauncher, type SandboxRecord } from './registry.js';
import { collectOrphans, removeSandboxResources } from './gc.js';
import { stopOnSignals, signalNumber, DEFAULT_STOP_GRACE_MS } from './signals.js';
import { planStdio, copyInto, feedStdin, openMergedPipe, type StdioPlan } from './stdio.js';

/** What the sandbox's network looks like, prepared before runsc starts and torn down after. */
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

export interface RunSandboxOptions {
  stateDir: string;
  name?: string;
  /** Absolute path of the root filesystem directory (mounted read-only). */
  rootfs: string;
  args: string[];
  env?: string[];
  cwd?: string;
  user?: { uid: number; gid: number };
  capabilities?: string[];
  keep?: boolean;
  debug?: boolean;
  /** Builds the sandbox network once the id and directory are known; default: no network at all. */
  network?: (id: string, dir: string) => Promise<SandboxNetwork>;
  hostUds?: boolean;
  mounts?: OciMount[];
  log: Logger;
  /** Called once the container runs (status, tests). */
  onStarted?: (record: SandboxRecord) => void;
  /** Grace period between the stop signal and SIGKILL when lattice is asked to stop (ms; --stop-timeout). */
  stopGraceMs?: number;
  /** How the caller's stdin/stdout reach the sandbox (default: planStdio() of fds 0 and 1). */
  stdio?: StdioPlan;
  /** Stop the sandbox when this resolves (e.g. the control plane revoked the agent). */
  stopWhen?: Promise<unknown>;
  /** Called with the exit code (and why the host stopped it, if it did) before cleanup (audit). */
  onExited?: (record: SandboxRecord, code: number, cause?: CgroupKill) => void;
  /** Memory, CPU and pids limits, applied by runsc to the host cgroup /lattice/<id>. */
  resources?: OciResources;
  /** Size of the sandbox's /tmp tmpfs in bytes. */
  tmpSizeBytes?: number;
}

/** The host cgroup of a sandbox (runsc creates it under each controller and removes it at exit). */
export const cgroupPathOf = (id: string) => `/lattice/${id}`;

/** One line for the user: which limit stopped the sandbox, and the exit status. */
export function limitMessage(name: string, cause: CgroupKill, r: OciResources, exit: number): string {
  return cause === CgroupKill.Oom
    ? `lattice: sandbox ${name} was killed: out of memory (limit ${formatBytes(r.memory.limit)}, raise it with --memory); exit status ${exit}`
    : `lattice: sandbox ${name} was stopped: it reached its limit of ${r.pids.limit} tasks (raise it with --pids-limit); exit status ${exit}`;
}

const RUNSC_OWN_FAILURE = /^(running|creating|starting|reading|loading) (container|spec|sandbox)/;

export function newSandboxId(): string {
  return `lt-${randomBytes(4).toString('hex')}`;
}

/**
 * Run one command in a fresh gVisor sandbox and return its exit code. stdio passes through;
 * SIGINT/SIGTERM stop the sandbox; the container, its network and its bundle are removed afterwards
 * unless keep is set.
 */
export async function runSandbox(opts: RunSandboxOptions): Promise<number> {
  const { log } = opts;
  const registry = new SandboxRegistry(opts.stateDir);
  const paths = statePaths(opts.stateDir);
  const debugLogDir = opts.debug ? join(paths.root, 'debug') : undefined;

  const gc = await collectOrphans(registry, (r) => new Runsc({ root: r.runscRoot }));
  if (gc.removed.length) log.info({ removed: gc.removed }, 'removed orphaned sandboxes');

  const id = newSandboxId();
  const dir = registry.dirOf(id);
  const record: SandboxRecord = {
    id,
    name: opts.name ?? id,
    engine: 'runsc',
    ...ownedByThisLauncher(),
    runscRoot: paths.runscRoot,
    bundleDir: join(dir, 'bundle'),
    rootfs: opts.rootfs,
    args: opts.args,
  };
  // The record exists before any resource, so a crash at any later point leaves something gc can find.
  await registry.save(record);

  let network: SandboxNetwork | undefined;
  let runsc: Runsc | undefined;
  let deletedByRunsc = false;
  try {
    network = opts.network ? await opts.network(id, dir) : undefined;
    if (network) {
      record.netns = network.netnsName;
      record.address = network.address;
      await registry.save(record);
    }
    const spec = buildSpec({
      args: opts.args,
      env: opts.env,
      cwd: opts.cwd,
      user: opts.user,
      hostname: record.name.replace(/[^A-Za-z0-9-]/g, '-').slice(0, 63).replace(/^-+|-+$/g, '') || 'sandbox',
      rootfs: opts.rootfs,
      capabilities: opts.capabilities,
      netnsPath: network?.netnsPath,
      mounts: [...(network?.mounts ?? []), ...(opts.mounts ?? [])],
      annotations: { 'dev.lattice.sandbox.id': id, 'dev.lattice.sandbox.name': record.name },
      resources: opts.resources,
      cgroupsPath: opts.resources ? cgroupPathOf(id) : undefined,
      tmpSizeBytes: opts.tmpSizeBytes,
    });
    await writeBundle(record.bundleDir, spec);

    const netRaw = spec.process.capabilities.effective.includes('CAP_NET_RAW');
    runsc = new Runsc({ root: paths.runscRoot, network: network?.mode ?? 'none', debugLogDir, hostUds: opts.hostUds, netRaw });
    const stdio = opts.stdio ?? planStdio();
    const merged = stdio.stdout === 'pipe' && stdio.merged ? await openMergedPipe(dir) : undefined;
    let child: Awaited<ReturnType<Runsc['run']>>['child'];
    try {
      ({ child } = await runsc.run(id, record.bundleDir, {
        stdin: stdio.stdin,
        // A file descriptor number is handed to spawn() as is (execa's types name only 1 and 2).
        stdout: merged ? (merged.writeFd as unknown as 'pipe') : stdio.stdout,
        stderr: merged ? (merged.writeFd as unknown as 'pipe') : 'pipe',
      }));
    } finally {
      merged?.closeWriter();
    }
    if (stdio.stdin === 'pipe' && child.stdin) feedStdin(process.stdin, child.stdin);
    const copied = stdio.stdout === 'pipe' && child.stdout && !merged ? copyInto(child.stdout, process.stdout) : undefined;
    // runsc's stderr is the sandbox's stderr too. A chunk that reads like runsc's own failure line is held
    // back: if runsc failed, it becomes the one error message (not printed twice); otherwise it is the
    // sandbox's output after all and is written at the end.
    let stderrTail = '';
    const heldBack: Buffer[] = [];
    const errOut = merged ? process.stdout : process.stderr;
    const errStream = merged ? merged.reader : child.stderr;
    const errDone = errStream ? new Promise<void>((resolve) => errStream.once('close', () => resolve())) : undefined;
    errStream?.on('data', (chunk: Buffer) => {
      stderrTail = (stderrTail + chunk.toString()).slice(-4096);
      if (RUNSC_OWN_FAILURE.test(chunk.toString('latin1', 0, 64))) heldBack.push(chunk);
      else errOut.write(chunk);
    });

    const live = runsc;
    const stopper = stopOnSignals((sig) => live.kill(id, sig, { all: true }), id, opts.stopGraceMs ?? DEFAULT_STOP_GRACE_MS, log);
    void opts.stopWhen?.then(() => stopper.stop('SIGTERM'));
    opts.onStarted?.(record);
    const result = await child;
    await Promise.all([copied, errDone]);
    // `runsc run` deletes its container when the container exits; a failure of runsc itself may not.
    deletedByRunsc = result.exitCode !== null && result.exitCode !== 128;
    stopper.dispose();

    // The container's own exit status wins, also after a stop signal: a process that traps SIGTERM and
    // exits 7 exits 7 (as with `docker stop`); one killed by the signal reports 128+N through runsc.
    const code = result.exitCode ?? (result.signal ? 128 + signalNumber(result.signal) : 1);
    const last = runscMessage(stderrTail);
    if (code === 128 && RUNSC_OWN_FAILURE.test(last)) throw commandStartError(last) ?? new RunscError('run', last, debugLogDir);
    for (const chunk of heldBack) errOut.write(chunk);
    let exit = code;
    const cause = opts.resources && exit !== 0 && !stopper.signal ? cgroupKillFromLog(readKernelLog(), cgroupPathOf(id)) : undefined;
    if (cause) {
      if (cause === CgroupKill.Oom) exit = 137; // 128 + SIGKILL, as docker reports an OOM kill
      process.stderr.write(`${limitMessage(record.name, cause, opts.resources!, exit)}\n`);
      log.debug({ id, cause, exit }, 'sandbox stopped by a resource limit');
    }
    opts.onExited?.(record, exit, cause);
    return exit;
  } finally {
    if (runsc && !deletedByRunsc) await removeSandboxResources({ ...record, netns: undefined }, runsc);
    await network?.close().catch((err: unknown) => log.warn({ err }, 'network teardown failed'));
    if (opts.keep) await registry.save({ ...record, kept: true });
    else await registry.remove(id);
  }
}
