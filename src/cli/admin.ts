import { readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import { UsageError } from '../errors.js';
import { jsonSyntaxMessage } from '../jsontext.js';
import { ADMIN_ROLES, API_BASE } from '../controlplane/index.js';
import { callApi, withApiOptions, type ApiOpts } from './api.js';
import { parseLabelArgs } from '../policy/labels.js';

/**
 * Admin commands that talk to the control plane's HTTP API:
 *   lattice token create | agent ls | agent label | agent revoke | policy set | admin user add|ls|rm | admin whoami
 * The admin token comes from --admin-token, $LATTICE_ADMIN_TOKEN, or <stateDir>/control-plane/admin-token.
 */

/** Find a command group another module may already have registered, or create it. */
function group(program: Command, name: string, description: string): Command {
  return program.commands.find((c) => c.name() === name) ?? program.command(name).description(description);
}

function apiCall<T>(cmd: Command, o: ApiOpts, method: string, path: string, body?: unknown): Promise<T> {
  return callApi<T>(cmd, o, method, path, { body });
}

/** `--labels role=db,tier=1` -> {role: "db", tier: "1"}; every problem on its own line. */
function labelsOption(s: string): Record<string, string> {
  const args = s.split(',').map((x) => x.trim()).filter(Boolean);
  const problems: string[] = [];
  for (const a of args) if (!a.includes('=')) problems.push(`--labels: "${a}" is not key=value`);
  // Parsed by the same module that validates labels at the control plane and in selectors.
  const parsed = parseLabelArgs(args.filter((a) => a.includes('=')));
  if (!parsed.ok) problems.push(...parsed.problems.map((p) => `--labels: ${p}`));
  if (problems.length) throw new UsageError(problems.join('\n'));
  return parsed.ok ? { ...parsed.edit.set } : {};
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
    throw new UsageError(`${what} ${path} is not valid JSON: ${jsonSyntaxMessage(err, text)}`);
  }
}

/**
 * A policy file, validated here before anything is sent: every problem on a line of its own
 * (`egress[2].cidrs[0]: ...`), all of them, so a long list stays readable.
 */
async function readPolicyFile(path: string): Promise<unknown> {
  const doc = await readJsonFile(path, 'policy file');
  const [{ validatePolicy }, { policyProblemsMessage }] = await Promise.all([import('../policy/index.js'), import('../sandbox/inputs.js')]);
  const v = validatePolicy(doc);
  if (!v.ok) throw new UsageError(policyProblemsMessage(`policy file ${path}`, v.problems));
  return doc;
}

