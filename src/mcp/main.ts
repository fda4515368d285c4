#!/usr/bin/env node
/**
 * The `lattice-mcp` bin: the same server as `lattice mcp`, for MCP clients configured with a command
 * and no arguments. Settings come from the environment: LATTICE_API (default http://127.0.0.1:8470),
 * LATTICE_ADMIN_TOKEN (or the admin-token file of LATTICE_STATE_DIR), LATTICE_MCP_PROPOSER (default "mcp").
 * Errors go to stderr (stdout is the protocol) and exit 1.
 */
import { runMcpStdio } from './stdio.js';

try {
  await runMcpStdio({ proposer: process.env.LATTICE_MCP_PROPOSER });
} catch (err) {
  process.stderr.write(`lattice-mcp: ${(err as Error).message}\n`);
  process.exitCode = 1;
}
