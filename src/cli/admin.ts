import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { UsageError } from '../errors.js';
import { API_BASE, DEFAULT_HTTP } from '../controlplane/index.js';
import { callApi } from './api.js';

/**
 * Admin commands that talk to the control plane's HTTP API:
 *   lattice token create | agent ls | agent revoke | policy set
 * The admin token comes from --admin-token, $LATTICE_ADMIN_TOKEN, or <stateDir>/control-plane/admin-token.
 */

interface ApiOpts {
  api: string;
  adminToken?: string;
}

function withApiOptions(c: Command): Command {
  return c
    .option('--api <url>', 'control-plane admin API', process.env.LATTICE_API ?? `http://${DEFAULT_HTTP.host}:${DEFAULT_HTTP.port}`)
    .option('--admin-token <token>', 'admin bearer token (default: $LATTICE_ADMIN_TOKEN or the state dir file)');
}

/** Find a command group another module may already have registered, or create it. */
function group(program: Command, name: string, description: string): Command {
  return program.commands.find((c) => c.name() === name) ?? program.command(name).description(description);
}

function apiCall<T>(cmd: Command, o: ApiOpts, method: string, path: string, body?: unknown): Promise<T> {
  return callApi<T>(cmd, o, method, path, { body });
}

const list = (s?: string) => (s ? s.split(',').map((x) => x.trim()).filter(Boolean) : undefined);

async function readJsonFile(path: string, what: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${what} ${path} is not valid JSON: ${(err as Error).message.split('\n')[0]}`);
  }
}

export function registerAdmin(program: Command): void {
  const token = group(program, 'token', 'enrollment tokens');
  withApiOptions(
    token
      .command('create')
      .description('create a one-time enrollment token and print it')
      .requiredOption('--namespace <ns>', 'namespace the enrolled agents join')
      .option('--tools <list>', 'allowed tools, comma-separated')
      .option('--allowed-namespaces <list>', 'other namespaces the agents may reach, comma-separated')
      .option('--limit <n>', 'how many enrollments the token allows', '1')
      .option('--ttl <duration>', 'token lifetime (e.g. 15m, 1h, 7d)', '1h')
      .option('--policy <file>', 'network policy (JSON file) the agents get')
      .option('--preset <name>', 'network policy preset the agents get (instead of --policy)')
      .option('--sandbox <mode>', 'sandbox mode: gvisor | none', 'gvisor')
      .option('--enforcement <mode>', 'policy enforcement: enforce | audit | disabled', 'enforce')
      .option('--json', 'print the token and its settings as JSON'),
  ).action(
    async (
      o: ApiOpts & { namespace: string; tools?: string; allowedNamespaces?: string; limit: string; ttl: string; policy?: string; preset?: string; sandbox: string; enforcement: string; json?: boolean },
      cmd: Command,
    ) => {
      const limit = Number(o.limit);
      if (!Number.isInteger(limit) || limit < 1) throw new UsageError(`--limit ${o.limit} must be a positive integer`);
      if (o.policy && o.preset) throw new UsageError('give either --policy FILE or --preset NAME, not both');
      const policy = o.policy ? await readJsonFile(o.policy, 'policy file') : o.preset;
      const res = await apiCall<{ token: string }>(cmd, o, 'POST', `${API_BASE}/enrollment-tokens`, {
        namespace: o.namespace,
        allowedTools: list(o.tools),
        allowedNamespaces: list(o.allowedNamespaces),
        limit,
        ttl: o.ttl,
        ...(policy !== undefined ? { policy } : {}),
        modes: { sandbox: o.sandbox, enforcement: o.enforcement },
      });
      console.log(o.json ? JSON.stringify(res) : res.token);
    },
  );

  const agent = group(program, 'agent', 'enrolled agents');
  withApiOptions(agent.command('ls').description('list enrolled agents').option('--namespace <ns>', 'only this namespace').option('--json', 'print JSON')).action(
    async (o: ApiOpts & { namespace?: string; json?: boolean }, cmd: Command) => {
      const q = o.namespace ? `?namespace=${encodeURIComponent(o.namespace)}` : '';
      const res = await apiCall<{ agents: { namespace: string; name: string; status: string; ipv4?: string; ipv6?: string; endpoint?: string; createdAt: string }[] }>(
        cmd,
        o,
        'GET',
        `${API_BASE}/agents${q}`,
      );
      if (o.json) {
        console.log(JSON.stringify(res.agents));
        return;
      }
      const rows = [['NAMESPACE', 'NAME', 'STATUS', 'IPV4', 'IPV6', 'ENDPOINT', 'ENROLLED']];
      for (const a of res.agents) rows.push([a.namespace, a.name, a.status, a.ipv4 ?? '-', a.ipv6 ?? '-', a.endpoint ?? '-', a.createdAt]);
      const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
      for (const r of rows) console.log(r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd());
    },
  );
  withApiOptions(
    agent.command('revoke').description('revoke an agent: its key is barred, its address freed, its launcher tears down').argument('<name>').requiredOption('--namespace <ns>', 'the agent\'s namespace'),
  ).action(async (name: string, o: ApiOpts & { namespace: string }, cmd: Command) => {
    await apiCall(cmd, o, 'DELETE', `${API_BASE}/agents/${encodeURIComponent(name)}?namespace=${encodeURIComponent(o.namespace)}`);
    console.log(`revoked ${o.namespace}/${name}`);
  });

  const policy = group(program, 'policy', 'network policies');
  withApiOptions(policy.command('set').description('set the network policy of a namespace (pushed to its running agents)').argument('<namespace>').argument('<file>', 'policy JSON file')).action(
    async (namespace: string, file: string, o: ApiOpts, cmd: Command) => {
      const doc = await readJsonFile(file, 'policy file');
      const res = await apiCall<{ updatedAt: string }>(cmd, o, 'PUT', `${API_BASE}/policies/${encodeURIComponent(namespace)}`, doc);
      console.log(`policy of ${namespace} set at ${res.updatedAt}`);
    },
  );
}
