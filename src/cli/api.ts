import type { Command } from 'commander';
import { LatticeError } from '../errors.js';
import { resolveStateDir, statePaths } from '../state.js';
import { DEFAULT_HTTP, readAdminToken } from '../controlplane/index.js';
import { globalOpts } from './run.js';

/** What every admin-API command takes: `--api <url>` and `--admin-token <token>`. */
export interface ApiOpts {
  api: string;
  adminToken?: string;
}

/** Add `--api` (default $LATTICE_API or the control plane's default HTTP address) and `--admin-token` to `c`. */
export function withApiOptions(c: Command): Command {
  return c
    .option('--api <url>', 'control-plane admin API', process.env.LATTICE_API ?? `http://${DEFAULT_HTTP.host}:${DEFAULT_HTTP.port}`)
    .option('--admin-token <token>', 'admin bearer token (default: $LATTICE_ADMIN_TOKEN or the state dir file)');
}

/**
 * One call to the control plane's admin HTTP API, with the admin bearer token (--admin-token,
 * $LATTICE_ADMIN_TOKEN or the state dir's file). Every failure is one line that says what to check.
 */
export async function callApi<T>(
  cmd: Command,
  o: ApiOpts,
  method: string,
  path: string,
  opts: { body?: unknown; query?: Record<string, string | undefined>; timeoutMs?: number } = {},
): Promise<T> {
  const token = await readAdminToken(statePaths(resolveStateDir(globalOpts(cmd).stateDir)).controlPlane, o.adminToken);
  const qs = opts.query ? new URLSearchParams(Object.entries(opts.query).filter((e): e is [string, string] => e[1] !== undefined && e[1] !== '')) : undefined;
  const url = `${o.api.replace(/\/+$/, '')}${path}${qs ? `?${qs}` : ''}`;
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      signal: AbortSignal.timeout(opts.timeoutMs ?? 15_000),
    });
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).message;
    throw new LatticeError('EAPI_UNREACHABLE', `cannot reach the control-plane API at ${o.api} (${cause}); is \`lattice control-plane start\` running?`, { cause: err });
  }
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    throw new LatticeError('EAPI_REPLY', `the control-plane API at ${o.api} answered ${res.status} with something that is not JSON`);
  }
  if (!res.ok) {
    const e = (parsed as { error?: { code?: string; message?: string } } | undefined)?.error;
    const hint = res.status === 401 ? ' (check --admin-token or the admin-token file of the control plane)' : '';
    throw new LatticeError(e?.code ?? 'EAPI', `control plane refused: ${e?.message ?? `HTTP ${res.status}`}${hint}`);
  }
  return parsed as T;
}
