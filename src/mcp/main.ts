#!/usr/bin/env node
/**
 * The `lattice-mcp` bin: the same server as `lattice mcp`, for MCP clients configured with a command
 * and no arguments. Settings come from the environment: LATTICE_API (default: the URL a control plane
 * started with LATTICE_STATE_DIR wrote, else http://127.0.0.1:8470),
 * LATTICE_ADMIN_TOKEN (an admin user's token, e.g. a viewer's: proposals are recorded as that user; default the
 * admin-token file of LATTICE_STATE_DIR, i.e. root), LATTICE_CA (the CA of an https:// API).
 * Errors go to stderr (stdout is the protocol) and exit 1.
 */
import { runMcpStdio } from './stdio.js';

try {
  await runMcpStdio({});
} catch (err) {
  process.stderr.write(`lattice-mcp: ${(err as Error).message}\n`);
  process.exitCode = 1;
}
