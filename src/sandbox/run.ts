/**
 * The runsc engine: the sandbox is a gVisor container that lattice runs with `runsc run` from an OCI
 * bundle it writes itself (config.json from src/oci). Driven by the one lifecycle in lifecycle.ts.
 */
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { buildSpec } from '../oci/spec.js';
import { writeBundle } from '../oci/bundle.js';
import type { OciMount, OciSpec } from '../oci/spec.js';
import { formatBytes, type OciResources } from '../oci/resources.js';
import { CgroupKill, cgroupKillFromLog, readKernelLog } from '../runsc/cgroup-kill.js';
import { Runsc } from '../runsc/client.js';
import { RunscError, commandStartError, runscMessage } from '../runsc/errors.js';
import { statePaths } from '../state.js';
import { cgroupPathOf, liftCpuQuota, removeCgroup } from './cgroup.js';
import type { RecordCleaner } from './gc.js';
import { hostnameOf, runLifecycle, type LifecycleOptions, type RunningSandbox, type SandboxEngine, type SandboxNetwork } from './lifecycle.js';
import type { SandboxRecord } from './registry.js';
import { respec } from './ops/restore.js';
import { signalNumber } from './signals.js';
import { planStdio, copyInto, feedStdin, openMergedPipe, type StdioPlan } from './stdio.js';

/** The process and limits of a runsc sandbox: what RunscEngine takes besides the lifecycle's options. */
export interface RunscProcess {
  /** Absolute path of the root filesystem directory (mounted read-only). */
  rootfs: string;
  args: string[];
  env?: string[];
  cwd?: string;
  user?: { uid: number; gid: number };
  capabilities?: string[];
  /** runsc --debug --debug-log=<state>/debug/. */
  debug?: boolean;
  /** runsc --host-uds=open: the sandbox may connect to bind-mounted host Unix sockets (the agent API). */
  hostUds?: boolean;
  /** How the caller's stdin/stdout reach the sandbox (default: planStdio() of fds 0 and 1). */
  stdio?: StdioPlan;
  /** Where a piped stdin comes from (default: this process's stdin); the daemon's warm pool writes the command here. */
  input?: Readable;
  /** Where piped output goes (default: this process's stdout and stderr); the daemon passes its log file. */
  output?: { stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream };
  /** Memory, CPU and pids limits, applied by runsc to the host cgroup /lattice/<id>. */
  resources?: OciResources;
  /** Size of the sandbox's /tmp tmpfs in bytes. */
  tmpSizeBytes?: number;
  /**
   * Restore mode (`sandbox restore`): `runsc restore` of the checkpoint image instead of `runsc run`, from the
   * checkpointed spec re-pointed at this sandbox (ops/restore.ts respec); the fields above are then unused.
   */
  restore?: { imagePath: string; spec: OciSpec };
}

export interface RunSandboxOptions extends LifecycleOptions, RunscProcess {}

/** One line for the user: which limit stopped the sandbox, and the exit status. */
export function limitMessage(name: string, cause: CgroupKill, r: OciResources, exit: number): string {
  return cause === CgroupKill.Oom
    ? `lattice: sandbox ${name} was killed: out of memory (limit ${formatBytes(r.memory.limit)}, raise it with --memory); exit status ${exit}`
    : `lattice: sandbox ${name} was stopped: it reached its limit of ${r.pids.limit} tasks (raise it with --pids-limit); exit status ${exit}`;
}

const RUNSC_OWN_FAILURE = /^(running|creating|starting|reading|loading) (container|spec|sandbox)/;

/** gc's cleaner for runsc records: `runsc delete --force` of the record's container (its CPU quota lifted first), then its host cgroup. */
export const removeRunscRecord: RecordCleaner = async (r) => {
  await liftCpuQuota(cgroupPathOf(r.id));
  await new Runsc({ root: r.runscRoot }).delete(r.id, { force: true }).catch(() => undefined);
  await removeCgroup(cgroupPathOf(r.id));
};

/** The runsc engine: bundle at create, `runsc run` at start, `runsc delete` at teardown unless runsc already did. */
export class RunscEngine implements SandboxEngine {
  readonly kind = 'runsc' as const;
  private readonly runscRoot: string;
  private readonly debugLogDir: string | undefined;
  private runsc: Runsc | undefined;
  private deletedByRunsc = false;

  constructor(
    private readonly p: RunscProcess,
    stateDir: string,
  ) {
    const paths = statePaths(stateDir);
    this.runscRoot = paths.runscRoot;
    this.debugLogDir = p.debug ? join(paths.root, 'debug') : undefined;
  }

  async prepare(): Promise<void> {}

  describe(id: string, dir: string) {
    const r = this.p.restore?.spec;
    return { bundleDir: join(dir, 'bundle'), rootfs: r?.root.path ?? this.p.rootfs, args: r?.process.args ?? this.p.args };
  }

