/**
 * The Docker engine: the agent runs as a Docker container under the lattice-runsc runtime, with the
 * same sandbox network as the direct runsc engine.
 *
 *   launcher                               dockerd -> containerd shim -> lattice-runsc create --bundle B ID
 *   1. network hook: netns lattice-<id>,   3. the wrapper reads /run/lattice/docker-netns/ID and points
 *      TUN, WireGuard, policy pump            B/config.json's network namespace at our netns
 *   2. create container (NetworkMode none),   (instead of the empty one Docker made for --network none)
 *      write the ID -> netns mapping       4. runsc mirrors the TUN into gVisor's netstack
 *   5. attach stdio, start, wait; remove the container and the mapping afterwards
 */
import { rm, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import Docker from 'dockerode';
import type { Logger } from 'pino';
import { LatticeError, PrerequisiteError, UsageError, errorMessage } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import type { OciMount } from '../oci/spec.js';
import { COMPAT_WRAPPER } from '../runsc/compat.js';
import type { RecordCleaner } from '../sandbox/gc.js';
import { hostnameOf, runLifecycle, type LifecycleOptions, type RunningSandbox, type SandboxEngine, type SandboxNetwork } from '../sandbox/lifecycle.js';
import { type SandboxRecord } from '../sandbox/registry.js';
import { processStartTicks } from '../proc.js';
import { settleWithin } from '../clock.js';
import { removeRunscRecord } from '../sandbox/run.js';
import { DOCKER_RUNTIME_ARGS, DOCKER_RUNTIME_NAME, installDockerRuntime, sameRuntime, type RuntimeEntry } from './runtime.js';

/** Where the wrapper (runsc/lattice-runsc, join_lattice_netns) looks for a container's netns. */
export const DOCKER_NETNS_DIR = '/run/lattice/docker-netns';

export const DockerLabel = {
  id: 'dev.lattice.sandbox.id',
  name: 'dev.lattice.sandbox.name',
  managed: 'dev.lattice.managed',
  /** The launcher's pid and start time (clock ticks since boot): an orphan's launcher is gone. */
  launcherPid: 'dev.lattice.launcher.pid',
  launcherStart: 'dev.lattice.launcher.start-ticks',
} as const;

export class DockerEngineError extends LatticeError {
  override readonly name = 'DockerEngineError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('EDOCKER', message, options);
  }
}

/** The image and process of a Docker sandbox: shared by the run options and the container's create request. */
export interface DockerProcess {
  /** An image in the local Docker engine (docker load / import / build it first). */
  image: string;
  /** Replaces the image's Cmd (the image's Entrypoint stays unless `entrypoint` is given). */
  cmd?: string[];
  /** Replaces the image's Entrypoint; '' or [] clears it. */
  entrypoint?: string | string[];
  /** KEY=VALUE on top of the image's Env. */
  env?: string[];
  cwd?: string;
  /** "uid[:gid]", "name[:group]" (looked up in the image by Docker), or numbers. */
  user?: string | { uid: number; gid: number };
  /** Capabilities to grant (everything else is dropped): CAP_NET_RAW or NET_RAW. */
  capabilities?: string[];
  /** Size of the writable /tmp (the root filesystem is read-only), Docker's size syntax (default 64m). */
  tmpfsSize?: string;
}

/** What DockerEngine takes besides the process: where stdio goes and which engine. */
export interface DockerEngineOptions extends DockerProcess {
  /** Default: process streams; stdin is attached only when it is not a terminal. null: no stdin. */
  stdio?: { stdin?: Readable | null; stdout?: Writable; stderr?: Writable };
  /** Default: the local engine at /var/run/docker.sock. */
  docker?: Docker;
}

export interface RunInDockerOptions extends Omit<LifecycleOptions, 'onStarted'>, DockerEngineOptions {
  /** Called once the container runs. */
  onStarted?: (info: DockerSandboxInfo) => void;
}

export interface DockerSandboxInfo {
  id: string;
  name: string;
  containerId: string;
  containerName: string;
  netns?: string;
  address?: string;
}

/** Docker's name for a sandbox's container. */
export function containerName(sandboxId: string): string {
  return `lattice-${sandboxId}`;
}

export function netnsMapFile(containerId: string, dir = DOCKER_NETNS_DIR): string {
  if (!/^[0-9a-f]{12,64}$/.test(containerId)) throw new DockerEngineError(`unexpected container id "${containerId}"`);
  return join(dir, containerId);
}

