/**
 * The daemon's sandboxes: each one is the same runLifecycle(RunscEngine) that `sandbox run`/`start`
 * use, run in this process with its stdio in a log file and its stop signal coming from the API
 * instead of the terminal.
 *
 *   create   prepareProcess (image, user, limits: the CLI's checks) -> network hook (none | host egress |
 *            enrolled) -> runLifecycle(keep, daemon, signals off, output -> <sandbox dir>/output.log)
 *            -> resolves once onStarted fires (the sandbox runs), rejects if the run failed first
 *   stop     resolves the run's stopWhen: SIGTERM, SIGKILL after stopTimeoutSeconds; resolves after exit
 *   exit     the record stays (kept, exitCode) with output.log until `remove`
 *   restore  a checkpoint without network continued (restore()): the same lifecycle in restore mode
 *            (`runsc restore`, a new id), output to its own log, then a daemon sandbox like any other
 *   restart  a daemon killed with -9 takes its sandboxes' networks with it (the TUN fds, pumps and
 *            WireGuard sessions live in its process), so they cannot be re-adopted: the next daemon (or any
 *            `sandbox ls`/`gc`) reaps them through collectOrphans (runsc delete --force, netns, egress
 *            table) and keeps their records marked `reaped`.
 *
 * Collaborators (state dir, logger, engine cleaners) come in through the constructor; no module state.
 */
import { closeSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { lstat } from 'node:fs/promises';
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import type { Logger } from 'pino';
import { LatticeError, UsageError } from '../errors.js';
import { DEFAULT_CPU_SHARES, cgroupPathOf, setCpu } from '../sandbox/cgroup.js';
import { hostnameOf, newSandboxId } from '../sandbox/lifecycle.js';
import type { EngineCleaners } from '../sandbox/gc.js';
import { SandboxRegistry, isLauncherAlive, statusOf, type SandboxRecord } from '../sandbox/registry.js';
import { Runsc } from '../runsc/client.js';
import type { CgroupKill } from '../runsc/cgroup-kill.js';
import type { PreparedProcess } from '../sandbox/prepare.js';
import type { RunSandboxOptions, RunscProcess } from '../sandbox/run.js';
import type { Checkpoint } from '../sandbox/ops/restore.js';
import type { StdioPlan } from '../sandbox/stdio.js';
import type { CheckedCreateRequest, SandboxView } from './api.js';
import { WarmPool, claimLine, memberKey, poolId, requestKey, sourceOf, type PoolSpec, type PoolState, type WarmMember } from './pool.js';

/** The file in a sandbox's directory holding its merged stdout and stderr. */
export const OUTPUT_LOG = 'output.log';
/**
 * The CPU of a parked warm-pool sandbox: while it boots, the lowest CFS weight (it yields to every other
 * task); once parked, also at most 1 ms of CPU per second. runsc 20240729's systrap wakes every 400 µs even in an
 * idle sandbox (about 4% of a core each; gVisor PR 13470 parks that loop), and 10 parked sandboxes made a
 * request's first output 4x slower on 2 cores. A claim, or a drain, gives the sandbox its own CPU back first.
 */
export const PARKED_CPU_SHARES = 2;
export const PARKED_CPU_QUOTA_US = 1000;
export const PARKED_CPU_PERIOD_US = 1_000_000;

/** A sandbox that is not where the caller said. HTTP 404. */
export class SandboxNotFoundError extends LatticeError {
  override readonly name = 'SandboxNotFoundError';
  constructor(ref: string) {
    super('ESANDBOX_NOT_FOUND', `no sandbox has id or name ${ref}; see lattice sandbox ls`, { exitCode: 2 });
  }
}

/** The operation needs a stopped sandbox. HTTP 409. */
export class SandboxStillRunningError extends LatticeError {
  override readonly name = 'SandboxStillRunningError';
  constructor(ref: string) {
    super('ESANDBOX_RUNNING', `sandbox ${ref} is running; stop it first with lattice sandbox stop ${ref}`, { exitCode: 2 });
  }
}

/**
 * Output of one sandbox: every chunk goes to the log file with write(2) before it is announced, so a
 * follower that reads the file and then listens (in one tick) sees each byte exactly once.
 */
class LogSink extends Writable {
  readonly events = new EventEmitter();
  private fd: number | undefined;
  constructor(readonly path: string) {
    super();
    this.fd = openSync(path, 'a', 0o600);
  }
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    try {
      if (this.fd !== undefined) writeSync(this.fd, chunk);
      this.events.emit('data', chunk);
      cb();
    } catch (err) {
      cb(err as Error);
    }
  }
  finish(): void {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    this.events.emit('end');
  }
}

