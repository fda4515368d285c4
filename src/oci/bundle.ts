import { mkdir, rm } from 'node:fs/promises';
import { join, isAbsolute } from 'node:path';
import { writeFileAtomic } from '../fsutil.js';
import type { OciSpec } from './spec.js';
import { assertValidSpec } from './validate.js';

export interface Bundle {
  dir: string;
  configPath: string;
}

/**
 * Write a bundle directory holding config.json. The rootfs is referenced by absolute path (a cached
 * image or a user directory, mounted read-only), so nothing is copied per sandbox.
 */
export async function writeBundle(dir: string, spec: OciSpec): Promise<Bundle> {
  await assertValidSpec(spec);
  if (!isAbsolute(spec.root.path)) throw new Error(`bundle rootfs must be an absolute path, got ${spec.root.path}`);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const configPath = join(dir, 'config.json');
  await writeFileAtomic(configPath, JSON.stringify(spec, null, 2) + '\n', 0o600);
  return { dir, configPath };
}

export async function removeBundle(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}
