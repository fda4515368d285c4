import type { Command } from 'commander';
import { runMcpStdio } from '../mcp/stdio.js';
import { globalOpts } from './run.js';

/** `lattice mcp`: the MCP server over stdio (see src/mcp/server.ts). */
export function registerMcp(program: Command): void {
  program
    .command('mcp')
    .description('serve the Model Context Protocol over stdio: read tools, and write tools that only propose changes for `lattice approvals`')
    .option('--api <url>', 'control-plane admin API (default: $LATTICE_API or http://127.0.0.1:8470)')
    .option('--admin-token <token>', 'admin bearer token (default: $LATTICE_ADMIN_TOKEN or the state dir file)')
    .option('--proposer <name>', 'name recorded as the proposer of every change', process.env.LATTICE_MCP_PROPOSER ?? 'mcp')
    .action(async (o: { api?: string; adminToken?: string; proposer: string }, cmd: Command) => {
      await runMcpStdio({ api: o.api, adminToken: o.adminToken, stateDir: globalOpts(cmd).stateDir, proposer: o.proposer });
    });
}