interface Live {
  id: string;
  /** Changes when a request takes a warm-pool sandbox (claim). */
  name: string;
  /** The lifecycle's record, once it runs (the same object the lifecycle and claim() update). */
  record?: SandboxRecord;
  /** Set as its run ends; it stays in `live` until its network is closed (`closed`). */
  ended?: boolean;
  stop: () => void;
  exited: Promise<void>;
  /** Resolves once its run ended and its network is closed: it has left `live`. */
  closed: Promise<void>;
  sink: LogSink;
}

/** What a request's network hook gives the lifecycle (none, host egress, enrolled). */
interface SandboxNet {
  network: RunSandboxOptions['network'];
  hostUds?: boolean;
  revoked?: Promise<unknown>;
  onStarted?: (r: SandboxRecord) => void;
  onExited?: (r: SandboxRecord, code: number, cause?: CgroupKill) => void;
  close(): Promise<void>;
}

/** One sandbox for launch(): its process, network, stop grace, and for a warm-pool one its stdin. */
interface LaunchOptions {
  proc: RunscProcess;
  name?: string;
  net?: SandboxNet;
  stopGraceMs: number;
  input?: Readable;
  warm?: boolean;
  /** How its stdio is made (default: stdin from `input` or /dev/null, stdout and stderr one pipe to its log). */
  stdio?: StdioPlan;
}

/** A parked warm-pool sandbox: its record (the lifecycle's own object) and the pipe its shell reads. */
interface Parked {
  record: SandboxRecord;
  input: PassThrough;
  /** Give the sandbox its own CPU time back (PARKED_CPU_*); never throws. */
  unpark: () => Promise<void>;
  /** The lifecycle's stop (SIGTERM to the sandbox's process 1), which a claimed sandbox's stop uses. */
  stop: () => void;
}

export interface SupervisorDeps {
  stateDir: string;
  log: Logger;
  cleaners: EngineCleaners;
  /** Where run-time pool sets are remembered across restarts (pool-store.ts); none: not remembered. */
  poolStore?: { record(spec: PoolSpec): Promise<void> };
}

/** Owns the daemon's running sandboxes (see the comment at the top of this file). */
export class Supervisor {
  private readonly live = new Map<string, Live>();
  private readonly registry: SandboxRegistry;
  private readonly parked = new Map<string, Parked>();
  private readonly pool: WarmPool;
  /** Host-egress networks of the pools' policy files, as read at the last setPool naming each. */
  private readonly hosts = new Map<string, { network(log: Logger): SandboxNet['network'] }>();

  constructor(private readonly deps: SupervisorDeps) {
    this.registry = new SandboxRegistry(deps.stateDir);
    this.pool = new WarmPool((spec) => this.launchWarm(spec), deps.log);
  }

  get running(): number {
    return this.live.size;
  }

  /** Every sandbox of the state dir (the daemon's and foreground launchers'), as `sandbox ls` shows them. */
  async list(): Promise<SandboxView[]> {
    return (await this.registry.list()).map((r) => this.view(r));
  }

  async get(ref: string): Promise<SandboxView> {
    return this.view(await this.find(ref));
  }

  /**
   * Start a sandbox and resolve once it runs: a parked one of the warm pool when the request matches one
   * (pool.ts), else a cold one. Errors: UsageError (bad flags, unknown image or user; nothing made),
   * ESANDBOX_RUNNING (a running sandbox has this name), whatever the run's start throws (after teardown).
   */
  async create(req: CheckedCreateRequest): Promise<SandboxView> {
    const { stateDir } = this.deps;
    this.requireFreeName(req.name);
    const [{ prepareProcess }, { parseCapability }] = await Promise.all([import('../sandbox/prepare.js'), import('../oci/capabilities.js')]);
    const capabilities = req.capAdd.map(parseCapability);
    const proc = await prepareProcess(req, stateDir);
    const key = requestKey(req, proc);
    const source = sourceOf(req);
    const member = key === undefined ? undefined : this.pool.take(key, source === undefined ? undefined : { source, rootfs: proc.rootfs });
    if (member) return this.claim(member.id, req, proc);
    const net = await this.network(req);
    const { id } = await this.launch({ proc: { ...proc, capabilities }, name: req.name, net, stopGraceMs: Math.round(req.stopTimeoutSeconds * 1000) });
    return this.get(id);
  }

