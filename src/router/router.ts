/**
 * The router side of `lattice up --advertise-routes CIDR,... [--exit-node]`: the host kernel forwards
 * what this node routes. What it adds, all removed by `close()` (and, after a crash, by the next `up`,
 * which finds the table by name: `removeRouterTable`):
 *
 *   - the nftables table `lattice_router_<name>` (./nftables.ts): input/forward filter + masquerade;
 *   - net.ipv4.ip_forward = 1 (and net.ipv6.conf.all.forwarding = 1 when an IPv6 route is advertised),
 *     as Docker does; lattice leaves them on (other forwarders on the host may rely on them).
 *
 * The pump decides which packets reach the kernel (PumpOptions.routed: approved routes only, this
 * node's own policy). Errors: RouterError (EROUTER_NFT) with nft's own words, PrerequisiteError
 * (no nft).
 */
import { readFile, writeFile } from 'node:fs/promises';
import { execa } from 'execa';
import type { Logger } from 'pino';
import { LatticeError, PrerequisiteError } from '../errors.js';
import { processStartTicks } from '../proc.js';
import { routerRuleset, routerTableName, type RouterRulesetOptions } from './nftables.js';

export class RouterError extends LatticeError {
  override readonly name = 'RouterError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('EROUTER_NFT', message, options);
  }
}

const FORWARD_V4 = '/proc/sys/net/ipv4/ip_forward';
const FORWARD_V6 = '/proc/sys/net/ipv6/conf/all/forwarding';

async function nft(args: string[], input?: string): Promise<string> {
  try {
    return (await execa('nft', args, { input, stdin: input === undefined ? 'ignore' : undefined })).stdout;
  } catch (err) {
    const e = err as { code?: string; stderr?: string; shortMessage?: string };
    if (e.code === 'ENOENT') throw new PrerequisiteError('a subnet router or exit node needs nftables: `nft` not found; run: apt-get install nftables (or make setup)', { cause: err });
    throw new RouterError(`nft ${args.join(' ')} failed: "${(e.stderr ?? e.shortMessage ?? '').trim()}"`, { cause: err });
  }
}

async function ensureSysctl(path: string, what: string, log: Logger): Promise<void> {
  if ((await readFile(path, 'utf8').catch(() => '')).trim() === '1') return;
  try {
    await writeFile(path, '1');
  } catch (err) {
    throw new RouterError(`cannot enable ${what} (${(err as Error).message}); run: sysctl -w ${what}=1`, { cause: err });
  }
  log.warn(`router: set ${what}=1 (as Docker does); lattice leaves it on`);
}

/** Remove node `name`'s router table if one exists (a crashed `up` left it); true when one was removed. */
export async function removeRouterTable(name: string): Promise<boolean> {
  const table = routerTableName(name);
  const listed = await nft(['list', 'tables', 'inet']).catch(() => '');
  if (!listed.split('\n').some((l) => l.trim() === `table inet ${table}`)) return false;
  await nft(['delete', 'table', 'inet', table]);
  return true;
}

export interface Router {
  readonly table: string;
  /** Remove the table (idempotent). */
  close(): Promise<void>;
}

/**
 * Install node `name`'s router table for `o` (a leftover of the same name is replaced) and turn on
 * forwarding for the families routed. On failure nothing of ours is left behind.
 */
export async function openRouter(name: string, o: Omit<RouterRulesetOptions, 'table' | 'owner'>, log: Logger): Promise<Router> {
  const table = routerTableName(name);
  const text = routerRuleset({ ...o, table, owner: { pid: process.pid, startTicks: processStartTicks(process.pid) ?? 0 } });
  await nft(['--version']);
  await ensureSysctl(FORWARD_V4, 'net.ipv4.ip_forward', log);
  if (o.routes.some((c) => c.includes(':'))) await ensureSysctl(FORWARD_V6, 'net.ipv6.conf.all.forwarding', log);
  if (await removeRouterTable(name)) log.info({ table }, 'router: removed the table a previous lattice up left');
  try {
    await nft(['-f', '-'], text);
  } catch (err) {
    await nft(['delete', 'table', 'inet', table]).catch(() => undefined);
    throw err;
  }
  log.info({ table, routes: o.routes }, 'router: forwarding and source NAT on');
  let closed = false;
  return {
    table,
    async close() {
      if (closed) return;
      closed = true;
      await nft(['delete', 'table', 'inet', table]).catch((err: unknown) => log.warn({ err: (err as Error).message, table }, 'router: table not removed'));
    },
  };
}
