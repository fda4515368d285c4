/**
 * A typed subset of the OCI runtime spec (config.json) and a builder with least-privilege defaults:
 * read-only rootfs, writable tmpfs /tmp, no capabilities unless asked, no new privileges, masked /proc
 * paths, fresh namespaces (the network one joins the sandbox's netns when a path is given).
 */
import type { OciResources } from './resources.js';

export const OCI_VERSION = '1.0.2';

export interface OciUser {
  uid: number;
  gid: number;
  additionalGids?: number[];
}

export interface OciRlimit {
  type: string;
  hard: number;
  soft: number;
}

export interface OciMount {
  destination: string;
  type?: string;
  source?: string;
  options?: string[];
}

export interface OciCapabilities {
  bounding: string[];
  effective: string[];
  inheritable: string[];
  permitted: string[];
  ambient: string[];
}

export interface OciNamespace {
  type: 'pid' | 'network' | 'mount' | 'ipc' | 'uts' | 'user' | 'cgroup';
  path?: string;
}

export interface OciSpec {
  ociVersion: string;
  process: {
    terminal: boolean;
    user: OciUser;
    args: string[];
    env: string[];
    cwd: string;
    capabilities: OciCapabilities;
    rlimits: OciRlimit[];
    noNewPrivileges: boolean;
  };
  root: { path: string; readonly: boolean };
  hostname: string;
  mounts: OciMount[];
  annotations?: Record<string, string>;
  linux: {
    /** Host cgroup runsc creates for the sandbox and applies `resources` to. */
    cgroupsPath?: string;
    resources?: OciResources;
    namespaces: OciNamespace[];
    maskedPaths: string[];
    readonlyPaths: string[];
  };
}

export interface SpecInput {
  args: string[];
  env?: string[];
  cwd?: string;
  user?: OciUser;
  hostname?: string;
  /** Path of the rootfs; relative paths are relative to the bundle directory. */
  rootfs?: string;
  /** Default true: the agent cannot change its own image; /tmp is a writable tmpfs. */
  readonlyRootfs?: boolean;
  /** Linux capability names (CAP_NET_RAW...). Default: none. */
  capabilities?: string[];
  rlimits?: OciRlimit[];
  /** Join this network namespace (e.g. /var/run/netns/lattice-abc); absent = a fresh, empty one. */
  netnsPath?: string;
  /** Extra mounts (e.g. the agent API socket). */
  mounts?: OciMount[];
  annotations?: Record<string, string>;
  /** Size of the /tmp tmpfs in bytes (default 256 MiB). */
  tmpSizeBytes?: number;
  /** Memory, CPU and pids limits (./resources.ts); absent = none. Needs cgroupsPath. */
  resources?: OciResources;
  /** Host cgroup for the sandbox, e.g. /lattice/<id>. */
  cgroupsPath?: string;
}

const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export const DEFAULT_RLIMITS: readonly OciRlimit[] = [
  { type: 'RLIMIT_NOFILE', hard: 4096, soft: 4096 },
  { type: 'RLIMIT_NPROC', hard: 4096, soft: 4096 },
];

export function buildSpec(input: SpecInput): OciSpec {
  const caps = [...new Set((input.capabilities ?? []).map(normalizeCap))].sort();
  const env = input.env ?? [];
  const tmpSize = input.tmpSizeBytes ?? 256 * 1024 * 1024;
  return {
    ociVersion: OCI_VERSION,
    process: {
      terminal: false,
      user: input.user ?? { uid: 0, gid: 0 },
      args: input.args,
      env: env.some((e) => e.startsWith('PATH=')) ? env : [DEFAULT_PATH, ...env],
      cwd: input.cwd ?? '/',
      capabilities: { bounding: caps, effective: caps, inheritable: [], permitted: caps, ambient: [] },
      rlimits: input.rlimits ?? DEFAULT_RLIMITS.map((r) => ({ ...r })),
      noNewPrivileges: true,
    },
    root: { path: input.rootfs ?? 'rootfs', readonly: input.readonlyRootfs ?? true },
    hostname: input.hostname ?? 'sandbox',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc' },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620'] },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777', `size=${tmpSize}`] },
      ...(input.mounts ?? []),
    ],
    ...(input.annotations ? { annotations: input.annotations } : {}),
    linux: {
      ...(input.cgroupsPath ? { cgroupsPath: input.cgroupsPath } : {}),
      ...(input.resources ? { resources: input.resources } : {}),
      namespaces: [
        { type: 'pid' },
        { type: 'ipc' },
        { type: 'uts' },
        { type: 'mount' },
        input.netnsPath ? { type: 'network', path: input.netnsPath } : { type: 'network' },
      ],
      maskedPaths: [
        '/proc/acpi', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list',
        '/proc/timer_stats', '/proc/sched_debug', '/proc/scsi', '/sys/firmware',
      ],
      readonlyPaths: ['/proc/asound', '/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}

function normalizeCap(c: string): string {
  const up = c.trim().toUpperCase();
  return up.startsWith('CAP_') ? up : `CAP_${up}`;
}