  /**
   * Continue a checkpoint as a daemon sandbox (POST /v1/sandboxes/restore): `ck` (ops/restore.ts
   * readCheckpoint) goes through the same lifecycle as create() in restore mode (`runsc restore` of its image,
   * a new id, the spec re-pointed by respec), named `name` (default: the checkpointed sandbox's name), output
   * to its log; resolves once it runs. Only checkpoints without network: an enrolled one continues with
   * `lattice sandbox restore DIR`. Errors: UsageError (an enrolled checkpoint; nothing started),
   * ESANDBOX_RUNNING (a running sandbox has the name), whatever runsc's restore throws (after teardown).
   */
  async restore(ck: Checkpoint, o: { name?: string; stopTimeoutSeconds: number }): Promise<SandboxView> {
    const name = o.name ?? ck.meta.name;
    this.requireFreeName(name);
    if (ck.meta.network !== 'none') {
      throw new UsageError(`${ck.dir} is a checkpoint of enrolled agent ${ck.meta.agent}; the daemon restores checkpoints without network only, continue it with: lattice sandbox restore ${ck.dir}`);
    }
    const { id } = await this.launch({
      proc: { rootfs: ck.spec.root.path, args: ck.spec.process.args, restore: { imagePath: ck.imagePath, spec: ck.spec } },
      name,
      stopGraceMs: Math.round(o.stopTimeoutSeconds * 1000),
      // runsc's restore wants each stdio fd of the kind it had at checkpoint where that was a socket; a socket
      // (Node's pipes are socketpairs) also stands in for /dev/null, a file or a pipe. stdin is at its end at once.
      stdio: { stdin: 'pipe', stdout: 'pipe' },
      input: Readable.from([]),
    });
    return this.get(id);
  }

  /** Errors: ESANDBOX_RUNNING when a running sandbox of the daemon is named `name`. */
  private requireFreeName(name: string | undefined): void {
    if (name !== undefined && [...this.live.values()].some((l) => l.name === name)) {
      throw new LatticeError('ESANDBOX_RUNNING', `a sandbox named ${name} is running; stop it or choose another --name`, { exitCode: 2 });
    }
  }

  /**
   * Make, resize or (size 0) remove a warm pool (pool.ts; `--pool`, PUT /v1/pool); filled in the background.
   * A pool that will hold sandboxes is checked first: its source resolves (an image is unpacked now, once)
   * to a root filesystem with /bin/sh, and its policy file parses (read again at each set: members started
   * later use the new one). With `store` (a run-time set, not a `--pool` flag) the set is recorded in the
   * pool store as it takes effect. Resolves once the parked sandboxes beyond its size have ended and the
   * store is written. Errors: UsageError (a bad spec, source, limit or policy; nothing changed), EDAEMON_POOL
   * (no /bin/sh), EDAEMON_POOL_STORE (set, but not saved).
   */
  async setPool(spec: PoolSpec, o: { store?: boolean } = {}): Promise<PoolState> {
    poolId(spec);
    if (spec.size > 0) {
      await this.prepareWarm(spec);
      if (spec.policy !== undefined) {
        const { loadHostEgressNetwork } = await import('../sandbox/egress-network.js');
        this.hosts.set(spec.policy, await loadHostEgressNetwork({ policy: spec.policy, dnsUpstream: [], stateDir: this.deps.stateDir }));
      }
    }
    const set = this.pool.set(spec);
    const stored = o.store ? this.deps.poolStore?.record(spec) : undefined;
    const [state] = await Promise.all([set, stored]);
    return state;
  }

  /** GET /v1/pool. */
  poolState(): PoolState[] {
    return this.pool.state();
  }

  /** The process of a parked sandbox of `spec`: the source's /bin/sh (not the image's entrypoint), under the pool's limits. */
  private async prepareWarm(spec: PoolSpec): Promise<PreparedProcess> {
    const { prepareProcess } = await import('../sandbox/prepare.js');
    const { rootfs, image, imageArchive, ociLayout, memory, cpus, pidsLimit, tmpSize } = spec;
    const proc = await prepareProcess({ rootfs, image, imageArchive, ociLayout, memory, cpus, pidsLimit, tmpSize, cmd: [], entrypoint: '/bin/sh', env: [] }, this.deps.stateDir);
    if (!(await lstat(join(proc.rootfs, 'bin/sh')).catch(() => undefined))) {
      throw new LatticeError('EDAEMON_POOL', `the pool's root filesystem (${proc.rootfs}) has no /bin/sh, which a parked sandbox runs until a request takes it; use an image with a shell`, { exitCode: 2 });
    }
    return proc;
  }

