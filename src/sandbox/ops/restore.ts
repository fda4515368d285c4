/**
 * `lattice sandbox restore DIR`: the reading side of a checkpoint directory (ops/checkpoint.ts writes it) and
 * the spec of the restored sandbox. The restore itself is the ordinary lifecycle in restore mode: a new
 * sandbox id, its network re-created from the same stored identity (same WireGuard key, same overlay
 * address, new netns/TUN/pump/Device), then `runsc restore` instead of `runsc run` (RunscProcess.restore).
 *
 * What runsc's restore needs from the spec: the same process, root and mount destinations as at checkpoint
 * (gVisor re-opens every gofer mount by destination and refuses a different set). What changes per sandbox
 * is re-pointed by respec(): the network namespace, the host side (source) of the mounts the network hook
 * makes (resolv.conf, the agent API socket directory), the cgroup and the id annotations.
 */
import { lstat, readFile } from 'node:fs/promises';
import { isAbsolute, join, resolve } from 'node:path';
import { LatticeError, UsageError } from '../../errors.js';
import type { OciMount, OciSpec } from '../../oci/spec.js';

/** A checkpoint directory is not one lattice wrote, or is damaged; nothing was started. */
export class CheckpointError extends LatticeError {
  override readonly name = 'CheckpointError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ESANDBOX_CHECKPOINT', message, options);
  }
}

/** The file that makes a directory a lattice checkpoint (mode 0600, JSON). */
export const CHECKPOINT_META = 'lattice-checkpoint.json';
/** The checkpointed OCI spec (the original bundle's config.json), beside the meta. */
export const CHECKPOINT_SPEC = 'config.json';
/** runsc's image directory (checkpoint.img and, depending on the runsc version, pages files). */
export const CHECKPOINT_IMAGE = 'image';
export const CHECKPOINT_FORMAT = 'lattice-checkpoint/1';

/** What lattice remembers of a checkpointed sandbox, in DIR/lattice-checkpoint.json. */
export interface CheckpointMeta {
  format: typeof CHECKPOINT_FORMAT;
  /** The sandbox's name at checkpoint (the restored one's default name). */
  name: string;
  /** The checkpointed sandbox's id (gone once checkpointed). */
  sandboxId: string;
  /** ISO 8601. */
  createdAt: string;
  /**
   * 'none': no network (`sandbox run`). 'enrolled': `sandbox start`; the identity stays in the state dir
   * (credentials/<agent>.json) and the restored sandbox takes it up again.
   */
  network: 'none' | 'enrolled';
  /** Enrolled: the agent name whose stored credentials the restored sandbox uses. */
  agent?: string;
  /** The state dir the sandbox ran from (where the identity is). */
  stateDir: string;
}

/** A checkpoint directory, read and checked. */
export interface Checkpoint {
  dir: string;
  meta: CheckpointMeta;
  spec: OciSpec;
  imagePath: string;
}

/**
 * Read the checkpoint in `dir`. Errors: UsageError (no such directory), CheckpointError (not a lattice
 * checkpoint, an unknown format, a damaged meta or spec, no image).
 */
