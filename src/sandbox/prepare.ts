import { UsageError } from '../errors.js';
import { processFromImage } from '../image/config.js';
import { readRootfsFile } from '../image/rootfs-file.js';
import { ociResources, parseResourceFlags, type OciResources } from '../oci/resources.js';
import { parseByteSize } from '../units.js';
import type { RootfsSource } from '../image/rootfs.js';
import { parseEnv, resolveRootfsArg } from './inputs.js';

/** Where the agent's filesystem comes from: exactly one of these flags. */
export interface RootfsFlags {
  rootfs?: string;
  image?: string;
  imageArchive?: string;
  ociLayout?: string;
  /** --image-limits: extraction limits, e.g. "bytes=100g,entries=5000000" (see parseImageLimits). */
  imageLimits?: string;
}

export interface ProcessFlags {
  cmd: string[];
  env: string[];
  cwd?: string;
  user?: string;
  entrypoint?: string;
  /** --memory, --cpus, --pids-limit (defaults in src/oci/resources.ts) and --tmp-size. */
  memory?: string;
  cpus?: string;
  pidsLimit?: string;
  tmpSize?: string;
}

export interface PreparedProcess {
  rootfs: string;
  imageDigest?: string;
  args: string[];
  env: string[];
  cwd: string;
  user?: { uid: number; gid: number };
  resources: OciResources;
  tmpSizeBytes?: number;
}

async function rootfsSource(f: RootfsFlags): Promise<RootfsSource> {
  const given = [f.rootfs && '--rootfs', f.image && '--image', f.imageArchive && '--image-archive', f.ociLayout && '--oci-layout'].filter(Boolean);
  if (given.length === 0) throw new UsageError('say what to run: --rootfs DIR|TAR, --image REF, --image-archive FILE or --oci-layout DIR (try: make demo-rootfs)');
  if (given.length > 1) throw new UsageError(`${given.join(' and ')} both name a root filesystem; give only one`);
  if (f.rootfs) {
    const r = await resolveRootfsArg(f.rootfs);
    return { kind: r.kind, ref: r.path };
  }
  if (f.image) return { kind: 'docker', ref: f.image };
  if (f.imageArchive) return { kind: 'docker-archive', ref: f.imageArchive };
  return { kind: 'oci-layout', ref: f.ociLayout! };
}

/**
 * Resolve the root filesystem (unpacking an image at most once, into the shared read-only cache)
 * and the process to run: the image's Entrypoint/Cmd/Env/WorkingDir/User with the flags on top.
 */
export async function prepareProcess(f: RootfsFlags & ProcessFlags, stateDir: string): Promise<PreparedProcess> {
  const env = parseEnv(f.env);
  const resources = ociResources(parseResourceFlags(f));
  const tmpSizeBytes = f.tmpSize === undefined ? undefined : parseByteSize(f.tmpSize, '--tmp-size');
  const limits = f.imageLimits === undefined ? undefined : (await import('../image/extract.js')).parseImageLimits(f.imageLimits);
  const source = await rootfsSource(f);
  // A directory is used as it is; only images and tarballs need the image module (and dockerode).
  const resolved =
    source.kind === 'dir'
      ? { rootfsDir: source.ref, config: undefined, digest: `dir:${source.ref}` }
      : await import('../image/index.js').then(({ resolveRootfs, createProgressReporter }) =>
          resolveRootfs(source, { stateDir, onProgress: createProgressReporter(), limits }),
        );
  const proc = processFromImage(resolved.config, {
    cmd: f.cmd.length > 0 ? f.cmd : undefined,
    entrypoint: f.entrypoint !== undefined ? [f.entrypoint] : undefined,
    env,
    cwd: f.cwd,
    user: f.user,
  });
  if (proc.args.length === 0) {
    throw new UsageError(
      resolved.config
        ? 'the image has no Entrypoint or Cmd; put the command after --, e.g. -- /bin/sh -c "..."'
        : 'no command to run; put it after --, e.g. lattice sandbox run --rootfs DIR -- uname -r',
    );
  }
  return {
    rootfs: resolved.rootfsDir,
    imageDigest: resolved.config ? resolved.digest : undefined,
    args: proc.args,
    env: proc.env,
    cwd: proc.cwd,
    user: proc.user === undefined ? undefined : await resolveUser(proc.user, resolved.rootfsDir),
    resources,
    tmpSizeBytes,
  };
}

/** Largest /etc/passwd or /etc/group read from a rootfs. */
const MAX_USERDB_BYTES = 4 << 20;

/**
 * "uid[:gid]" or "name[:group]", names looked up in the rootfs's /etc/passwd and /etc/group as a
 * chroot would see them (symlinks resolved inside the rootfs, regular files only, bounded size).
 */
export async function resolveUser(spec: string, rootfs: string): Promise<{ uid: number; gid: number }> {
  const [u = '', g] = spec.split(':');
  const why: string[] = [];
  const lookup = async (file: string, name: string, field: number) => {
    const r = await readRootfsFile(rootfs, `/etc/${file}`, MAX_USERDB_BYTES);
    if ('missing' in r) {
      why.push(r.missing);
      return undefined;
    }
    for (const line of r.text.split('\n')) {
      const cols = line.split(':');
      if (cols[0] === name && /^\d+$/.test(cols[field] ?? '')) return Number(cols[field]);
    }
    return undefined;
  };
  const because = () => (why.length > 0 ? ` (${why.join('; ')})` : '');
  const uid = /^\d+$/.test(u) ? Number(u) : await lookup('passwd', u, 2);
  if (uid === undefined || !Number.isInteger(uid)) throw new UsageError(`user "${u}" is neither a number nor listed in the image's /etc/passwd${because()}; use --user UID[:GID]`);
  let gid: number | undefined;
  if (g === undefined) gid = /^\d+$/.test(u) ? uid : await lookup('passwd', u, 3);
  else gid = /^\d+$/.test(g) ? Number(g) : await lookup('group', g, 2);
  if (gid === undefined || !Number.isInteger(gid)) throw new UsageError(`group of user "${spec}" is not listed in the image's /etc/group${because()}; use --user UID:GID`);
  return { uid, gid };
}
