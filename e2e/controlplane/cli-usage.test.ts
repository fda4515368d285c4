/**
 * Admin CLI options that do what their names say (issue 22, items 4 and 9), against a running control
 * plane: refused options with the fix, every policy problem on its own line, namespaces and agents by name.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane, type ControlPlaneFixture } from '../support/control-plane.js';
import { enroll } from '../../src/enroll/index.js';
import { cliRun, wgKey } from './helpers.js';

let dir: string;
let cp: ControlPlaneFixture['cp'];
let api: string;

let closeCp: (() => Promise<void>) | undefined;

beforeAll(async () => {
  ({ dir, cp, api, close: closeCp } = await startControlPlane('cli-usage'));
});
afterAll(async () => {
  await closeCp?.();
});

const lattice = (...args: string[]) => cliRun(['--state-dir', dir, ...args, '--api', api]);

describe('token create', () => {
  it.each([
    [['--preset', 'foo'], /^lattice: --preset: no policy presets exist; .*--policy FILE/],
    [['--enforcement', 'audit'], /^lattice: --enforcement is now --tool-enforcement: it governs agent-API tool calls only/],
    [['--tool-enforcement', 'lenient'], /^lattice: --tool-enforcement lenient is not a mode; use one of: enforce, audit, disabled/],
    [['--limit', '2x'], /^lattice: --limit 2x must be a positive integer/],
  ])('%j exits 2 with the fix', async (extra, message) => {
    const r = await lattice('token', 'create', '--namespace', 'u1', ...extra);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr.split('\n')[0]).toMatch(message);
  });

  it('a policy file with several problems lists every one, one per line', async () => {
    const pol = join(dir, 'bad-policy.json');
    await writeFile(pol, JSON.stringify({
      version: 1,
      egress: [
        { id: 'a', action: 'allow', cidrs: ['10.0.0.0/33'] },
        { id: 'b', action: 'allow', cidrs: ['10.0.0.1/24'] },
        { id: 'c', action: 'allow', cidrs: ['10.77.0.0/16'], port: [80] },
      ],
    }));
    const r = await lattice('token', 'create', '--namespace', 'u1', '--policy', pol);
    expect(r.code).toBe(2);
    const lines = r.stderr.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^lattice: policy file .*bad-policy\.json has 3 problems:$/);
    expect(lines.slice(1)).toEqual([
      expect.stringMatching(/^ {2}egress\[0\]\.cidrs\[0\]: /),
      expect.stringMatching(/^ {2}egress\[1\]\.cidrs\[0\]: /),
      expect.stringMatching(/^ {2}egress\[2\]\.port: .*did you mean "ports"/),
    ]);
  });

  it('--tool-enforcement audit reaches the enrolled identity', async () => {
    const t = await lattice('token', 'create', '--namespace', 'u2', '--tool-enforcement', 'audit');
    expect(t.code, t.stderr).toBe(0);
    const e = await enroll({ controlPlaneUrl: cp.info.nats, token: t.stdout.trim(), name: 'auditor', publicKey: wgKey() });
    expect(e.modes.enforcement).toBe('audit');
  });
});

describe('names instead of ids, choices instead of silence', () => {
  it('policy set on a namespace nobody uses is refused with the known ones; --new-namespace sets it', async () => {
    const t = await lattice('token', 'create', '--namespace', 'known', '--limit', '1');
    await enroll({ controlPlaneUrl: cp.info.nats, token: t.stdout.trim(), name: 'member', publicKey: wgKey() });
    const pol = join(dir, 'ok-policy.json');
    await writeFile(pol, JSON.stringify({ version: 1 }));
    const typo = await lattice('policy', 'set', 'knwon', pol);
    expect(typo.code).toBe(2);
    expect(typo.stderr.trim()).toMatch(/^lattice: namespace knwon has no agents and no policy; namespaces with agents: .*known.*--new-namespace$/);
    expect((await lattice('policy', 'set', 'known', pol)).code).toBe(0);
    const fresh = await lattice('policy', 'set', 'later', pol, '--new-namespace');
    expect(fresh.code, fresh.stderr).toBe(0);
    expect((await lattice('policy', 'set', 'later', pol)).code).toBe(0); // it has a policy now
  });

  it('audit events --agent takes a name (ns/name when shared) and refuses unknown or ambiguous ones with the choices', async () => {
    for (const ns of ['named', 'other']) {
      const t = await lattice('token', 'create', '--namespace', ns, '--limit', '1');
      await enroll({ controlPlaneUrl: cp.info.nats, token: t.stdout.trim(), name: 'findme', publicKey: wgKey() });
    }
    const ambiguous = await lattice('audit', 'events', '--agent', 'findme');
    expect(ambiguous.code).toBe(2);
    expect(ambiguous.stderr.trim()).toMatch(/^lattice: --agent findme names 2 agents; pick one: named\/findme, other\/findme/);
    const exact = await lattice('audit', 'events', '--agent', 'named/findme', '--json');
    expect(exact.code, exact.stderr).toBe(0);
    const byNamespace = await lattice('audit', 'events', '--agent', 'findme', '--namespace', 'other', '--json');
    expect(byNamespace.code, byNamespace.stderr).toBe(0);
    const unknown = await lattice('audit', 'events', '--agent', 'nobody');
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/^lattice: --agent nobody: no such agent; known agents: .*named\/findme/);
  });
});

describe('a value or name the control plane refuses is bad usage (exit 2), as one checked locally', () => {
  it.each([
    [['token', 'create', '--namespace', 'u1', '--ttl', '5'], /^lattice: control plane refused: .*5/],
    [['agent', 'revoke', 'nosuch', '--namespace', 'u1'], /^lattice: control plane refused: .*nosuch/],
    [['token', 'create', '--namespace', 'u1', '--tools', 'list_peers,frob'], /^lattice: control plane refused: allowedTools: no tool "frob"; the agent API's tools are list_peers, check_connectivity, get_policy, request_egress, delegate$/],
    [['audit', 'events', '--type', 'flowx'], /^lattice: control plane refused: .*flowx/],
  ])('%j exits 2 with one line', async (args, message) => {
    const r = await lattice(...args);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(message)]);
  });
});

describe('admin commands find the API of the control plane started with the same state dir', () => {
  it('agent ls with no --api reaches the control plane on its non-default port; --api and $LATTICE_API still win', async () => {
    expect(new URL(api).port).not.toBe('8470');
    const found = await cliRun(['--state-dir', dir, 'agent', 'ls', '--json'], { LATTICE_API: '' });
    expect(found.code, found.stderr).toBe(0);
    const wrong = 'http://127.0.0.1:9';
    const viaEnv = await cliRun(['--state-dir', dir, 'agent', 'ls'], { LATTICE_API: wrong });
    expect(viaEnv.code).toBe(1);
    expect(viaEnv.stderr.trim().split('\n')).toEqual([expect.stringContaining(`cannot reach the control-plane API at ${wrong} `)]);
    const viaFlag = await cliRun(['--state-dir', dir, 'agent', 'ls', '--api', wrong], { LATTICE_API: '' });
    expect(viaFlag.stderr).toContain(`at ${wrong} `);
  });
});

describe('agent ls --namespace with no agents there', () => {
  it('prints the header, and on stderr the namespaces that have agents (a typo is the usual cause)', async () => {
    const r = await lattice('agent', 'ls', '--namespace', 'nosuch-ns');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim()).toMatch(/^NAMESPACE\s+NAME/);
    expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^no agents in namespace nosuch-ns; namespaces with agents: /)]);
  });
});