/** Register `token create`, `agent ls|revoke`, `policy set` and `admin user|whoami` on `program`. */
export function registerAdmin(program: Command): void {
  registerAdminUsers(program);
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
      .option('--policy <file>', 'network policy (JSON file, checked here) the agents get; default: the namespace\'s (policy set), else deny all')
      .option('--labels <list>', 'labels the enrolled agents carry, k=v comma-separated (policy "peers" rules select by them)')
      .option('--tool-enforcement <mode>', 'agent-API tool calls: enforce (refuse what is not allowed) | audit (allow, record) | disabled; network flows follow the policy\'s own "mode"', 'enforce')
      .addOption(new Option('--enforcement <mode>').hideHelp())
      .addOption(new Option('--preset <name>').hideHelp())
      .option('--json', 'print the token and its settings as JSON'),
  ).action(
    async (
      o: ApiOpts & { namespace: string; tools?: string; allowedNamespaces?: string; limit: string; ttl: string; policy?: string; labels?: string; preset?: string; toolEnforcement: string; enforcement?: string; json?: boolean },
      cmd: Command,
    ) => {
      if (o.enforcement !== undefined) {
        throw new UsageError('--enforcement is now --tool-enforcement: it governs agent-API tool calls only; network flows follow the "mode" of the policy file (enforce | audit | disabled)');
      }
      if (o.preset !== undefined) throw new UsageError('--preset: no policy presets exist; write the policy as a file (README, "Policy") and pass --policy FILE');
      const modes = ['enforce', 'audit', 'disabled'];
      if (!modes.includes(o.toolEnforcement)) throw new UsageError(`--tool-enforcement ${o.toolEnforcement} is not a mode; use one of: ${modes.join(', ')}`);
      const limit = Number(o.limit);
      if (!/^\d+$/.test(o.limit) || !Number.isSafeInteger(limit) || limit < 1) throw new UsageError(`--limit ${o.limit} must be a positive integer`);
      const policy = o.policy ? await readPolicyFile(o.policy) : undefined;
      const labels = o.labels !== undefined ? labelsOption(o.labels) : undefined;
      const res = await apiCall<{ token: string }>(cmd, o, 'POST', `${API_BASE}/enrollment-tokens`, {
        namespace: o.namespace,
        allowedTools: list(o.tools),
        allowedNamespaces: list(o.allowedNamespaces),
        limit,
        ttl: o.ttl,
        ...(policy !== undefined ? { policy } : {}),
        ...(labels !== undefined ? { labels } : {}),
        modes: { sandbox: 'gvisor', enforcement: o.toolEnforcement },
      });
      console.log(o.json ? JSON.stringify(res) : res.token);
    },
  );

  const agent = group(program, 'agent', 'enrolled agents');
  withApiOptions(agent.command('ls').description('list enrolled agents').option('--namespace <ns>', 'only this namespace').option('--json', 'print JSON')).action(
    async (o: ApiOpts & { namespace?: string; json?: boolean }, cmd: Command) => {
      const q = o.namespace ? `?namespace=${encodeURIComponent(o.namespace)}` : '';
      const res = await apiCall<{ agents: { namespace: string; name: string; status: string; ipv4?: string; ipv6?: string; endpoint?: string; labels?: Record<string, string>; createdAt: string }[] }>(
        cmd,
        o,
        'GET',
        `${API_BASE}/agents${q}`,
      );
      if (o.json) {
        console.log(JSON.stringify(res.agents));
        return;
      }
      if (o.namespace && res.agents.length === 0) {
        // Most often a typo: say so, with the namespaces that do have agents (stderr; stdout stays a table).
        const all = await apiCall<{ agents: { namespace: string }[] }>(cmd, o, 'GET', `${API_BASE}/agents`);
        const known = [...new Set(all.agents.map((a) => a.namespace))].sort();
        console.error(`no agents in namespace ${o.namespace}; namespaces with agents: ${known.join(', ') || 'none'}`);
      }
      const rows = [['NAMESPACE', 'NAME', 'STATUS', 'IPV4', 'IPV6', 'ENDPOINT', 'LABELS', 'ENROLLED']];
      const labelText = (l?: Record<string, string>) => Object.entries(l ?? {}).map(([k, v]) => `${k}=${v}`).join(',') || '-';
      for (const a of res.agents) rows.push([a.namespace, a.name, a.status, a.ipv4 ?? '-', a.ipv6 ?? '-', a.endpoint ?? '-', labelText(a.labels), a.createdAt]);
      const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
      for (const r of rows) console.log(r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd());
    },
  );
  withApiOptions(
    agent
      .command('label')
      .description('set (key=value) or remove (key-) labels of an agent; policy "peers" rules follow at once')
      .argument('<name>')
      .argument('<changes...>', 'key=value to set, key- to remove')
      .requiredOption('--namespace <ns>', 'the agent\'s namespace'),
  ).action(async (name: string, changes: string[], o: ApiOpts & { namespace: string }, cmd: Command) => {
    const parsed = parseLabelArgs(changes);
    if (!parsed.ok) throw new UsageError(parsed.problems.join('\n'));
    const res = await apiCall<{ labels: Record<string, string> }>(
      cmd,
      o,
      'PATCH',
      `${API_BASE}/agents/${encodeURIComponent(name)}/labels?namespace=${encodeURIComponent(o.namespace)}`,
      { set: parsed.edit.set, remove: parsed.edit.remove },
    );
    const text = Object.entries(res.labels).map(([k, v]) => `${k}=${v}`).join(',');
    console.log(`${o.namespace}/${name} labels: ${text || '(none)'}`);
  });
  withApiOptions(
    agent.command('revoke').description('revoke an agent: its key is barred, its address freed, its launcher tears down').argument('<name>').requiredOption('--namespace <ns>', 'the agent\'s namespace'),
  ).action(async (name: string, o: ApiOpts & { namespace: string }, cmd: Command) => {
    await apiCall(cmd, o, 'DELETE', `${API_BASE}/agents/${encodeURIComponent(name)}?namespace=${encodeURIComponent(o.namespace)}`);
    console.log(`revoked ${o.namespace}/${name}`);
  });

  const policy = group(program, 'policy', 'network policies');
  withApiOptions(
    policy
      .command('set')
      .description('set the network policy of a namespace (pushed to its running agents)')
      .argument('<namespace>')
      .argument('<file>', 'policy JSON file')
      .option('--new-namespace', 'the namespace has no agents and no policy yet: set it anyway, for agents enrolled later'),
  ).action(
    async (namespace: string, file: string, o: ApiOpts & { newNamespace?: boolean }, cmd: Command) => {
      const doc = await readPolicyFile(file);
      if (!o.newNamespace) {
        // A typo in the namespace would otherwise set a policy nobody gets: refuse it, with the choices.
        const { agents } = await apiCall<{ agents: { namespace: string }[] }>(cmd, o, 'GET', `${API_BASE}/agents`);
        const known = [...new Set(agents.map((a) => a.namespace))].sort();
        if (!known.includes(namespace)) {
          const hasPolicy = await apiCall(cmd, o, 'GET', `${API_BASE}/policies/${encodeURIComponent(namespace)}`).then(
            () => true,
            (err: unknown) => {
              if ((err as { code?: string }).code === 'ENOTFOUND') return false;
              throw err;
            },
          );
          if (!hasPolicy) {
            throw new UsageError(`namespace ${namespace} has no agents and no policy; namespaces with agents: ${known.join(', ') || 'none'}. For agents you will enroll later, add --new-namespace`);
          }
        }
      }
      const res = await apiCall<{ updatedAt: string }>(cmd, o, 'PUT', `${API_BASE}/policies/${encodeURIComponent(namespace)}`, doc);
      console.log(`policy of ${namespace} set at ${res.updatedAt}`);
    },
  );
}

