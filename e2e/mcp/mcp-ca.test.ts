import { execa } from 'execa';
import { join } from 'node:path';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane, type StartedControlPlane } from '../../src/controlplane/index.js';
import { CLI, requireBinary } from '../support/env.js';
import { cleanup, tempDir } from '../controlplane/helpers.js';

/**
 * `lattice mcp --ca FILE` (and LATTICE_CA) against a real HTTPS control plane, from a state dir that does
 * not hold its CA; proposals are recorded as the admin user of the token the server runs with.
 */
let dir: string;
let other: string;
let cp: StartedControlPlane;
let viewerToken: string;

beforeAll(async () => {
  await requireBinary('nats-server');
  dir = await tempDir('mcp-ca-cp');
  other = await tempDir('mcp-ca-elsewhere');
  cp = await startControlPlane({ stateDir: dir, natsPort: 0, http: { host: '127.0.0.1', port: 0 }, tls: true });
  // The CLI trusts the CA of the control plane's own state dir; the user's token is printed once.
  const r = await execa(process.execPath, [CLI, '--state-dir', dir, 'admin', 'user', 'add', 'assistant', '--role', 'viewer', '--api', cp.httpUrl!], { reject: false, stdin: 'ignore', env: { LATTICE_CA: '' } });
  expect(r.exitCode, String(r.stderr)).toBe(0);
  viewerToken = String(r.stdout).trim();
});
afterAll(async () => {
  await cp?.stop();
  await cleanup(dir, other);
});

async function mcp(args: string[], env: Record<string, string> = {}): Promise<Client> {
  const c = new Client({ name: 'lattice-e2e-ca', version: '0.0.0' });
  await c.connect(
    new StdioClientTransport({
      command: process.execPath,
      args: [CLI, '--state-dir', other, 'mcp', '--api', cp.httpUrl!, '--admin-token', viewerToken, ...args],
      env: { PATH: process.env.PATH ?? '', LATTICE_LOG_LEVEL: 'error', LATTICE_CA: '', ...env },
      stderr: 'pipe',
    }),
  );
  return c;
}

async function call(c: Client, name: string, args: Record<string, unknown> = {}): Promise<{ isError: boolean; text: string }> {
  const r = (await c.callTool({ name, arguments: args })) as { isError?: boolean; content: { text: string }[] };
  return { isError: r.isError === true, text: r.content[0].text };
}

describe('lattice mcp over HTTPS', () => {
  it('without the CA: a tool error in one line naming --ca; with --ca or LATTICE_CA: data, and proposals are the token\'s user', async () => {
    expect(cp.httpUrl).toMatch(/^https:/);
    const ca = join(dir, 'control-plane', 'tls', 'ca.pem');
    const untrusted = await mcp([]);
    try {
      const r = await call(untrusted, 'list_agents');
      expect(r.isError).toBe(true);
      expect(r.text).toMatch(/does not trust .*--ca/);
      expect(r.text.split('\n')).toHaveLength(1);
    } finally {
      await untrusted.close();
    }
    for (const [args, env] of [[['--ca', ca], {}], [[], { LATTICE_CA: ca }]] as const) {
      const c = await mcp([...args], env);
      try {
        const r = await call(c, 'list_agents');
        expect(r.isError, r.text).toBe(false);
        expect(JSON.parse(r.text)).toMatchObject({ agents: [] });
      } finally {
        await c.close();
      }
    }
    const c = await mcp(['--ca', ca]);
    try {
      const p = await call(c, 'propose_set_policy', { namespace: 'team', policy: { version: 1, egress: [] } });
      expect(p.isError, p.text).toBe(false);
      const id = (JSON.parse(p.text) as { pendingId: string }).pendingId;
      const shown = await call(c, 'list_approvals');
      expect(shown.text).toContain(id);
      expect(JSON.parse(shown.text)).toMatchObject({ approvals: [expect.objectContaining({ id, proposer: 'assistant' })] });
    } finally {
      await c.close();
    }
  });
});