/** OCI bind mounts as Docker Binds ("src:dst[:ro]"); other mount kinds have no place in this engine. */
export function bindsFromMounts(mounts: readonly OciMount[]): string[] {
  return mounts.map((m) => {
    const opts = m.options ?? [];
    const isBind = m.type === 'bind' || opts.includes('bind') || opts.includes('rbind');
    if (!isBind || !m.source) throw new UsageError(`mount at ${m.destination} is not a bind mount; the docker engine takes bind mounts only`);
    if (m.source.includes(':') || m.destination.includes(':')) throw new UsageError(`mount ${m.source} -> ${m.destination}: Docker cannot bind a path containing ':'`);
    return `${m.source}:${m.destination}${opts.includes('ro') ? ':ro' : ''}`;
  });
}

export function dockerCapability(cap: string): string {
  const c = cap.trim().toUpperCase();
  if (!/^(CAP_)?[A-Z_]+$/.test(c)) throw new UsageError(`capability "${cap}" is not a name like CAP_NET_RAW`);
  return c.startsWith('CAP_') ? c : `CAP_${c}`;
}

/** The container's create request in lattice's terms: the process, plus what the lifecycle decided. */
export interface CreateInput extends DockerProcess {
  id: string;
  name: string;
  mounts?: OciMount[];
  /** Attach the caller's stdin (OpenStdin + StdinOnce). */
  stdin: boolean;
  launcher: { pid: number; startTicks: number };
  /** Docker runtime name (default lattice-runsc). */
  runtime?: string;
}

/** The container's create request. Pure: the run options in, dockerode's options out. */
export function buildCreateOptions(i: CreateInput): Docker.ContainerCreateOptions {
  const entrypoint = i.entrypoint === undefined ? undefined : typeof i.entrypoint === 'string' ? (i.entrypoint === '' ? [''] : [i.entrypoint]) : i.entrypoint.length ? i.entrypoint : [''];
  const user = i.user === undefined ? undefined : typeof i.user === 'string' ? i.user : `${i.user.uid}:${i.user.gid}`;
  return {
    name: containerName(i.id),
    Image: i.image,
    Hostname: hostnameOf(i.name),
    ...(i.cmd && i.cmd.length ? { Cmd: i.cmd } : {}),
    ...(entrypoint ? { Entrypoint: entrypoint } : {}),
    ...(i.env && i.env.length ? { Env: i.env } : {}),
    ...(i.cwd ? { WorkingDir: i.cwd } : {}),
    ...(user ? { User: user } : {}),
    Tty: false,
    AttachStdin: i.stdin,
    AttachStdout: true,
    AttachStderr: true,
    OpenStdin: i.stdin,
    StdinOnce: i.stdin,
    NetworkDisabled: false,
    Labels: {
      [DockerLabel.id]: i.id,
      [DockerLabel.name]: i.name,
      [DockerLabel.managed]: 'true',
      [DockerLabel.launcherPid]: String(i.launcher.pid),
      [DockerLabel.launcherStart]: String(i.launcher.startTicks),
    },
    HostConfig: {
      Runtime: i.runtime ?? DOCKER_RUNTIME_NAME,
      // Docker gets an empty netns it never touches again; the wrapper swaps in ours at create.
      NetworkMode: 'none',
      ReadonlyRootfs: true,
      Tmpfs: { '/tmp': `rw,nosuid,nodev,size=${i.tmpfsSize ?? '64m'}` },
      CapDrop: ['ALL'],
      ...(i.capabilities && i.capabilities.length ? { CapAdd: i.capabilities.map(dockerCapability) } : {}),
      SecurityOpt: ['no-new-privileges'],
      Binds: bindsFromMounts(i.mounts ?? []),
      RestartPolicy: { Name: 'no' },
      AutoRemove: false,
    },
  };
}

async function connect(docker: Docker): Promise<void> {
  try {
    await docker.ping();
  } catch (err) {
    throw new PrerequisiteError(`dockerd is not reachable (${errorMessage(err)}); start it (systemctl start docker, or run dockerd) and retry`, { cause: err });
  }
}

/**
 * Make sure dockerd knows the lattice-runsc runtime at this checkout's wrapper: register it in
 * daemon.json if needed and wait for dockerd's reload (SIGHUP is asynchronous).
 */
