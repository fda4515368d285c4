import type { Command } from 'commander';
import { API_BASE } from '../controlplane/index.js';
import { UsageError } from '../errors.js';
import type { RouteView } from '../controlplane/routes.js';
import { callApi, withApiOptions, type ApiOpts } from './api.js';

/**
 * `lattice route ls|approve|reject|withdraw`: routes peers advertise (subnet routers, exit nodes) and
 * the operator's decision on each (src/controlplane/routes.ts). Talks to the admin HTTP API.
 */

/** `NS/NAME` -> [ns, name]. */
function agentArg(s: string): [string, string] {
  const i = s.indexOf('/');
  if (i <= 0 || i === s.length - 1) throw new UsageError(`agent must be NAMESPACE/NAME (e.g. team/router), got ${JSON.stringify(s)}`);
  return [s.slice(0, i), s.slice(i + 1)];
}

function printRows(routes: RouteView[]): void {
  if (routes.length === 0) {
    console.log('no routes');
    return;
  }
  const rows = [['AGENT', 'ROUTE', 'STATE', 'ADVERTISED', 'DECIDED']];
  for (const r of routes) rows.push([`${r.namespace}/${r.name}`, r.exit ? `${r.cidr} (exit)` : r.cidr, r.state, r.advertisedAt, r.decidedAt ? `${r.decidedAt} by ${r.decidedBy ?? '-'}` : '-']);
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) console.log(r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd());
}

/** Register `route ls|approve|reject|withdraw` on `program`. */
export function registerRoute(program: Command): void {
  const g = program.command('route').description('routes advertised by peers (subnet routers, exit nodes) and their approval');
  withApiOptions(
    g
      .command('ls')
      .description('list advertised routes and their state')
      .option('--namespace <ns>', 'only this namespace')
      .option('--state <s>', 'pending | approved | rejected')
      .option('--json', 'print JSON'),
  ).action(async (o: ApiOpts & { namespace?: string; state?: string; json?: boolean }, cmd: Command) => {
    const res = await callApi<{ routes: RouteView[] }>(cmd, o, 'GET', `${API_BASE}/routes`, { query: { namespace: o.namespace, state: o.state } });
    if (o.json) console.log(JSON.stringify(res.routes));
    else printRows(res.routes);
  });
  const decide = (op: 'approve' | 'reject' | 'withdraw', what: string) =>
    withApiOptions(
      g
        .command(op)
        .description(what)
        .argument('<agent>', 'NAMESPACE/NAME of the advertising peer')
        .argument('<cidr>', 'the route, e.g. 10.200.0.0/24, or "exit" for an exit node\'s 0.0.0.0/0 and ::/0')
        .option('--by <name>', 'optional; the control plane records the admin user of the token and refuses another name')
        .option('--json', 'print JSON'),
    ).action(async (agent: string, cidr: string, o: ApiOpts & { by?: string; json?: boolean }, cmd: Command) => {
      const [ns, name] = agentArg(agent);
      const res = await callApi<{ routes: RouteView[] }>(cmd, o, 'POST', `${API_BASE}/agents/${encodeURIComponent(name)}/routes/${op}`, {
        query: { namespace: ns },
        body: { cidr, by: o.by },
      });
      if (o.json) console.log(JSON.stringify(res.routes));
      else printRows(res.routes);
    });
  decide('approve', 'approve an advertised route: every launcher routes it to that peer');
  decide('reject', 'reject a route (an approved one leaves every launcher at once; open flows through it are cut)');
  decide('withdraw', 'remove an advertised route (the peer may advertise it again, pending)');
}
