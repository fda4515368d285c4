import { execa, type ResultPromise, type Options } from 'execa';
import { mkdir } from 'node:fs/promises';
import { RunscError, RunscNotFoundError, ContainerNotFoundError, runscMessage } from './errors.js';
import { COMPAT_WRAPPER, NETNS_BUG_MESSAGE, needsNetnsWorkaround, parseRunscVersion, type RunscVersion } from './compat.js';

export type RunscNetwork = 'none' | 'sandbox' | 'host';

export interface RunscOptions {
  /** runsc --root: where runsc keeps container state. */
  root: string;
  network?: RunscNetwork;
  binary?: string;
  /** When set, runsc writes debug logs here (--debug --debug-log=DIR/). */
  debugLogDir?: string;
  /** Let sandboxed processes connect to host Unix sockets bind-mounted in (the agent API). */
  hostUds?: boolean;
  /** Let the sandbox open raw sockets (also needs CAP_NET_RAW in the spec). */
  netRaw?: boolean;
  /** Force (true/false) or auto-detect (undefined) the gVisor 10704 workaround. */
  netnsWorkaround?: boolean;
}

export interface ContainerState {
  id: string;
  pid: number;
  status: 'creating' | 'created' | 'running' | 'stopped' | 'paused' | string;
  bundle: string;
  annotations?: Record<string, string>;
}

export interface StdioOptions {
  stdin?: Options['stdin'];
  stdout?: Options['stdout'];
  stderr?: Options['stderr'];
  /** Keep piped output in memory for the result (execa's `buffer`; execAttached: default false). */
  buffer?: boolean;
}

/** A thin client over the runsc CLI. Each method is one runsc command; failures become RunscError. */
export class Runsc {
  private versionCache?: Promise<RunscVersion>;
  private workaround?: boolean;

  constructor(readonly opts: RunscOptions) {}

  get binary(): string {
    return this.opts.binary ?? 'runsc';
  }

  /** `runsc --version`, asked once per instance. Errors: RunscNotFoundError, RunscError. */
  version(): Promise<RunscVersion> {
    this.versionCache ??= askVersion(this.binary);
    return this.versionCache;
  }

  /** Whether commands go through runsc/lattice-runsc (decided once, by version and kernel). */
  async usesWorkaround(): Promise<boolean> {
    if (this.workaround === undefined) {
      this.workaround = this.opts.netnsWorkaround ?? ((this.opts.network ?? 'none') === 'sandbox' && needsNetnsWorkaround(await this.version()));
    }
    return this.workaround;
  }

  private globalArgs(): string[] {
    const a = ['--root', this.opts.root, `--network=${this.opts.network ?? 'none'}`];
    // Our TUN has no virtio-net header and no checksum offload: netstack must hand us complete,
    // checksummed, MTU-sized packets. With GSO on, it leaves TCP checksums partial.
    if (this.opts.network === 'sandbox') a.push('--gso=false', '--software-gso=false', '--tx-checksum-offload=false');
    if (this.opts.hostUds) a.push('--host-uds=open');
    if (this.opts.netRaw) a.push('--net-raw');
    if (this.opts.debugLogDir) a.push('--debug', `--debug-log=${this.opts.debugLogDir.replace(/\/?$/, '/')}`);
    return a;
  }

  /** The command line to spawn: runsc itself, or the compat wrapper with LATTICE_RUNSC pointing at it. */
  private async command(args: string[]): Promise<{ file: string; args: string[]; env: Record<string, string> }> {
    await mkdir(this.opts.root, { recursive: true, mode: 0o700 });
    const full = [...this.globalArgs(), ...args];
    if (await this.usesWorkaround()) return { file: COMPAT_WRAPPER, args: full, env: { LATTICE_RUNSC: this.binary } };
    return { file: this.binary, args: full, env: {} };
  }