  /** One parked sandbox of a pool: the rootfs's /bin/sh, reading the line claim() writes. */
  private async launchWarm(spec: PoolSpec): Promise<WarmMember> {
    const proc = await this.prepareWarm(spec);
    const host = spec.policy === undefined ? undefined : this.hosts.get(spec.policy);
    const input = new PassThrough();
    const net = host ? { network: host.network(this.deps.log), close: async () => undefined } : undefined;
    // The stop grace of a taken member is the request's (claim() arms it); the lifecycle's own SIGKILL never comes first.
    const cpu = proc.resources.cpu;
    const parkedProc = { ...proc, resources: { ...proc.resources, cpu: { ...cpu, shares: PARKED_CPU_SHARES } } };
    const { id, record, live } = await this.launch({ proc: parkedProc, net, stopGraceMs: 24 * 3600_000, input, warm: true });
    if (!record || !this.live.has(id)) {
      await this.registry.remove(id);
      throw new LatticeError('EDAEMON_POOL', `a warm-pool sandbox of ${proc.rootfs} ended before it was taken; check that ${proc.rootfs}/bin/sh exists and runs`);
    }
    const cgroup = cgroupPathOf(id);
    const cpuLog = (err: unknown) => this.deps.log.warn({ id, err: String(err) }, 'warm pool: cannot set the CPU time of a sandbox');
    await setCpu(cgroup, { quota: PARKED_CPU_QUOTA_US, period: PARKED_CPU_PERIOD_US, shares: PARKED_CPU_SHARES }).catch(cpuLog);
    const unpark = () => setCpu(cgroup, { ...cpu, shares: DEFAULT_CPU_SHARES }).catch(cpuLog);
    const drain = () => void unpark().finally(() => input.end());
    this.parked.set(id, { record, input, unpark, stop: live.stop });
    live.stop = drain;
    void live.exited.then(async () => {
      // Never taken: nothing of anyone's ran in it; the record goes with the sandbox.
      if (this.parked.delete(id)) await this.registry.remove(id);
    });
    return { id, key: memberKey(proc, spec.policy), rootfs: proc.rootfs, exited: live.exited, drain };
  }

  /** Hand a parked sandbox to a request: its record becomes the request's, its shell execs the command. */
  private async claim(id: string, req: CheckedCreateRequest, proc: PreparedProcess): Promise<SandboxView> {
    const p = this.parked.get(id)!;
    const live = this.live.get(id)!;
    this.parked.delete(id);
    const { record } = p;
    record.name = req.name ?? id;
    record.args = proc.args;
    delete record.warm;
    live.name = record.name;
    const graceMs = Math.round(req.stopTimeoutSeconds * 1000);
    live.stop = () => {
      p.stop();
      const t = setTimeout(() => void new Runsc({ root: record.runscRoot }).kill(id, 'SIGKILL', { all: true }).catch(() => undefined), graceMs);
      void live.exited.then(() => clearTimeout(t));
    };
    // The record is written while the command starts: a daemon killed before it is written leaves a record
    // marked warm, which a restart reaps with its sandbox; the request never got its reply.
    const saved = this.registry.save(record);
    await p.unpark();
    if (req.name !== undefined) await this.setHostname(record, hostnameOf(req.name));
    p.input.end(claimLine(proc));
    await saved;
    return this.get(id);
  }

  /**
   * A parked sandbox started with its id as hostname; a named request's command sees its name, as in a cold
   * run. gVisor has one UTS namespace per sandbox, so `hostname NAME` run beside the parked shell (runsc exec
   * with CAP_SYS_ADMIN, as root, only for this process) renames it before the command starts. A root filesystem
   * without a `hostname` program keeps the id (logged).
   */
  private async setHostname(record: SandboxRecord, name: string): Promise<void> {
    const r = await new Runsc({ root: record.runscRoot })
      .exec(record.id, ['/bin/sh', '-c', 'exec hostname "$1"', 'sh', name], { user: '0:0', caps: ['CAP_SYS_ADMIN'] })
      .catch((err: unknown) => ({ exitCode: 1, stderr: String(err) }));
    if (r.exitCode !== 0) this.deps.log.warn({ id: record.id, hostname: name, err: r.stderr.trim() }, 'warm pool: the hostname stays the sandbox id');
  }

