import { Option, type Command } from 'commander';
import { UsageError } from '../errors.js';
import { runMcpStdio } from '../mcp/stdio.js';
import { globalOpts } from './run.js';

/** `lattice mcp`: the MCP server over stdio (see src/mcp/server.ts). */
export function registerMcp(program: Command): void {
  program
    .command('mcp')
    .description('serve the Model Context Protocol over stdio: read tools, and write tools that only propose changes for `lattice approvals`')
    .option('--api <url>', 'control-plane admin API (default: $LATTICE_API, else the URL a control plane started with this state dir wrote, else http://127.0.0.1:8470)')
    .option('--admin-token <token>', 'the bearer token of the admin user proposals are recorded as (default: $LATTICE_ADMIN_TOKEN or the state dir file, i.e. root)')
    .option('--ca <file>', "CA (PEM) of an https:// API (default: $LATTICE_CA, else the state dir's control-plane/tls/ca.pem when it exists)")
    .addOption(new Option('--proposer <name>').hideHelp())
    .action(async (o: { api?: string; adminToken?: string; ca?: string; proposer?: string }, cmd: Command) => {
      if (o.proposer !== undefined) {
        throw new UsageError('--proposer is gone: proposals are recorded as the admin user of the token; give lattice mcp its own user (lattice admin user add mcp --role viewer) and its token');
      }
      await runMcpStdio({ api: o.api, adminToken: o.adminToken, ca: o.ca, stateDir: globalOpts(cmd).stateDir });
    });
}