  /**
   * One short runsc command. No `runsc --version` first: a daemon runs one per sandbox state poll, and that
   * second spawn was a third of its main thread while a pool refilled; a missing binary shows as ENOENT here.
   */
  private async invoke(name: string, args: string[], extra: Options = {}): Promise<string> {
    const attempt = async () => {
      const c = await this.command(args);
      return this.found(await execa(c.file, c.args, { env: c.env, reject: false, ...extra } as Options));
    };
    let r = await attempt();
    if (r.exitCode !== 0 && String(r.stderr).includes(NETNS_BUG_MESSAGE) && !this.workaround) {
      this.workaround = true; // the version guess was wrong; the failure itself tells us
      r = await attempt();
    }
    if (r.exitCode !== 0) {
      const msg = runscMessage(String(r.stderr ?? ''));
      if (/does not exist|not found/i.test(msg) && args.length > 0) {
        const id = args.at(-1)!;
        if (msg.includes(id)) throw new ContainerNotFoundError(id);
      }
      throw new RunscError(name, msg, this.opts.debugLogDir);
    }
    return String(r.stdout ?? '');
  }

  async create(id: string, bundle: string, opts: { pidFile?: string } = {}): Promise<void> {
    const a = ['create', '--bundle', bundle];
    if (opts.pidFile) a.push('--pid-file', opts.pidFile);
    await this.invoke('create', [...a, id]);
  }

  async start(id: string): Promise<void> {
    await this.invoke('start', ['start', id]);
  }

  /**
   * `runsc run` with stdio passed as given (default: inherit). The returned child resolves with runsc's
   * exit code, which is the container's. Failures of runsc itself are mapped by runExitError().
   */
  async run(id: string, bundle: string, stdio: StdioOptions = {}): Promise<{ child: ResultPromise }> {
    await this.version();
    // Wrapped: a ResultPromise is thenable, so returning it bare would make `await run()` wait for the exit.
    return this.spawnAttached(['run', '--bundle', bundle, id], stdio);
  }

  /** runsc `args` as a child with stdio as given (default: inherit); never rejects (exit status in the result). */
  private async spawnAttached(args: string[], stdio: StdioOptions, buffer = true): Promise<{ child: ResultPromise }> {
    const c = await this.command(args);
    const child = execa(c.file, c.args, {
      env: c.env,
      reject: false,
      buffer: stdio.buffer ?? buffer,
      stdin: stdio.stdin ?? 'inherit',
      stdout: stdio.stdout ?? 'inherit',
      stderr: stdio.stderr ?? 'inherit',
    });
    return { child };
  }

  async state(id: string): Promise<ContainerState> {
    return JSON.parse(await this.invoke('state', ['state', id])) as ContainerState;
  }

  async list(): Promise<ContainerState[]> {
    const out = await this.invoke('list', ['list', '--format=json']);
    const parsed = JSON.parse(out || '[]') as ContainerState[] | null;
    return parsed ?? [];
  }

  async kill(id: string, signal: NodeJS.Signals | number = 'SIGTERM', opts: { all?: boolean } = {}): Promise<void> {
    const sig = typeof signal === 'number' ? String(signal) : signal.replace(/^SIG/, '');
    await this.invoke('kill', ['kill', ...(opts.all ? ['--all'] : []), id, sig]);
  }

  /** Waits for the container's init to exit and returns its exit status. */
  async wait(id: string): Promise<number> {
    const out = await this.invoke('wait', ['wait', id]);
    const parsed = JSON.parse(out) as { exitStatus?: number; status?: number };
    const raw = parsed.exitStatus ?? parsed.status ?? 0;
    // runsc reports a wait status: high byte is the exit code, low 7 bits a terminating signal.
    return raw & 0x7f ? 128 + (raw & 0x7f) : (raw >> 8) & 0xff;
  }

  async delete(id: string, opts: { force?: boolean } = {}): Promise<void> {
    await this.invoke('delete', ['delete', ...(opts.force ? ['--force'] : []), id]);
  }

  async ps(id: string): Promise<Array<{ pid: number; cmd: string }>> {
    const out = await this.invoke('ps', ['ps', '--format=json', id]);
    const rows = (JSON.parse(out || '[]') ?? []) as Array<{ PID: number; Cmd: string }>;
    return rows.map((r) => ({ pid: r.PID, cmd: r.Cmd }));
  }

