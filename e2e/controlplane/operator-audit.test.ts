/**
 * Operators' changes are in the audit trail in the name of the verified user who made them: a policy
 * set, a token created, an agent relabelled, an admin user added and removed (`lattice audit events`),
 * against a real `lattice control-plane start` and its audit stream.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enroll } from '../../src/enroll/index.js';
import { startControlPlane, type ControlPlaneFixture } from '../support/control-plane.js';
import { waitFor } from '../support/env.js';
import { cliRun, wgKey } from './helpers.js';

let fx: ControlPlaneFixture;
let alice: string;

const lattice = (token: string | undefined, ...args: string[]) =>
  cliRun(['--state-dir', fx.dir, ...args, '--api', fx.api, ...(token ? ['--admin-token', token] : [])]);

interface Event { type: string; by?: string; namespace?: string; agentId?: string; [k: string]: unknown }
async function eventsOf(type: string): Promise<Event[]> {
  const r = await lattice(undefined, 'audit', 'events', '--type', type, '--json');
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { events: Event[] }).events;
}
/** The events of `type` once `n` of them are in the stream (publishing is asynchronous to the request). */
async function awaitEvents(type: string, n: number): Promise<Event[]> {
  let got: Event[] = [];
  await waitFor(async () => (got = await eventsOf(type)).length >= n, 60_000, `${n} ${type} event(s)`);
  return got;
}

beforeAll(async () => {
  fx = await startControlPlane('operator-audit');
  const add = await lattice(undefined, 'admin', 'user', 'add', 'alice', '--role', 'admin');
  expect(add.code, add.stderr).toBe(0);
  alice = add.stdout.trim();
});
afterAll(async () => {
  await fx?.close();
});

describe('operators\' changes in the audit trail', () => {
  it('policy set, token create, agent label and user add/set/rm each name who did them; no secret is recorded', async () => {
    const pol = join(fx.dir, 'policy.json');
    await writeFile(pol, JSON.stringify({ version: 1, egress: [{ id: 'web', action: 'allow', cidrs: ['203.0.113.0/24'], ports: [443], protocol: 'tcp' }] }));
    const set = await lattice(alice, 'policy', 'set', 'ops', pol, '--new-namespace');
    expect(set.code, set.stderr).toBe(0);
    const tok = await lattice(alice, 'token', 'create', '--namespace', 'ops', '--limit', '1');
    expect(tok.code, tok.stderr).toBe(0);
    const joined = tok.stdout.trim();
    const r = await enroll({ controlPlaneUrl: fx.cp.info.nats, token: joined, name: 'db', publicKey: wgKey() });
    expect((await lattice(alice, 'agent', 'label', 'db', 'role=db', '--namespace', 'ops')).code).toBe(0);
    const vera = (await lattice(undefined, 'admin', 'user', 'add', 'vera', '--role', 'viewer')).stdout.trim();
    expect((await lattice(undefined, 'admin', 'user', 'set', 'vera', '--role', 'approver')).stdout.trim()).toBe('admin user vera is now approver');
    expect((await lattice(vera, 'admin', 'whoami')).stdout.trim()).toBe('vera (approver)'); // the same token
    const bad = await lattice(undefined, 'admin', 'user', 'set', 'vera', '--role', 'owner');
    expect(bad.code).toBe(2);
    expect(bad.stderr.trim()).toMatch(/^lattice: --role owner is not a role; use one of: viewer, approver, admin$/);
    expect((await lattice(undefined, 'admin', 'user', 'rm', 'vera')).code).toBe(0);

    const [policySet] = await awaitEvents('policy.set', 1);
    expect(policySet).toMatchObject({ namespace: 'ops', by: 'alice', rules: 1, policyHash: expect.stringMatching(/^sha256:[0-9a-f]{64}$/) });
    const [created] = await awaitEvents('token.created', 1);
    expect(created).toMatchObject({ namespace: 'ops', by: 'alice', limit: 1 });
    const [labelled] = await awaitEvents('labels.changed', 1);
    expect(labelled).toMatchObject({ namespace: 'ops', agentId: r.agentId, labels: ['role=db'], by: 'alice' });
    const users = await awaitEvents('user.changed', 4);
    expect(users.map((e) => `${String(e.user)} ${String(e.change)} ${String(e.role)} by ${e.by}`)).toEqual([
      'alice added admin by root',
      'vera added viewer by root',
      'vera role approver by root',
      'vera removed undefined by root',
    ]);
    // The token's secret appears nowhere in the trail.
    const all = JSON.stringify([policySet, created, labelled, ...users]);
    expect(all).not.toContain(joined);
    expect(all).not.toContain(alice.split('.')[2]);

    const text = await lattice(undefined, 'audit', 'events', '--type', 'policy.set');
    expect(text.stdout).toMatch(/policy\.set\s+.*sha256:[0-9a-f]{12} rules=1 by "alice"/);
  });
});