  /**
   * Run one sandbox through the lifecycle in this process, output to its log; resolves once runsc reports
   * it running (a kill -9 of the daemon before that would leave a container no record knows).
   */
  private async launch(o: LaunchOptions): Promise<{ id: string; record?: SandboxRecord; live: Live }> {
    const { stateDir, log } = this.deps;
    const { runSandbox } = await import('../sandbox/run.js');
    const net = o.net;
    const id = newSandboxId();
    const dir = this.registry.dirOf(id);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const sink = new LogSink(join(dir, OUTPUT_LOG));
    let stop!: () => void;
    const stopWhen = new Promise<void>((resolve) => (stop = resolve));
    let started!: (r: SandboxRecord) => void;
    const startedP = new Promise<SandboxRecord>((resolve) => (started = resolve));
    const run = runSandbox({
      ...o.proc,
      id,
      stateDir,
      name: o.name,
      log,
      cleaners: this.deps.cleaners,
      keep: true,
      daemon: true,
      warm: o.warm,
      gc: false,
      signals: false,
      stopGraceMs: o.stopGraceMs,
      stdio: o.stdio ?? { stdin: o.input ? 'pipe' : 'ignore', stdout: 'pipe', merged: true },
      input: o.input,
      output: { stdout: sink, stderr: sink },
      network: net?.network,
      hostUds: net?.hostUds,
      stopWhen: net?.revoked ? Promise.race([stopWhen, net.revoked]) : stopWhen,
      onStarted: (r) => {
        net?.onStarted?.(r);
        started(r);
      },
      onExited: (r, code, cause) => net?.onExited?.(r, code, cause),
    });
    const exited = run.then(
      () => undefined,
      (err: unknown) => log.warn({ id, err: String(err) }, 'sandbox run failed'),
    );
    const closed = exited.then(async () => {
      live.ended = true;
      sink.finish();
      await net?.close();
      this.live.delete(id);
    });
    const live: Live = { id, name: o.name ?? id, stop, exited, closed, sink };
    this.live.set(id, live);
    const first = await Promise.race([startedP, run.then(() => undefined)]);
    if (!first) {
      await exited;
      // It ended before onStarted: the run threw (rethrown here) or the command exited at once.
      await run;
      return { id, live };
    }
    await untilRunning(new Runsc({ root: first.runscRoot }), id, exited);
    live.record = first;
    return { id, record: first, live };
  }

  /** Stop a running sandbox (SIGTERM, then SIGKILL after its stop timeout) and resolve after it exited. */
  async stop(ref: string): Promise<SandboxView> {
    const r = await this.find(ref);
    const l = this.live.get(r.id);
    if (l) {
      l.stop();
      await l.closed;
    }
    return this.get(r.id);
  }

  /** Resolve once the sandbox exited and its network is closed (at once if it has). */
  async wait(ref: string): Promise<SandboxView> {
    const r = await this.find(ref);
    await this.live.get(r.id)?.closed;
    return this.get(r.id);
  }

  /** Remove a finished sandbox: its engine resources, netns, bundle, record and log. */
  async remove(ref: string): Promise<void> {
    const r = await this.find(ref);
    // One that has ended is closing its network: removal waits for that rather than calling it running.
    const l = this.live.get(r.id);
    if (l?.ended) await l.closed;
    if (this.live.has(r.id) || (!r.kept && isLauncherAlive(r))) throw new SandboxStillRunningError(ref);
    const { removeSandboxResources } = await import('../sandbox/gc.js');
    await removeSandboxResources(r, this.deps.cleaners);
    await this.registry.remove(r.id);
  }

