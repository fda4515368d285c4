import { formatProblem, type PolicyProblem } from '../policy/index.js';
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { UsageError } from '../errors.js';

/** Validation of what the user typed; each failure is one line saying what to do. */

export function parseEnv(values: string[]): string[] {
  return values.map((v) => {
    if (!/^[A-Za-z_][A-Za-z0-9_]*=/.test(v)) throw new UsageError(`--env "${v}" is not KEY=VALUE; write it like --env HOME=/tmp`);
    return v;
  });
}

export type RootfsArg = { kind: 'dir' | 'tar'; path: string };

export async function resolveRootfsArg(value: string | undefined): Promise<RootfsArg> {
  if (!value) throw new UsageError('missing --rootfs; give a root filesystem directory or a .tar/.tar.gz of one (try: make demo-rootfs)');
  const path = resolve(value);
  const st = await stat(path).catch(() => undefined);
  if (!st) throw new UsageError(`--rootfs ${value} does not exist; give a directory or a .tar/.tar.gz file`);
  if (st.isDirectory()) return { kind: 'dir', path };
  if (st.isFile() && /\.(tar|tar\.gz|tgz)$/.test(path)) return { kind: 'tar', path };
  throw new UsageError(`--rootfs ${value} is neither a directory nor a .tar/.tar.gz/.tgz file`);
}

export function requireRoot(): void {
  if (typeof process.getuid === 'function' && process.getuid() !== 0) {
    throw new UsageError('lattice sandbox needs root (runsc, network namespaces, TUN); rerun with sudo');
  }
}

/**
 * Every problem of a policy, one per line (`  egress[2].cidrs[0]: ...; fix`), under a heading that names
 * the file: a long list stays readable and nothing is cut off. A single problem is one line.
 */
export function policyProblemsMessage(what: string, problems: readonly PolicyProblem[]): string {
  if (problems.length === 1) return `${what}: ${formatProblem(problems[0]!)}`;
  return `${what} has ${problems.length} problems:\n${problems.map((p) => `  ${formatProblem(p)}`).join('\n')}`;
}