export async function readCheckpoint(dir: string): Promise<Checkpoint> {
  const abs = resolve(dir);
  const st = await lstat(abs).catch(() => undefined);
  if (!st?.isDirectory()) throw new UsageError(`${dir} is not a directory; give the directory \`lattice sandbox checkpoint NAME --to DIR\` wrote`);
  let raw: string;
  try {
    raw = await readFile(join(abs, CHECKPOINT_META), 'utf8');
  } catch {
    throw new CheckpointError(`${dir} is not a lattice checkpoint (no ${CHECKPOINT_META}); give the directory \`lattice sandbox checkpoint NAME --to DIR\` wrote`);
  }
  const meta = parseMeta(raw, dir);
  let spec: OciSpec;
  try {
    spec = JSON.parse(await readFile(join(abs, CHECKPOINT_SPEC), 'utf8')) as OciSpec;
  } catch (err) {
    throw new CheckpointError(`${dir}/${CHECKPOINT_SPEC} is missing or not JSON; the checkpoint is damaged, take a new one`, { cause: err });
  }
  if (!spec?.process || !Array.isArray(spec.process.args) || !spec.root || !isAbsolute(String(spec.root.path)) || !Array.isArray(spec.mounts) || !spec.linux) {
    throw new CheckpointError(`${dir}/${CHECKPOINT_SPEC} is not the OCI spec of a lattice sandbox; the checkpoint is damaged, take a new one`);
  }
  const imagePath = join(abs, CHECKPOINT_IMAGE);
  if (!(await lstat(imagePath).catch(() => undefined))?.isDirectory()) throw new CheckpointError(`${dir} has no ${CHECKPOINT_IMAGE}/ directory; the checkpoint is damaged or unfinished, take a new one`);
  return { dir: abs, meta, spec, imagePath };
}

/** Check the meta's JSON. Errors: CheckpointError naming the first thing wrong. */
export function parseMeta(raw: string, dir: string): CheckpointMeta {
  let m: Partial<CheckpointMeta>;
  try {
    m = JSON.parse(raw) as Partial<CheckpointMeta>;
  } catch {
    throw new CheckpointError(`${dir}/${CHECKPOINT_META} is not JSON; the checkpoint is damaged, take a new one`);
  }
  if (m?.format !== CHECKPOINT_FORMAT) throw new CheckpointError(`${dir} holds checkpoint format ${JSON.stringify(m?.format)}, this lattice reads ${CHECKPOINT_FORMAT}; restore it with the lattice that wrote it`);
  const str = (v: unknown) => typeof v === 'string' && v.length > 0;
  if (!str(m.name) || !str(m.sandboxId) || !str(m.stateDir) || !str(m.createdAt)) throw new CheckpointError(`${dir}/${CHECKPOINT_META} lacks name, sandboxId, stateDir or createdAt; the checkpoint is damaged, take a new one`);
  if (m.network !== 'none' && m.network !== 'enrolled') throw new CheckpointError(`${dir}/${CHECKPOINT_META} names network ${JSON.stringify(m.network)}; expected "none" or "enrolled"`);
  if (m.network === 'enrolled' && !str(m.agent)) throw new CheckpointError(`${dir}/${CHECKPOINT_META} is an enrolled sandbox without its agent name; the checkpoint is damaged, take a new one`);
  return m as CheckpointMeta;
}

/**
 * The checkpointed `spec` re-pointed at a new sandbox (pure; `spec` is not changed): annotations name `id`
 * and `name`, the cgroup is `cgroupsPath` (when the spec had one), the network namespace is `netnsPath`
 * (none: runsc's own), and each of `mounts` replaces the spec's mount at the same destination (appended when
 * there is none, which runsc's restore will refuse: the mount set must not change).
 */
export function respec(spec: OciSpec, to: { id: string; name: string; netnsPath?: string; mounts: readonly OciMount[]; cgroupsPath?: string }): OciSpec {
  const out = structuredClone(spec);
  out.annotations = { ...(out.annotations ?? {}), 'dev.lattice.sandbox.id': to.id, 'dev.lattice.sandbox.name': to.name };
  if (out.linux.cgroupsPath !== undefined && to.cgroupsPath !== undefined) out.linux.cgroupsPath = to.cgroupsPath;
  out.linux.namespaces = out.linux.namespaces.map((n) => (n.type !== 'network' ? n : to.netnsPath ? { type: 'network', path: to.netnsPath } : { type: 'network' }));
  for (const m of to.mounts) {
    const i = out.mounts.findIndex((x) => x.destination === m.destination);
    if (i >= 0) out.mounts[i] = { ...m };
    else out.mounts.push({ ...m });
  }
  return out;
}