export async function ensureDockerRuntime(
  docker: Docker,
  opts: { name?: string; wrapper?: string; runtimeArgs?: readonly string[]; timeoutMs?: number } = {},
): Promise<void> {
  const name = opts.name ?? DOCKER_RUNTIME_NAME;
  const wrapper = opts.wrapper ?? COMPAT_WRAPPER;
  const runtimeArgs = opts.runtimeArgs ?? DOCKER_RUNTIME_ARGS;
  const known = async () => {
    const info = (await docker.info()) as { Runtimes?: Record<string, RuntimeEntry> };
    return sameRuntime(info.Runtimes?.[name], wrapper, runtimeArgs);
  };
  if (await known()) return;
  const r = await installDockerRuntime({ name, wrapper, runtimeArgs });
  const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
  while (Date.now() < deadline) {
    if (await known()) return;
    await new Promise((res) => setTimeout(res, 100));
  }
  throw new PrerequisiteError(
    r.reloaded
      ? `dockerd did not pick up runtime ${name} after reloading; restart dockerd and retry`
      : `dockerd does not know runtime ${name} and is not a local process lattice can reload; run lattice runsc install --docker on the docker host and restart dockerd`,
  );
}

/** Labels-based liveness: the launcher pid still runs and started at the recorded time. */
export function launcherAliveFromLabels(labels: Record<string, string>): boolean {
  const pid = Number(labels[DockerLabel.launcherPid]);
  const start = Number(labels[DockerLabel.launcherStart]);
  if (!Number.isInteger(pid) || pid <= 0) return false;
  return processStartTicks(pid) === start;
}

/**
 * Remove lattice-managed containers whose launcher is gone, with their netns mapping files, and
 * mapping files whose container no longer exists. Returns the sandbox ids removed.
 */
export async function reapDockerOrphans(
  isAlive: (sandboxId: string, labels: Record<string, string>) => boolean | Promise<boolean> = (_id, labels) => launcherAliveFromLabels(labels),
  opts: { docker?: Docker; mapDir?: string } = {},
): Promise<string[]> {
  const docker = opts.docker ?? new Docker();
  const mapDir = opts.mapDir ?? DOCKER_NETNS_DIR;
  const containers = await docker.listContainers({ all: true, filters: { label: [`${DockerLabel.managed}=true`] } });
  const removed: string[] = [];
  for (const c of containers) {
    const labels = c.Labels ?? {};
    const sandboxId = labels[DockerLabel.id];
    if (!sandboxId || (await isAlive(sandboxId, labels))) continue;
    await docker.getContainer(c.Id).remove({ force: true }).catch((err: { statusCode?: number }) => {
      if (err.statusCode !== 404) throw err;
    });
    await rm(netnsMapFile(c.Id, mapDir), { force: true });
    removed.push(sandboxId);
  }
  const files = await readdir(mapDir).catch(() => [] as string[]);
  for (const f of files) {
    if (!/^[0-9a-f]{64}$/.test(f)) continue;
    const exists = await docker.getContainer(f).inspect().then(() => true, (err: { statusCode?: number }) => err.statusCode !== 404);
    if (!exists) await rm(join(mapDir, f), { force: true });
  }
  return removed;
}

/**
 * gc's cleaner for Docker records: the record's own container (by id, else by name) and its netns
 * mapping file. Other containers, orphaned or not, are left alone: `lattice gc --docker` reaps those.
 */
export function dockerRecordCleaner(opts: { docker?: Docker; mapDir?: string } = {}): RecordCleaner {
  return async (r) => {
    const docker = opts.docker ?? new Docker();
    const ref = r.containerId ?? containerName(r.id);
    const id = await docker
      .getContainer(ref)
      .inspect()
      .then((c) => c.Id, (err: { statusCode?: number }) => {
        if (err.statusCode === 404) return undefined;
        throw err;
      });
    if (!id) return;
    await docker.getContainer(id).remove({ force: true }).catch((err: { statusCode?: number }) => {
      if (err.statusCode !== 404) throw err;
    });
    await rm(netnsMapFile(id, opts.mapDir), { force: true });
  };
}

/**
 * The Docker engine: the container is created (NetworkMode none, our netns swapped in by the
 * lattice-runsc wrapper through the mapping file), attached, started and waited for; removed at
 * teardown unless kept. Prerequisites: dockerd reachable, the lattice-runsc runtime registered.
 */
export class DockerEngine implements SandboxEngine {
  readonly kind = 'docker' as const;
  private readonly docker: Docker;
  private readonly stdin: Readable | null;
  private readonly stdout: Writable;
  private readonly stderr: Writable;
  private container: Docker.Container | undefined;
  private mapFile: string | undefined;

