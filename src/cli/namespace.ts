import type { Command } from 'commander';
import { API_BASE } from '../controlplane/index.js';
import { UsageError } from '../errors.js';
import type { NamespaceExitDefault } from '../controlplane/namespaces.js';
import { isPeerRef } from '../controlplane/routes.js';
import { callApi, withApiOptions, type ApiOpts } from './api.js';

/**
 * `lattice namespace set NS --exit-node NAME|none [--allow-opt-out]`, `lattice namespace show NS`: a
 * namespace's settings an operator chooses for its sandboxes (src/controlplane/namespaces.ts). Talks to
 * the admin HTTP API; setting needs the admin role.
 */

function describe(ns: string, d: NamespaceExitDefault | null): string {
  if (!d) return `namespace ${ns}: no default exit node (sandboxes choose with sandbox start --exit-node)`;
  return `namespace ${ns}: default exit node ${d.exitNode}; sandbox start --exit-node none is ${d.allowOptOut ? 'allowed' : 'refused'}`;
}

/** Register `namespace set|show` on `program`. */
export function registerNamespace(program: Command): void {
  const g = program.command('namespace').description("a namespace's settings for its sandboxes (default exit node)");
  withApiOptions(
    g
      .command('set')
      .description('set (or with --exit-node none, clear) the exit node sandboxes of NS use when sandbox start names none')
      .argument('<namespace>', 'the namespace')
      .requiredOption('--exit-node <name>', 'NAME or NAMESPACE.NAME of an exit node (lattice up --exit-node, routes approved), or "none" to clear the default')
      .option('--allow-opt-out', 'let `sandbox start --exit-node none` run without an exit node (default: refused)')
      .option('--json', 'print JSON'),
  ).action(async (ns: string, o: ApiOpts & { exitNode: string; allowOptOut?: boolean; json?: boolean }, cmd: Command) => {
    const clear = o.exitNode === 'none';
    if (!clear && !isPeerRef(o.exitNode)) throw new UsageError(`--exit-node ${JSON.stringify(o.exitNode)} is not a peer name; use NAME, NAMESPACE.NAME or none`);
    if (clear && o.allowOptOut) throw new UsageError('--allow-opt-out goes with a default exit node; --exit-node none clears the default (sandboxes then choose freely)');
    const res = await callApi<{ namespace: string; exitNode: NamespaceExitDefault | null }>(cmd, o, 'PUT', `${API_BASE}/namespaces/${encodeURIComponent(ns)}/exit-node`, {
      body: clear ? { exitNode: null } : { exitNode: o.exitNode, allowOptOut: o.allowOptOut === true },
    });
    console.log(o.json ? JSON.stringify(res) : describe(res.namespace, res.exitNode));
  });
  withApiOptions(g.command('show').description("a namespace's default exit node").argument('<namespace>', 'the namespace').option('--json', 'print JSON')).action(
    async (ns: string, o: ApiOpts & { json?: boolean }, cmd: Command) => {
      const res = await callApi<{ namespace: string; exitNode: NamespaceExitDefault | null }>(cmd, o, 'GET', `${API_BASE}/namespaces/${encodeURIComponent(ns)}/exit-node`);
      console.log(o.json ? JSON.stringify(res) : describe(res.namespace, res.exitNode));
    },
  );
}