  async create(record: SandboxRecord, network: SandboxNetwork | undefined, mounts: OciMount[]): Promise<void> {
    const p = this.p;
    const spec = p.restore ? respec(p.restore.spec, { id: record.id, name: record.name, netnsPath: network?.netnsPath, mounts, cgroupsPath: cgroupPathOf(record.id) }) : buildSpec({
      args: p.args,
      env: p.env,
      cwd: p.cwd,
      user: p.user,
      hostname: hostnameOf(record.name),
      rootfs: p.rootfs,
      capabilities: p.capabilities,
      netnsPath: network?.netnsPath,
      mounts,
      annotations: { 'dev.lattice.sandbox.id': record.id, 'dev.lattice.sandbox.name': record.name },
      resources: p.resources,
      cgroupsPath: p.resources ? cgroupPathOf(record.id) : undefined,
      tmpSizeBytes: p.tmpSizeBytes,
    });
    await writeBundle(record.bundleDir, spec);
    const netRaw = spec.process.capabilities.effective.includes('CAP_NET_RAW');
    this.runsc = new Runsc({ root: this.runscRoot, network: network?.mode ?? 'none', debugLogDir: this.debugLogDir, hostUds: p.hostUds, netRaw });
  }

  async start(record: SandboxRecord): Promise<RunningSandbox> {
    const runsc = this.runsc!;
    const { id } = record;
    const dir = join(record.bundleDir, '..');
    const stdio = this.p.stdio ?? planStdio();
    const merged = stdio.stdout === 'pipe' && stdio.merged ? await openMergedPipe(dir) : undefined;
    let child: Awaited<ReturnType<Runsc['run']>>['child'];
    try {
      const fds = {
        stdin: stdio.stdin,
        // A file descriptor number is handed to spawn() as is (execa's types name only 1 and 2).
        stdout: merged ? (merged.writeFd as unknown as 'pipe') : stdio.stdout,
        stderr: merged ? (merged.writeFd as unknown as 'pipe') : ('pipe' as const),
      };
      const restore = this.p.restore;
      ({ child } = restore ? await runsc.restore(id, record.bundleDir, restore.imagePath, fds) : await runsc.run(id, record.bundleDir, fds));
    } finally {
      merged?.closeWriter();
    }
    if (stdio.stdin === 'pipe' && child.stdin) feedStdin(this.p.input ?? process.stdin, child.stdin);
    const out = this.p.output ?? { stdout: process.stdout, stderr: process.stderr };
    const copied = stdio.stdout === 'pipe' && child.stdout && !merged ? copyInto(child.stdout, out.stdout as Writable) : undefined;
    // runsc's stderr is the sandbox's stderr too. A chunk that reads like runsc's own failure line is held
    // back: if runsc failed, it becomes the one error message (not printed twice); otherwise it is the
    // sandbox's output after all and is written at the end.
    let stderrTail = '';
    const heldBack: Buffer[] = [];
    const errOut = merged ? out.stdout : out.stderr;
    const errStream = merged ? merged.reader : child.stderr;
    const errDone = errStream ? new Promise<void>((resolve) => errStream.once('close', () => resolve())) : undefined;
    errStream?.on('data', (chunk: Buffer) => {
      stderrTail = (stderrTail + chunk.toString()).slice(-4096);
      if (RUNSC_OWN_FAILURE.test(chunk.toString('latin1', 0, 64))) heldBack.push(chunk);
      else errOut.write(chunk);
    });
    let stopped = false;
    return {
      kill: (sig) => {
        stopped = true;
        return runsc.kill(id, sig, { all: true });
      },
      wait: async () => {
        const result = await child;
        await Promise.all([copied, errDone]);
        // `runsc run` deletes its container when the container exits; a failure of runsc itself may not, and
        // `runsc restore` never does (its container stays listed as stopped until `runsc delete`).
        this.deletedByRunsc = !this.p.restore && result.exitCode !== null && result.exitCode !== 128;
        // The container's own exit status wins, also after a stop signal: a process that traps SIGTERM and
        // exits 7 exits 7 (as with `docker stop`); one killed by the signal reports 128+N through runsc.
        const code = result.exitCode ?? (result.signal ? 128 + signalNumber(result.signal) : 1);
        const last = runscMessage(stderrTail);
        if (code === 128 && RUNSC_OWN_FAILURE.test(last)) throw commandStartError(last) ?? new RunscError('run', last, this.debugLogDir);
        for (const chunk of heldBack) errOut.write(chunk);
        const r = this.p.resources;
        const cause = r && code !== 0 && !stopped ? cgroupKillFromLog(readKernelLog(), cgroupPathOf(id)) : undefined;
        if (!cause) return { code };
        const exit = cause === CgroupKill.Oom ? 137 : code; // 128 + SIGKILL, as docker reports an OOM kill
        out.stderr.write(`${limitMessage(record.name, cause, r!, exit)}\n`);
        return { code: exit, cause };
      },
    };
  }

  async teardown(record: SandboxRecord): Promise<void> {
    // The container goes also with --keep (runsc run deletes it on exit anyway); the bundle stays with the record.
    if (this.runsc && !this.deletedByRunsc) await removeRunscRecord(record);
    else await removeCgroup(cgroupPathOf(record.id));
  }
}

/**
 * Run one command in a fresh gVisor sandbox and return its exit code. stdio passes through;
 * SIGINT/SIGTERM stop the sandbox; the container, its network and its bundle are removed afterwards
 * unless keep is set. gc on the way removes orphaned runsc records (and Docker ones if `cleaners` says how).
 */
export function runSandbox(opts: RunSandboxOptions): Promise<number> {
  return runLifecycle(new RunscEngine(opts, opts.stateDir), { cleaners: { runsc: async () => removeRunscRecord }, ...opts });
}
