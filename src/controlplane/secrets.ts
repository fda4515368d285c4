import { randomBytes } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { LatticeError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import { statePaths } from '../state.js';

/**
 * The admin bearer token lives in <stateDir>/control-plane/admin-token, mode 0600, created at first
 * start. (The JWT signing secret is not here: it lives in the cluster's KV config so that every
 * control-plane instance on the same NATS signs and verifies with the same key.)
 */

export class StatePermissionError extends LatticeError {
  override readonly name = 'StatePermissionError';
  constructor(message: string) {
    super('ESTATE_PERM', message);
  }
}

/** Refuse a file or directory that other users can read or write (key material must stay private). */
export async function assertPrivate(path: string): Promise<void> {
  const st = await stat(path);
  const loose = st.mode & (st.isDirectory() ? 0o022 : 0o077);
  if (loose) {
    const want = st.isDirectory() ? '0700' : '0600';
    throw new StatePermissionError(
      `${path} has mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}: other users could read or change secrets in it; run chmod ${want} ${path}`,
    );
  }
  if (typeof process.getuid === 'function' && st.uid !== process.getuid()) {
    throw new StatePermissionError(`${path} belongs to uid ${st.uid}, not to the current user (${process.getuid()}); fix its owner`);
  }
}

/**
 * Check the state dir and each of its subdirectories that exists (sandboxes, runsc, images,
 * credentials, outbox, control-plane): owned by us and not writable by group or others. A foreign-owned
 * `outbox/` would let its owner delete unpublished audit; a writable `sandboxes/` would let others swap
 * bundles. Throws StatePermissionError (one line, with the fix) for the first bad one.
 */
export async function assertStateDirs(stateDir: string): Promise<void> {
  const p = statePaths(stateDir);
  for (const dir of [p.root, p.sandboxes, p.runscRoot, p.images, p.credentials, p.outboxes, p.controlPlane]) {
    try {
      await assertPrivate(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
  }
}

/** Where the admin token lives: <controlPlaneDir>/admin-token. */
export function adminTokenPath(controlPlaneDir: string): string {
  return join(controlPlaneDir, 'admin-token');
}

/** Read the admin token, creating it (random 32 bytes, base64url, 0600) on first start. */
export async function loadOrCreateAdminToken(controlPlaneDir: string): Promise<{ token: string; created: boolean }> {
  const path = adminTokenPath(controlPlaneDir);
  try {
    await assertPrivate(path);
    const token = (await readFile(path, 'utf8')).trim();
    if (token.length < 32) throw new StatePermissionError(`${path} is empty or truncated; delete it to create a new admin token`);
    return { token, created: false };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const token = randomBytes(32).toString('base64url');
  await writeFileAtomic(path, `${token}\n`, 0o600);
  await assertPrivate(controlPlaneDir);
  return { token, created: true };
}

/** The admin token for CLI clients: flag, else $LATTICE_ADMIN_TOKEN, else the file in the state dir. */
export async function readAdminToken(controlPlaneDir: string, flag?: string): Promise<string> {
  const t = flag ?? process.env.LATTICE_ADMIN_TOKEN;
  if (t) return t.trim();
  const path = adminTokenPath(controlPlaneDir);
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch (err) {
    throw new LatticeError(
      'EADMIN_TOKEN',
      `cannot read the admin token from ${path} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}); pass --admin-token or set LATTICE_ADMIN_TOKEN`,
    );
  }
}
