import { ImageFormatError } from './errors.js';

/** The runtime-relevant part of an OCI / Docker image config ("config" object of the config blob). */
export interface ImageConfig {
  readonly env: readonly string[];
  readonly entrypoint: readonly string[];
  readonly cmd: readonly string[];
  /** Absent means "/" (OCI image spec). */
  readonly workingDir?: string;
  /** "user", "uid", "user:group" or "uid:gid"; absent means root. */
  readonly user?: string;
  /** "80/tcp" style keys of ExposedPorts. */
  readonly exposedPorts: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
  readonly stopSignal?: string;
}

/** What a config blob says beyond the process: the uncompressed layer digests, in order. */
export interface ParsedImageConfig {
  readonly config: ImageConfig;
  readonly diffIds: readonly string[];
}

const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

export function isSha256Digest(s: unknown): s is string {
  return typeof s === 'string' && DIGEST_RE.test(s);
}

function strArray(v: unknown, field: string): string[] {
  if (v === undefined || v === null) return [];
  if (typeof v === 'string') return [v]; // some old docker configs hold a string; docker treats it as one arg
  if (Array.isArray(v) && v.every((x) => typeof x === 'string')) return v as string[];
  throw new ImageFormatError(`image config: ${field} must be an array of strings`);
}

function optStr(v: unknown, field: string): string | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw new ImageFormatError(`image config: ${field} must be a string`);
  return v;
}

/** Parse a config blob (OCI application/vnd.oci.image.config.v1+json or Docker's equivalent). */
export function parseImageConfig(raw: Uint8Array | string): ParsedImageConfig {
  let doc: unknown;
  try {
    doc = JSON.parse(typeof raw === 'string' ? raw : Buffer.from(raw).toString('utf8'));
  } catch (err) {
    throw new ImageFormatError('image config is not valid JSON', { cause: err });
  }
  if (typeof doc !== 'object' || doc === null) throw new ImageFormatError('image config is not an object');
  const d = doc as Record<string, unknown>;
  const c = (d.config ?? {}) as Record<string, unknown>;
  if (typeof c !== 'object' || c === null) throw new ImageFormatError('image config: config must be an object');
  const rootfs = d.rootfs as { type?: unknown; diff_ids?: unknown } | undefined;
  if (!rootfs || rootfs.type !== 'layers' || !Array.isArray(rootfs.diff_ids)) {
    throw new ImageFormatError('image config: rootfs.diff_ids missing');
  }
  const diffIds = rootfs.diff_ids as unknown[];
  if (!diffIds.every(isSha256Digest)) throw new ImageFormatError('image config: rootfs.diff_ids must be sha256 digests');
  const ports = c.ExposedPorts ?? {};
  if (typeof ports !== 'object' || ports === null) throw new ImageFormatError('image config: ExposedPorts must be an object');
  const labels = c.Labels ?? {};
  if (typeof labels !== 'object' || labels === null) throw new ImageFormatError('image config: Labels must be an object');
  const labelOut: Record<string, string> = {};
  for (const [k, v] of Object.entries(labels)) if (typeof v === 'string') labelOut[k] = v;
  return {
    diffIds: diffIds as string[],
    config: {
      env: strArray(c.Env, 'Env'),
      entrypoint: strArray(c.Entrypoint, 'Entrypoint'),
      cmd: strArray(c.Cmd, 'Cmd'),
      workingDir: optStr(c.WorkingDir, 'WorkingDir'),
      user: optStr(c.User, 'User'),
      exposedPorts: Object.keys(ports).sort(),
      labels: labelOut,
      stopSignal: optStr(c.StopSignal, 'StopSignal'),
    },
  };
}

/** Command-line overrides; each one present replaces the image's value (Docker semantics). */
export interface ProcessOverrides {
  /** Replaces the image entrypoint; also drops the image Cmd unless `cmd` is given (as docker run --entrypoint). */
  entrypoint?: readonly string[];
  /** Replaces the image Cmd (the trailing arguments of `run`). */
  cmd?: readonly string[];
  /** KEY=VALUE, merged over the image Env by key. */
  env?: readonly string[];
  cwd?: string;
  user?: string;
}

export interface ProcessSpec {
  args: string[];
  env: string[];
  cwd: string;
  user?: string;
}

const DEFAULT_PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The process the OCI spec builder should run: image config, then command-line overrides on top. */
export function processFromImage(config: ImageConfig | undefined, o: ProcessOverrides = {}): ProcessSpec {
  const entrypoint = o.entrypoint ?? config?.entrypoint ?? [];
  const cmd = o.cmd ?? (o.entrypoint ? [] : (config?.cmd ?? []));
  const env = new Map<string, string>();
  for (const kv of [...(config?.env ?? []), ...(o.env ?? [])]) {
    const i = kv.indexOf('=');
    env.set(i < 0 ? kv : kv.slice(0, i), kv);
  }
  if (!env.has('PATH')) env.set('PATH', DEFAULT_PATH);
  return {
    args: [...entrypoint, ...cmd],
    env: [...env.values()],
    cwd: o.cwd ?? config?.workingDir ?? '/',
    user: o.user ?? config?.user,
  };
}