interface AdminUserRow {
  name: string;
  role: string;
  createdAt: string;
  createdBy: string;
}

/**
 * `lattice admin user add|ls|rm` and `lattice admin whoami`: per-user admin identities (README "Admin
 * identities"). `add` prints the user's token once; only its hash is kept, by the cluster.
 */
export function registerAdminUsers(program: Command): void {
  const admin = group(program, 'admin', 'admin identities of the control plane');
  const user = admin.command('user').description('admin users: each has its own token and a role (admin | approver | viewer)');
  withApiOptions(
    user
      .command('add')
      .description('add an admin user and print its token (once: keep it, it is not stored)')
      .argument('<name>', 'a DNS label, e.g. alice')
      .requiredOption('--role <role>', 'admin (everything) | approver (reads + approve/reject) | viewer (reads + proposals)')
      .option('--json', 'print {user, token} as JSON'),
  ).action(async (name: string, o: ApiOpts & { role: string; json?: boolean }, cmd: Command) => {
    if (!ADMIN_ROLES.includes(o.role as never)) throw new UsageError(`--role ${o.role} is not a role; use one of: ${ADMIN_ROLES.join(', ')}`);
    const res = await apiCall<{ user: AdminUserRow; token: string }>(cmd, o, 'POST', `${API_BASE}/admin-users`, { name, role: o.role });
    if (o.json) console.log(JSON.stringify(res));
    else {
      console.log(res.token);
      console.error(`admin user ${res.user.name} (${res.user.role}) added; the token above is shown only now (pass it as --admin-token or $LATTICE_ADMIN_TOKEN)`);
    }
  });
  withApiOptions(user.command('ls').description('list admin users (root is the admin-token file)').option('--json', 'print JSON')).action(
    async (o: ApiOpts & { json?: boolean }, cmd: Command) => {
      const res = await apiCall<{ users: AdminUserRow[] }>(cmd, o, 'GET', `${API_BASE}/admin-users`);
      if (o.json) {
        console.log(JSON.stringify(res.users));
        return;
      }
      const rows = [['NAME', 'ROLE', 'CREATED', 'BY'], ...res.users.map((u) => [u.name, u.role, u.createdAt, u.createdBy])];
      const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
      for (const r of rows) console.log(r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd());
    },
  );
  withApiOptions(
    user
      .command('set')
      .description('change an admin user\'s role; its token stays valid and the new role applies from its next request')
      .argument('<name>')
      .requiredOption('--role <role>', 'admin | approver | viewer'),
  ).action(async (name: string, o: ApiOpts & { role: string }, cmd: Command) => {
    if (!ADMIN_ROLES.includes(o.role as never)) throw new UsageError(`--role ${o.role} is not a role; use one of: ${ADMIN_ROLES.join(', ')}`);
    const res = await apiCall<{ user: AdminUserRow }>(cmd, o, 'PATCH', `${API_BASE}/admin-users/${encodeURIComponent(name)}`, { role: o.role });
    console.log(`admin user ${res.user.name} is now ${res.user.role}`);
  });
  withApiOptions(user.command('rm').description('remove an admin user: its token is refused from the next request on, on every control plane').argument('<name>')).action(
    async (name: string, o: ApiOpts, cmd: Command) => {
      await apiCall(cmd, o, 'DELETE', `${API_BASE}/admin-users/${encodeURIComponent(name)}`);
      console.log(`removed admin user ${name}`);
    },
  );
  withApiOptions(admin.command('whoami').description('the admin user and role of the token in use')).action(async (o: ApiOpts, cmd: Command) => {
    const res = await apiCall<{ name: string; role: string }>(cmd, o, 'GET', `${API_BASE}/whoami`);
    console.log(`${res.name} (${res.role})`);
  });
}
