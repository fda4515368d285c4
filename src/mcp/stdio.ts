import { readFile } from 'node:fs/promises';
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js';
import { readAdminToken } from '../controlplane/secrets.js';
import { findApiUrl } from '../controlplane/index.js';
import { resolveStateDir, statePaths } from '../state.js';
import { apiCa } from '../httpclient.js';
import { AdminApiClient } from './apiclient.js';
import { createMcpServer } from './server.js';

export interface McpStdioOptions {
  api?: string;
  adminToken?: string;
  stateDir?: string;
  /** CA file (PEM) of an https:// API; default $LATTICE_CA, else the state dir's control-plane/tls/ca.pem. */
  ca?: string;
}

/**
 * Serve MCP over stdin/stdout until stdin closes. stdout carries only protocol messages (JSON-RPC,
 * one per line); nothing else may write there. Resolves when the client disconnects.
 */
export async function runMcpStdio(o: McpStdioOptions): Promise<void> {
  const stateDir = resolveStateDir(o.stateDir);
  const url = await findApiUrl(o.api, stateDir);
  const token = await readAdminToken(statePaths(stateDir).controlPlane, o.adminToken);
  const ca = await apiCa(url, o, stateDir);
  const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  const server = createMcpServer({ api: new AdminApiClient({ url, token, ...(ca !== undefined ? { ca } : {}) }), version: pkg.version });
  const transport = new StdioServerTransport();
  const closed = new Promise<void>((resolve) => {
    transport.onclose = () => resolve();
    process.stdin.once('end', () => resolve());
  });
  await server.connect(transport);
  await closed;
  await server.close();
}
