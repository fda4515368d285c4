import { formatProblem, type PolicyProblem } from '../policy/index.js';
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { UsageError } from '../errors.js';
import { DefaultDnsLimits, type DnsLimits } from '../dataplane/dns.js';
import { DefaultMaxFlows } from '../dataplane/flows.js';

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

/** The flags of each DNS limit, their bounds and what they mean (for the one-line errors). */
const DNS_LIMIT_FLAGS = {
  maxInFlight: { flag: '--dns-max-in-flight', min: 1, max: 4096, integer: true, what: 'upstream lookups in flight at once' },
  perSecond: { flag: '--dns-rate', min: 0.1, max: 10_000, integer: false, what: 'upstream lookups per second' },
  burst: { flag: '--dns-burst', min: 1, max: 100_000, integer: true, what: 'upstream lookups in a burst above the rate' },
} as const satisfies Record<keyof DnsLimits, unknown>;

/**
 * `sandbox start --dns-max-in-flight N --dns-rate R --dns-burst B`: the pump's bounds on the upstream DNS
 * lookups of one sandbox (DnsLimiter in src/dataplane/dns.ts; the excess is answered SERVFAIL and counted).
 * Flags not given keep their defaults (64 in flight, 50/s, bursts of 100). Throws UsageError (exit 2)
 * naming the flag, the value and the accepted range.
 */
export function parseDnsLimits(values: { [K in keyof DnsLimits]?: string }): Partial<DnsLimits> {
  const out: Partial<DnsLimits> = {};
  for (const key of Object.keys(DNS_LIMIT_FLAGS) as Array<keyof DnsLimits>) {
    const raw = values[key];
    if (raw === undefined) continue;
    const { flag, min, max, integer, what } = DNS_LIMIT_FLAGS[key];
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
      throw new UsageError(`${flag} ${raw} is out of range; give ${integer ? 'a whole number' : 'a number'} of ${what} from ${min} to ${max} (default ${DefaultDnsLimits[key]})`);
    }
    out[key] = n;
  }
  return out;
}

/** The bounds of `--max-flows`: below 16 a sandbox cannot hold a browser's connections; above 2^20 the table alone is ~1 GiB. */
export const MAX_FLOWS_RANGE = { min: 16, max: 1_048_576 } as const;

/**
 * `sandbox run|start --max-flows N`: the bound of the pump's flow table (FlowTable.maxFlows in
 * src/dataplane/flows.ts). Undefined when not given (the default, 16384, applies). Throws UsageError
 * (exit 2) naming the flag, the value and the accepted range.
 */
export function parseMaxFlows(raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  const { min, max } = MAX_FLOWS_RANGE;
  if (!/^[0-9]+$/.test(raw) || n < min || n > max) {
    throw new UsageError(`--max-flows ${raw} is out of range; give a whole number of tracked flows from ${min} to ${max} (default ${DefaultMaxFlows})`);
  }
  return n;
}
