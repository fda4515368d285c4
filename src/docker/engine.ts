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
import { collectOrphans } from '../sandbox/gc.js';
import { SandboxRegistry, ownedByThisLauncher, processStartTicks, type SandboxRecord } from '../sandbox/registry.js';
import { newSandboxId, type SandboxNetwork } from '../sandbox/run.js';
import { stopOnSignals, DEFAULT_STOP_GRACE_MS } from '../sandbox/signals.js';
import { Runsc } from '../runsc/client.js';
import { statePaths } from '../state.js';
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

export interface RunInDockerOptions {
  stateDir: string;
  name?: string;
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
  keep?: boolean;
  /** Builds the sandbox network once the id and directory are known; default: no network at all. */
  network?: (id: string, dir: string) => Promise<SandboxNetwork>;
  mounts?: OciMount[];
  log: Logger;
  /** Called once the container runs. */
  onStarted?: (info: DockerSandboxInfo) => void;
  /** Grace period between the forwarded signal and SIGKILL. */
  stopGraceMs?: number;
  /** Size of the writable /tmp (the root filesystem is read-only). */
  tmpfsSize?: string;
  /** Default: process streams; stdin is attached only when it is not a terminal. null: no stdin. */
  stdio?: { stdin?: Readable | null; stdout?: Writable; stderr?: Writable };
  /** Default: the local engine at /var/run/docker.sock. */
  docker?: Docker;
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

/** Docker accepts [a-zA-Z0-9][a-zA-Z0-9_.-] hostnames up to 63 characters, like runSandbox's. */
export function hostnameOf(name: string): string {
  return name.replace(/[^A-Za-z0-9-]/g, '-').slice(0, 63).replace(/^-+|-+$/g, '') || 'sandbox';
}

export interface CreateInput {
  id: string;
  name: string;
  image: string;
  cmd?: string[];
  entrypoint?: string | string[];
  env?: string[];
  cwd?: string;
  user?: string | { uid: number; gid: number };
  capabilities?: string[];
  mounts?: OciMount[];
  /** Attach the caller's stdin (OpenStdin + StdinOnce). */
  stdin: boolean;
  tmpfsSize?: string;
  launcher: { pid: number; startTicks: number };
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
 * Run the image's process (with the overrides) as a Docker container under lattice-runsc and return
 * its exit code. stdio passes through; SIGINT/SIGTERM stop the container; the container, its network
 * and its record are removed afterwards unless keep is set (then only the network goes).
 */
export async function runInDocker(opts: RunInDockerOptions): Promise<number> {
  const { log } = opts;
  const docker = opts.docker ?? new Docker();
  await connect(docker);
  await ensureDockerRuntime(docker);

  const reaped = await reapDockerOrphans(undefined, { docker });
  const registry = new SandboxRegistry(opts.stateDir);
  const paths = statePaths(opts.stateDir);
  const gc = await collectOrphans(registry, (r) => new Runsc({ root: r.runscRoot }));
  if (reaped.length || gc.removed.length) log.info({ removed: [...new Set([...reaped, ...gc.removed])] }, 'removed orphaned sandboxes');

  const id = newSandboxId();
  const dir = registry.dirOf(id);
  const name = opts.name ?? id;
  // The shared registry keeps gc and `sandbox ls` aware of this sandbox (its netns and directory).
  const record: SandboxRecord = {
    id,
    name,
    engine: 'docker',
    ...ownedByThisLauncher(),
    runscRoot: paths.runscRoot,
    bundleDir: dir,
    rootfs: `docker-image:${opts.image}`,
    args: opts.cmd ?? [],
    image: opts.image,
  };
  await registry.save(record);

  const stdin = opts.stdio?.stdin === undefined ? (process.stdin.isTTY ? null : process.stdin) : opts.stdio.stdin;
  const stdout = opts.stdio?.stdout ?? process.stdout;
  const stderr = opts.stdio?.stderr ?? process.stderr;

  let network: SandboxNetwork | undefined;
  let container: Docker.Container | undefined;
  let mapFile: string | undefined;
  try {
    network = opts.network ? await opts.network(id, dir) : undefined;
    if (network) {
      record.netns = network.netnsName;
      record.address = network.address;
      await registry.save(record);
    }
    const create = buildCreateOptions({
      id,
      name,
      image: opts.image,
      cmd: opts.cmd,
      entrypoint: opts.entrypoint,
      env: opts.env,
      cwd: opts.cwd,
      user: opts.user,
      capabilities: opts.capabilities,
      mounts: [...(network?.mounts ?? []), ...(opts.mounts ?? [])],
      stdin: stdin !== null,
      tmpfsSize: opts.tmpfsSize,
      launcher: { pid: record.launcherPid, startTicks: record.launcherStartTicks },
    });
    try {
      container = await docker.createContainer(create);
    } catch (err) {
      throw createError(err, opts.image);
    }
    record.containerId = container.id;
    await registry.save(record);
    if (network?.netnsPath) {
      mapFile = netnsMapFile(container.id);
      await writeFileAtomic(mapFile, network.netnsPath, 0o644);
    }

    const stream = await container.attach({ stream: true, stdin: stdin !== null, stdout: true, stderr: true, hijack: true });
    const ended = new Promise<void>((resolve) => {
      stream.on('end', resolve);
      stream.on('close', resolve);
      stream.on('error', resolve);
    });
    docker.modem.demuxStream(stream, stdout, stderr);
    if (stdin) stdin.pipe(stream);

    try {
      await container.start();
    } catch (err) {
      throw new DockerEngineError(`container ${containerName(id)} did not start: ${dockerMessage(err)}`, { cause: err });
    }
    const live = container;
    const stopper = stopOnSignals((sig) => live.kill({ signal: sig }), id, opts.stopGraceMs ?? DEFAULT_STOP_GRACE_MS, log);
    opts.onStarted?.({ id, name, containerId: container.id, containerName: containerName(id), netns: network?.netnsName, address: network?.address });
    let status: { StatusCode: number };
    try {
      status = (await container.wait()) as { StatusCode: number };
    } finally {
      stopper.dispose();
      if (stdin) {
        stdin.unpipe(stream);
        if (stdin === process.stdin) process.stdin.pause();
      }
    }
    // The attach stream may still carry the last output: drain it, but never hang on it.
    await Promise.race([ended, new Promise((r) => setTimeout(r, 2000).unref())]);
    // The container's own status wins, also after a stop signal (a process that traps SIGTERM and exits 7).
    return status.StatusCode;
  } finally {
    if (container && !opts.keep) await container.remove({ force: true }).catch((err: unknown) => log.warn({ id, err: dockerMessage(err) }, 'container removal failed'));
    if (mapFile) await rm(mapFile, { force: true });
    await network?.close().catch((err: unknown) => log.warn({ err }, 'network teardown failed'));
    if (opts.keep) await registry.save({ ...record, kept: true });
    else await registry.remove(id);
  }
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

