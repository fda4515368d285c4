import { execa } from 'execa';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API_BASE, startControlPlane, type StartedControlPlane } from '../../src/controlplane/index.js';
import type { StartedNatsServer } from '../../src/natsserver/server.js';
import { CLI } from '../support/env.js';
import { cleanup, tempDir, withNats } from './helpers.js';

/**
 * Issue #21 / #20 item 6: admin users with roles, on two control-plane instances of one cluster (one NATS,
 * two state dirs). Users are added and removed with the CLI on one instance and used on the other.
 */
let dirA: string;
let dirB: string;
let nats: StartedNatsServer;
let cpA: StartedControlPlane;
let cpB: StartedControlPlane;
const tokens: Record<string, string> = {};

const lattice = (cp: StartedControlPlane, token: string, ...args: string[]) =>
  execa(process.execPath, [CLI, '--state-dir', dirA, ...args, '--api', cp.httpUrl!, '--admin-token', token], { reject: false, stdin: 'ignore' });
const http = (cp: StartedControlPlane, token: string, method: string, path: string, body?: unknown) =>
  fetch(`${cp.httpUrl}${API_BASE}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
const policy = { version: 1, egress: [{ id: 'web', action: 'allow', cidrs: ['203.0.113.0/24'], ports: [443], protocol: 'tcp' }] };

beforeAll(async () => {
  dirA = await tempDir('admin-users-A');
  dirB = await tempDir('admin-users-B');
  nats = await withNats(dirA);
  cpA = await startControlPlane({ stateDir: dirA, natsUrl: nats.url, http: { host: '127.0.0.1', port: 0 } });
  cpB = await startControlPlane({ stateDir: dirB, natsUrl: nats.url, http: { host: '127.0.0.1', port: 0 } });
  for (const [name, role] of [['vera', 'viewer'], ['alice', 'approver'], ['bob', 'approver']]) {
    const r = await lattice(cpA, cpA.adminToken, 'admin', 'user', 'add', name, '--role', role);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    tokens[name] = String(r.stdout).trim();
    expect(String(r.stderr)).toMatch(/shown only now/);
  }
});
afterAll(async () => {
  await cpB?.stop();
  await cpA?.stop();
  await nats?.stop();
  await cleanup(dirA, dirB);
});

describe('admin users and roles', () => {
  it('lists the users (root first) without their tokens; whoami names the token\'s user on either instance', async () => {
    const ls = await lattice(cpB, cpA.adminToken, 'admin', 'user', 'ls', '--json');
    expect(ls.exitCode, String(ls.stderr)).toBe(0);
    expect(JSON.parse(String(ls.stdout)).map((u: { name: string; role: string }) => `${u.name}:${u.role}`)).toEqual(['root:admin', 'alice:approver', 'bob:approver', 'vera:viewer']);
    expect(String(ls.stdout)).not.toContain(tokens.vera.split('.')[2]);
    const who = await lattice(cpB, tokens.vera, 'admin', 'whoami');
    expect(String(who.stdout).trim()).toBe('vera (viewer)');
  });

  it('a viewer gets 403 with a one-line reason on approve and on policy set', async () => {
    const p = await http(cpA, tokens.bob, 'POST', '/approvals', { kind: 'set-policy', namespace: 'team', policy });
    expect(p.status).toBe(201);
    const { id } = (await p.json()) as { id: string };
    const approve = await lattice(cpB, tokens.vera, 'approvals', 'approve', id);
    expect(approve.exitCode).not.toBe(0);
    expect(String(approve.stderr).trim().split('\n')).toHaveLength(1);
    expect(String(approve.stderr)).toMatch(/user vera has role viewer; POST .*\/approve needs role approver/);
    const file = join(dirA, 'policy.json');
    await writeFile(file, JSON.stringify(policy));
    const set = await lattice(cpB, tokens.vera, 'policy', 'set', 'team', file, '--new-namespace');
    expect(set.exitCode).not.toBe(0);
    expect(String(set.stderr)).toMatch(/user vera has role viewer; PUT .*\/policies\/team needs role admin/);
    expect((await http(cpA, tokens.vera, 'PUT', '/policies/team', policy)).status).toBe(403);
  });

  it('an approver approves a change another user proposed, and both are recorded; self-approval is refused', async () => {
    const p = await http(cpA, tokens.vera, 'POST', '/approvals', { kind: 'set-policy', namespace: 'shop', policy, reason: 'web' });
    const { id, proposer } = (await p.json()) as { id: string; proposer: string };
    expect(proposer).toBe('vera');
    const ok = await lattice(cpB, tokens.alice, 'approvals', 'approve', id, '--json');
    expect(ok.exitCode, String(ok.stderr)).toBe(0);
    expect(JSON.parse(String(ok.stdout)).approval).toMatchObject({ proposer: 'vera', decidedBy: 'alice', status: 'approved' });
    expect(((await (await http(cpA, tokens.vera, 'GET', '/policies/shop')).json()) as { policy: unknown }).policy).toEqual(policy);

    const own = (await (await http(cpA, tokens.alice, 'POST', '/approvals', { kind: 'set-policy', namespace: 'own', policy })).json()) as { id: string };
    const self = await lattice(cpA, tokens.alice, 'approvals', 'approve', own.id);
    expect(self.exitCode).not.toBe(0);
    expect(String(self.stderr)).toMatch(/proposed by alice, who may not approve it too/);
    // Root is bound by it too.
    const rootOwn = (await (await http(cpA, cpA.adminToken, 'POST', '/approvals', { kind: 'set-policy', namespace: 'rootns', policy })).json()) as { id: string };
    expect((await http(cpB, cpA.adminToken, 'POST', `/approvals/${rootOwn.id}/approve`, {})).status).toBe(403);
    // A body naming another approver is refused, not recorded.
    const lie = await http(cpA, tokens.bob, 'POST', `/approvals/${own.id}/approve`, { by: 'alice' });
    expect(lie.status).toBe(400);
    const byFlag = await lattice(cpA, tokens.bob, 'approvals', 'approve', own.id, '--by', 'carol');
    expect(String(byFlag.stderr)).toMatch(/--by is gone/);
    const show = (await (await http(cpA, tokens.bob, 'GET', `/approvals/${own.id}`)).json()) as { status: string };
    expect(show.status).toBe('pending');
  });

  it('a removed user gets 401 at once on another control-plane instance', async () => {
    const add = await lattice(cpA, cpA.adminToken, 'admin', 'user', 'add', 'temp', '--role', 'approver');
    const token = String(add.stdout).trim();
    expect((await http(cpB, token, 'GET', '/agents')).status).toBe(200);
    const rm = await lattice(cpA, cpA.adminToken, 'admin', 'user', 'rm', 'temp');
    expect(rm.exitCode, String(rm.stderr)).toBe(0);
    // The very next request, on the other instance: no cache to expire.
    expect((await http(cpB, token, 'GET', '/agents')).status).toBe(401);
    const cli = await lattice(cpB, token, 'agent', 'ls');
    expect(String(cli.stderr)).toMatch(/401|removed admin token/);
  });
});
