import { execa, type Options } from 'execa';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = join(REPO, 'dist/cli/main.js');

/**
 * A component an e2e test needs. Missing under CI=true is a failure, never a silent skip; outside CI
 * the test fails too, with the fix in the message (run make setup).
 */
export async function requireBinary(bin: string): Promise<string> {
  const r = await execa('sh', ['-c', `command -v ${bin}`], { reject: false });
  if (r.exitCode !== 0) throw new Error(`${bin} is required by this test and is missing; run: make setup`);
  return String(r.stdout).trim();
}

export async function tempDir(prefix: string): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `${prefix}-`));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

/** Build the busybox demo rootfs into dir/rootfs. */
export async function busyboxRootfs(dir: string): Promise<string> {
  const out = join(dir, 'rootfs');
  await execa('sh', [join(REPO, 'bundles/demo/build-rootfs.sh'), out]);
  return out;
}

/** Run the built CLI with its own state dir. */
export function lattice(stateDir: string, args: string[], opts: Options = {}) {
  return execa(process.execPath, [CLI, '--state-dir', stateDir, ...args], { reject: false, ...opts });
}
