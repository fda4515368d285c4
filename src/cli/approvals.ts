import { Option, type Command } from 'commander';
import { UsageError } from '../errors.js';
import { API_BASE, type ApprovalRecord } from '../controlplane/index.js';
import { callApi, withApiOptions, type ApiOpts } from './api.js';

/**
 * `lattice approvals ls|show|approve|reject`: the queue of changes proposed (e.g. by `lattice mcp`)
 * that wait for a human. Talks to the admin HTTP API like `lattice agent`/`policy`. The approver recorded
 * is the admin user of the token (README "Admin identities"); there is no `--by`.
 */
const BY_GONE = '--by is gone: the control plane records the admin user of the token (--admin-token / $LATTICE_ADMIN_TOKEN); to act as another user, use that user\'s token';
const byOption = () => new Option('--by <name>').hideHelp();
const iso = (ms?: number) => (ms === undefined ? '-' : new Date(ms).toISOString());

function printOne(a: ApprovalRecord): void {
  console.log(`approval ${a.id}`);
  console.log(`  kind:      ${a.kind}`);
  console.log(`  status:    ${a.status}`);
  console.log(`  summary:   ${a.summary}`);
  console.log(`  proposer:  ${a.proposer}${a.reason ? ` (reason: ${a.reason})` : ''}`);
  console.log(`  proposed:  ${iso(a.createdAt)}`);
  if (a.base.key) console.log(`  base:      ${a.base.bucket}/${a.base.key} revision ${a.base.revision}${a.base.revision === 0 ? ' (absent)' : ''}`);
  if (a.decidedBy) console.log(`  decided:   ${iso(a.decidedAt)} by ${a.decidedBy}${a.note ? ` (${a.note})` : ''}`);
  if (a.result !== undefined) console.log(`  result:    ${JSON.stringify(a.result)}`);
  console.log('  diff:');
  for (const l of (a.diff || '(no change)').split('\n')) console.log(`    ${l}`);
}

/** Register `approvals ls|show|approve|reject` on `program`. */
export function registerApprovals(program: Command): void {
  const g = program.command('approvals').description('changes proposed by tools (lattice mcp) that wait for a human');
  withApiOptions(
    g
      .command('ls')
      .description('list approvals (pending ones unless --status or --all)')
      .option('--status <s>', 'pending | applying | approved | rejected | stale | failed', 'pending')
      .option('--all', 'every status')
      .option('--json', 'print JSON'),
  ).action(async (o: ApiOpts & { status: string; all?: boolean; json?: boolean }, cmd: Command) => {
    const res = await callApi<{ approvals: ApprovalRecord[] }>(cmd, o, 'GET', `${API_BASE}/approvals`, { query: { status: o.all ? undefined : o.status } });
    if (o.json) {
      console.log(JSON.stringify(res.approvals));
      return;
    }
    if (res.approvals.length === 0) {
      console.log(o.all ? 'no approvals' : `no ${o.status} approvals`);
      return;
    }
    const rows = [['ID', 'STATUS', 'KIND', 'PROPOSER', 'PROPOSED', 'SUMMARY']];
    for (const a of res.approvals) rows.push([a.id, a.status, a.kind, a.proposer, iso(a.createdAt), a.summary]);
    const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
    for (const r of rows) console.log(r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd());
  });
  withApiOptions(g.command('show').description('one approval with its diff').argument('<id>').option('--json', 'print JSON')).action(
    async (id: string, o: ApiOpts & { json?: boolean }, cmd: Command) => {
      const a = await callApi<ApprovalRecord>(cmd, o, 'GET', `${API_BASE}/approvals/${encodeURIComponent(id)}`);
      if (o.json) console.log(JSON.stringify(a));
      else printOne(a);
    },
  );
  withApiOptions(
    g
      .command('approve')
      .description('apply a pending change (refused if what it changes moved since it was proposed)')
      .argument('<id>')
      .addOption(byOption())
      .option('--note <text>', 'a note kept with the decision')
      .option('--json', 'print JSON'),
  ).action(async (id: string, o: ApiOpts & { by?: string; note?: string; json?: boolean }, cmd: Command) => {
    if (o.by !== undefined) throw new UsageError(BY_GONE);
    const res = await callApi<{ approval: ApprovalRecord; token?: string }>(cmd, o, 'POST', `${API_BASE}/approvals/${encodeURIComponent(id)}/approve`, {
      body: { ...(o.note ? { note: o.note } : {}) },
    });
    if (o.json) {
      console.log(JSON.stringify(res));
      return;
    }
    console.log(`approved ${id}: ${res.approval.summary}`);
    if (res.token) console.log(`token (shown once): ${res.token}`);
  });
  withApiOptions(
    g
      .command('reject')
      .description('reject a pending change; nothing is applied')
      .argument('<id>')
      .addOption(byOption())
      .option('--note <text>', 'why'),
  ).action(async (id: string, o: ApiOpts & { by?: string; note?: string }, cmd: Command) => {
    if (o.by !== undefined) throw new UsageError(BY_GONE);
    await callApi(cmd, o, 'POST', `${API_BASE}/approvals/${encodeURIComponent(id)}/reject`, { body: { ...(o.note ? { note: o.note } : {}) } });
    console.log(`rejected ${id}`);
  });
}