  /**
   * `runsc exec` of `args` in running container `id`, attached: stdio passed as given (default: inherit).
   * The returned child resolves with the process's exit status (128+N when a signal ended it). runsc gives
   * the process a pseudo-terminal when (and only when) its stdin is one. runsc does NOT forward signals it
   * receives to the process: use signalProcess() with the pid runsc writes to `internalPidFile`.
   */
  async execAttached(
    id: string,
    args: string[],
    o: { env?: string[]; cwd?: string; user?: { uid: number; gid: number }; internalPidFile?: string } = {},
    stdio: StdioOptions = {},
  ): Promise<{ child: ResultPromise }> {
    await this.version();
    const flags: string[] = [];
    for (const e of o.env ?? []) flags.push('--env', e);
    if (o.cwd) flags.push('--cwd', o.cwd);
    if (o.user) flags.push('--user', `${o.user.uid}:${o.user.gid}`);
    if (o.internalPidFile) flags.push('--internal-pid-file', o.internalPidFile);
    return this.spawnAttached(['exec', ...flags, id, ...args], stdio, false);
  }

  /** Send `signal` to one process of container `id`, by its pid inside the sandbox (`runsc kill --pid`). */
  async signalProcess(id: string, pid: number, signal: NodeJS.Signals): Promise<void> {
    await this.invoke('kill', ['kill', '--pid', String(pid), id, signal.replace(/^SIG/, '')]);
  }

  /** Freeze every process of container `id` (`runsc pause`); its state becomes "paused". */
  async pause(id: string): Promise<void> {
    await this.invoke('pause', ['pause', id]);
  }

  /** Thaw a paused container (`runsc resume`). */
  async resume(id: string): Promise<void> {
    await this.invoke('resume', ['resume', id]);
  }

  /**
   * Save container `id`'s whole state (memory, processes, netstack) into `imagePath` (`runsc checkpoint`).
   * The container stops once it is saved (runsc's default, without --leave-running): its `runsc run` exits 0.
   */
  async checkpoint(id: string, imagePath: string): Promise<void> {
    await this.invoke('checkpoint', ['checkpoint', '--image-path', imagePath, id]);
  }

  /**
   * `runsc restore` of the image at `imagePath` as container `id` from `bundle`, attached like run(): the
   * returned child resolves with the container's exit status. The bundle must hold the checkpointed spec's
   * mounts and process; stdio fds of the same kind as at checkpoint (a socket where there was one).
   */
  async restore(id: string, bundle: string, imagePath: string, stdio: StdioOptions = {}): Promise<{ child: ResultPromise }> {
    await this.version();
    return this.spawnAttached(['restore', '--image-path', imagePath, '--bundle', bundle, id], stdio);
  }

  /** Runs a process in a running container and returns its exit code and output. */
  async exec(id: string, args: string[], opts: { env?: string[]; cwd?: string; user?: string; caps?: string[] } = {}): Promise<{ exitCode: number; stdout: string; stderr: string }> {
    const flags: string[] = [];
    if (opts.user) flags.push('--user', opts.user);
    for (const c of opts.caps ?? []) flags.push('--cap', c);
    for (const e of opts.env ?? []) flags.push('--env', e);
    if (opts.cwd) flags.push('--cwd', opts.cwd);
    const c = await this.command(['exec', ...flags, id, ...args]);
    const r = this.found(await execa(c.file, c.args, { env: c.env, reject: false }));
    return { exitCode: r.exitCode ?? 1, stdout: String(r.stdout), stderr: String(r.stderr) };
  }

  /** A result of a spawn that failed because the binary is not there becomes RunscNotFoundError. */
  private found<R extends { code?: string }>(r: R): R {
    if (r.code === 'ENOENT') throw new RunscNotFoundError(this.binary);
    return r;
  }
}

async function askVersion(binary: string): Promise<RunscVersion> {
  try {
    return parseRunscVersion((await execa(binary, ['--version'])).stdout);
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') throw new RunscNotFoundError(binary);
    throw new RunscError('--version', runscMessage(String((err as { stderr?: string }).stderr ?? err)), undefined, { cause: err });
  }
}
