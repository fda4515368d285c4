import { execa, type Options } from 'execa';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = join(REPO, 'dist/cli/main.js');

/**
 * The one place that decides what happens when a test's component is missing: the test fails with the fix in
 * the message, under CI=true and everywhere else alike. No test file skips on its own.
 */
export class MissingComponentError extends Error {
  constructor(what: string, fix: string) {
    super(`${what} is required by this test and is missing; ${fix}`);
    this.name = 'MissingComponentError';
  }
}

/** A binary on PATH; returns its path. */
export async function requireBinary(bin: string): Promise<string> {
  const r = await execa('sh', ['-c', `command -v ${bin}`], { reject: false });
  if (r.exitCode !== 0) throw new MissingComponentError(bin, 'run: make setup');
  return String(r.stdout).trim();
}

/** Each of `bins` on PATH. */
export async function requireBinaries(...bins: string[]): Promise<void> {
  for (const bin of bins) await requireBinary(bin);
}

/** Root (network namespaces, TUN, runsc). */
export function requireRoot(): void {
  if (process.getuid?.() !== 0) throw new MissingComponentError('root', 'run the tests as root: sudo make test');
}

/** A file or device node, e.g. /dev/net/tun. */
export function requirePath(path: string, fix: string): void {
  if (!existsSync(path)) throw new MissingComponentError(path, fix);
}

/** A capability of this machine checked by `probe` (returns false or throws when absent). */
export async function requireCapability(what: string, probe: () => boolean | Promise<boolean>, fix: string): Promise<void> {
  let ok = false;
  try {
    ok = await probe();
  } catch {
    ok = false;
  }
  if (!ok) throw new MissingComponentError(what, fix);
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

/**
 * Wait for `cond` (sync or async) to hold: the event itself, polled every 20 ms. `timeoutMs` is a safety net
 * against a hang, generous enough for a loaded machine, never a window the behaviour must fit in; on expiry it
 * throws naming `what` and the last error `cond` threw.
 */
export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 60_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      if (await cond()) return;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Wait until something listens on TCP `port` in network namespace `netns` (a server child's readiness). */
export async function waitForListener(netns: string, port: number, timeoutMs = 60_000): Promise<void> {
  await waitFor(async () => {
    const r = await execa('ip', ['netns', 'exec', netns, 'ss', '-Htln', `sport = :${port}`], { reject: false });
    return r.exitCode === 0 && String(r.stdout).trim() !== '';
  }, timeoutMs, `a TCP listener on port ${port} in ${netns}`);
}