  /**
   * The sandbox's output so far, and with `follow` every later chunk until it exits. `onChunk` gets each
   * piece in order; resolves when done. Foreground sandboxes have no log (their output went to their terminal).
   */
  async logs(ref: string, follow: boolean, onChunk: (b: Buffer) => void, signal?: AbortSignal): Promise<void> {
    const r = await this.find(ref);
    const l = this.live.get(r.id);
    const path = join(this.registry.dirOf(r.id), OUTPUT_LOG);
    let past: Buffer;
    try {
      past = readFileSync(path);
    } catch {
      if (!r.daemon) throw new UsageError(`sandbox ${ref} was started in the foreground; its output went to that terminal (only daemon sandboxes keep a log)`);
      past = Buffer.alloc(0);
    }
    if (past.length) onChunk(past);
    if (!follow || !l) return;
    // Same tick as the read above: nothing written in between (LogSink writes synchronously in its own ticks).
    await new Promise<void>((resolve) => {
      const done = () => {
        l.sink.events.off('data', onChunk);
        l.sink.events.off('end', done);
        resolve();
      };
      l.sink.events.on('data', onChunk);
      l.sink.events.once('end', done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  /** Stop every running sandbox (daemon shutdown). */
  async stopAll(): Promise<void> {
    await this.pool.close();
    await Promise.all([...this.live.values()].map((l) => (l.stop(), l.exited)));
  }

  private async find(ref: string): Promise<SandboxRecord> {
    // A running sandbox is found in memory: reading every record from disk per request cost a loaded host
    // tens of milliseconds of a request's first output. Among records of one name, a running one wins anyway.
    const running = [...this.live.values()].filter((l) => l.record && !l.ended && (l.id === ref || l.name === ref));
    const byIdLive = running.find((l) => l.id === ref);
    if (byIdLive) return byIdLive.record!;
    if (running.length === 1) return running[0]!.record!;
    const all = await this.registry.list();
    const byId = all.filter((r) => r.id === ref);
    const hits = byId.length ? byId : all.filter((r) => r.name === ref);
    if (hits.length === 0) throw new SandboxNotFoundError(ref);
    if (hits.length > 1) {
      const running = hits.filter((r) => this.live.has(r.id));
      if (running.length === 1) return running[0]!;
      throw new UsageError(`${hits.length} sandboxes are named ${ref}; name one by id: ${hits.map((r) => r.id).join(' ')}`);
    }
    return hits[0]!;
  }

  private view(r: SandboxRecord): SandboxView {
    const runs = this.live.has(r.id) && !this.live.get(r.id)!.ended;
    const running = runs || (!r.kept && !r.daemon && isLauncherAlive(r));
    return {
      id: r.id,
      name: r.name,
      status: this.parked.has(r.id) ? 'warm' : runs ? 'running' : statusOf(r),
      running,
      exitCode: r.exitCode ?? null,
      address: r.address ?? null,
      created: r.createdAt,
      command: r.args.join(' '),
      daemon: Boolean(r.daemon),
    };
  }

  /** The network hook of a request, with what the enrolled mode adds (agent API, audit of start/exit, revocation). */
  private async network(req: CheckedCreateRequest): Promise<SandboxNet | undefined> {
    const { stateDir, log } = this.deps;
    const n = req.network;
    if (n.mode === 'none') return undefined;
    if (n.mode === 'host') {
      const { loadHostEgressNetwork } = await import('../sandbox/egress-network.js');
      const host = await loadHostEgressNetwork({ policy: n.policy, dnsUpstream: n.dnsUpstream ?? [], stateDir });
      return { network: host.network(log), close: async () => undefined };
    }
    if (req.name === undefined) throw new UsageError('an enrolled sandbox needs a name: its identity is stored under it (--name NAME)');
    const { enrollAndPrepare } = await import('../sandbox/enrolled.js');
    const enrolled = await enrollAndPrepare({
      stateDir,
      name: req.name,
      controlPlaneUrl: n.controlPlane,
      token: n.token,
      advertiseHost: n.advertise ?? '127.0.0.1',
      listenPort: n.listenPort,
      hostEgress: n.egress === 'host',
      ...(n.exitNode !== undefined ? { exitNode: n.exitNode } : {}),
      log,
    });
    return {
      network: enrolled.network,
      hostUds: true,
      revoked: enrolled.revoked,
      onStarted: (r: SandboxRecord) => enrolled.record({ type: 'sandbox.started', sandboxId: r.id }),
      onExited: (r: SandboxRecord, code: number, cause?: string) =>
        enrolled.record({ type: 'sandbox.exited', sandboxId: r.id, code, ...(cause ? { reason: cause as never } : {}) }),
      close: () => enrolled.close(),
    };
  }
}

/** Poll `runsc state` (every 20 ms) until the container runs or the run has ended. */
async function untilRunning(runsc: Runsc, id: string, ended: Promise<void>): Promise<void> {
  let done = false;
  void ended.then(() => (done = true));
  while (!done) {
    const state = await runsc.state(id).catch(() => undefined);
    if (state?.status === 'running') return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