  constructor(
    private readonly p: DockerEngineOptions,
    private readonly log: Logger,
  ) {
    this.docker = p.docker ?? new Docker();
    this.stdin = p.stdio?.stdin === undefined ? (process.stdin.isTTY ? null : process.stdin) : p.stdio.stdin;
    this.stdout = p.stdio?.stdout ?? process.stdout;
    this.stderr = p.stdio?.stderr ?? process.stderr;
  }

  async prepare(): Promise<void> {
    await connect(this.docker);
    await ensureDockerRuntime(this.docker);
  }

  describe(_id: string, dir: string) {
    return { bundleDir: dir, rootfs: `docker-image:${this.p.image}`, args: this.p.cmd ?? [], image: this.p.image };
  }

  async create(record: SandboxRecord, network: SandboxNetwork | undefined, mounts: OciMount[]): Promise<void> {
    const { stdio: _stdio, docker: _docker, ...proc } = this.p;
    const create = buildCreateOptions({
      ...proc,
      id: record.id,
      name: record.name,
      mounts,
      stdin: this.stdin !== null,
      launcher: { pid: record.launcherPid, startTicks: record.launcherStartTicks },
    });
    try {
      this.container = await this.docker.createContainer(create);
    } catch (err) {
      throw createError(err, this.p.image);
    }
    record.containerId = this.container.id;
    if (network?.netnsPath) {
      this.mapFile = netnsMapFile(this.container.id);
      await writeFileAtomic(this.mapFile, network.netnsPath, 0o644);
    }
  }

  async start(record: SandboxRecord): Promise<RunningSandbox> {
    const container = this.container!;
    const { stdin } = this;
    const stream = await container.attach({ stream: true, stdin: stdin !== null, stdout: true, stderr: true, hijack: true });
    const ended = new Promise<void>((resolve) => {
      stream.on('end', resolve);
      stream.on('close', resolve);
      stream.on('error', resolve);
    });
    this.docker.modem.demuxStream(stream, this.stdout, this.stderr);
    if (stdin) stdin.pipe(stream);
    try {
      await container.start();
    } catch (err) {
      throw new DockerEngineError(`container ${containerName(record.id)} did not start: ${dockerMessage(err)}`, { cause: err });
    }
    return {
      kill: (sig) => container.kill({ signal: sig }),
      wait: async () => {
        let status: { StatusCode: number };
        try {
          status = (await container.wait()) as { StatusCode: number };
        } finally {
          if (stdin) {
            stdin.unpipe(stream);
            if (stdin === process.stdin) process.stdin.pause();
          }
        }
        // The attach stream may still carry the last output: drain it, but never hang on it.
        await settleWithin(ended, 2000);
        // The container's own status wins, also after a stop signal (a process that traps SIGTERM and exits 7).
        return { code: status.StatusCode };
      },
    };
  }

  async teardown(record: SandboxRecord, opts: { keep: boolean }): Promise<void> {
    if (this.container && !opts.keep) await this.container.remove({ force: true }).catch((err: unknown) => this.log.warn({ id: record.id, err: dockerMessage(err) }, 'container removal failed'));
    if (this.mapFile) await rm(this.mapFile, { force: true });
  }
}

/**
 * Run the image's process (with the overrides) as a Docker container under lattice-runsc and return
 * its exit code, through the one sandbox lifecycle. stdio passes through; SIGINT/SIGTERM stop the
 * container; the container, its network and its record are removed afterwards unless keep is set
 * (then only the network goes).
 */
export function runInDocker(opts: RunInDockerOptions): Promise<number> {
  const { onStarted, ...rest } = opts;
  const docker = opts.docker ?? new Docker();
  return runLifecycle(new DockerEngine({ ...opts, docker }, opts.log), {
    cleaners: { runsc: async () => removeRunscRecord, docker: async () => dockerRecordCleaner({ docker }) },
    ...rest,
    onStarted: onStarted
      ? (r) => onStarted({ id: r.id, name: r.name, containerId: r.containerId!, containerName: containerName(r.id), netns: r.netns, address: r.address })
      : undefined,
  });
}

function dockerMessage(err: unknown): string {
  const e = err as { json?: { message?: string }; reason?: string };
  return (e.json?.message ?? errorMessage(err)).trim().split('\n')[0]!;
}

function createError(err: unknown, image: string): LatticeError {
  const code = (err as { statusCode?: number }).statusCode;
  if (code === 404) return new UsageError(`image ${image} is not in the local Docker engine; docker load, import or build it first`, { cause: err });
  return new DockerEngineError(`cannot create the container: ${dockerMessage(err)}`, { cause: err });
}

