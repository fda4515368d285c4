import type { Command } from 'commander';
import { LatticeError } from '../errors.js';
import { TLS_TRUST, apiCa, httpExchange as exchange } from '../httpclient.js';
import { resolveStateDir, statePaths } from '../state.js';
import { DEFAULT_HTTP, findApiUrl, readAdminToken } from '../controlplane/index.js';
import { EXIT, globalOpts } from './run.js';

export { apiCa };

/** What every admin-API command takes: `--api <url>`, `--admin-token <token>` and `--ca <file>`. */
export interface ApiOpts {
  api?: string;
  adminToken?: string;
  ca?: string;
}

/**
 * Add `--api` (default $LATTICE_API or the control plane's default HTTP address), `--admin-token` and
 * `--ca` (the CA that signed an HTTPS API's certificate) to `c`.
 */
export function withApiOptions(c: Command): Command {
  return c
    .option('--api <url>', `control-plane admin API (default: $LATTICE_API, else the URL a control plane started with this state dir wrote, else ${DEFAULT_API})`)
    .option('--admin-token <token>', 'admin bearer token (default: $LATTICE_ADMIN_TOKEN or the state dir file)')
    .option('--ca <file>', "CA (PEM) of an https:// API (default: $LATTICE_CA, else the state dir's control-plane/tls/ca.pem when it exists)");
}

const DEFAULT_API = `http://${DEFAULT_HTTP.host}:${DEFAULT_HTTP.port}`;



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
  const stateDir = resolveStateDir(globalOpts(cmd).stateDir);
  const token = await readAdminToken(statePaths(stateDir).controlPlane, o.adminToken);
  const api = await findApiUrl(o.api, stateDir);
  const ca = await apiCa(api, o, stateDir);
  const qs = opts.query ? new URLSearchParams(Object.entries(opts.query).filter((e): e is [string, string] => e[1] !== undefined && e[1] !== '')) : undefined;
  const url = `${api.replace(/\/+$/, '')}${path}${qs ? `?${qs}` : ''}`;
  let res: { status: number; text: string };
  try {
    res = await exchange(url, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(opts.body !== undefined ? { 'content-type': 'application/json' } : {}) },
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      ca,
      timeoutMs: opts.timeoutMs ?? 15_000,
    });
  } catch (err) {
    const cause = (err as { code?: string }).code ?? (err as Error).message;
    if (TLS_TRUST.test(cause)) {
      throw new LatticeError('EAPI_TLS', `the control-plane API at ${api} presented a certificate this host does not trust (${cause}); pass --ca <its control-plane/tls/ca.pem> or set LATTICE_CA`, { cause: err });
    }
    throw new LatticeError('EAPI_UNREACHABLE', `cannot reach the control-plane API at ${api} (${cause}); is \`lattice control-plane start\` running, and is this its URL (--api URL)?`, { cause: err });
  }
  const text = res.text;
  let parsed: unknown;
  try {
    parsed = text ? JSON.parse(text) : undefined;
  } catch {
    throw new LatticeError('EAPI_REPLY', `the control-plane API at ${api} answered ${res.status} with something that is not JSON`);
  }
  if (res.status < 200 || res.status >= 300) {
    const e = (parsed as { error?: { code?: string; message?: string } } | undefined)?.error;
    const hint = res.status === 401 ? ' (check --admin-token or the admin-token file of the control plane)' : '';
    // 400 (an invalid value) and 404 (an unknown name) are bad usage: exit 2 as for a value checked locally.
    const usage = res.status === 400 || res.status === 404;
    throw new LatticeError(e?.code ?? 'EAPI', `control plane refused: ${e?.message ?? `HTTP ${res.status}`}${hint}`, usage ? { exitCode: EXIT.usage } : undefined);
  }
  return parsed as T;
}
