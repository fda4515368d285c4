import { seededRandom } from '../../test/support/random.js';
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane, type ControlPlaneFixture } from '../support/control-plane.js';
import { enroll, loadCredentials } from '../../src/enroll/index.js';
import { cleanup, cliRun, ROOT, tempDir, wgKey } from './helpers.js';
import { freePort } from '../../src/natsserver/server.js';

let dir: string;
let nats: ControlPlaneFixture['nats'];
let cp: ControlPlaneFixture['cp'];
let api: string;

let closeCp: (() => Promise<void>) | undefined;

beforeAll(async () => {
  ({ dir, nats, cp, api, close: closeCp } = await startControlPlane('cli'));
});
afterAll(async () => {
  await closeCp?.();
});

const lattice = (...args: string[]) => cliRun(['--state-dir', dir, ...args, ...(args.includes('--api') ? [] : ['--api', api])]);

function oneLineError(r: { code: number; stderr: string }, re: RegExp): void {
  expect(r.code).not.toBe(0);
  const lines = r.stderr.trimEnd().split('\n');
  expect(lines, r.stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^lattice: /);
  expect(lines[0]).toMatch(re);
}

describe('admin CLI against a running control plane', () => {
  it('token create | agent ls | policy set | agent revoke', async () => {
    const t = await lattice('token', 'create', '--namespace', 'demo', '--tools', 'list_peers,get_policy', '--limit', '1', '--ttl', '1h');
    expect(t.code, t.stderr).toBe(0);
    const token = t.stdout.trim();
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    const e = await enroll({ controlPlaneUrl: cp.info.nats, token, name: 'cli-agent', publicKey: wgKey() });
    expect(e.allowedTools).toEqual(['list_peers', 'get_policy']);

    const ls = await lattice('agent', 'ls', '--json');
    expect(ls.code, ls.stderr).toBe(0);
    expect(JSON.parse(ls.stdout)).toEqual([expect.objectContaining({ name: 'cli-agent', namespace: 'demo', ipv4: e.address.ipv4 })]);
    const table = await lattice('agent', 'ls', '--namespace', 'demo');
    expect(table.stdout).toMatch(/^NAMESPACE\s+NAME/);
    expect(table.stdout).toContain('cli-agent');

    const pol = join(dir, 'policy.json');
    await writeFile(pol, JSON.stringify({ version: 1, mode: 'audit' }));
    const ps = await lattice('policy', 'set', 'demo', pol);
    expect(ps.code, ps.stderr).toBe(0);

    const rv = await lattice('agent', 'revoke', 'cli-agent', '--namespace', 'demo');
    expect(rv.code, rv.stderr).toBe(0);
    expect(rv.stdout.trim()).toBe('revoked demo/cli-agent');
    expect(JSON.parse((await lattice('agent', 'ls', '--json')).stdout)).toEqual([]);
  });

  it('errors are one line', async () => {
    oneLineError(await lattice('token', 'create', '--namespace', 'Not_A_Label'), /namespace must be a DNS label/);
    oneLineError(await lattice('agent', 'revoke', 'ghost', '--namespace', 'demo'), /no agent ghost in namespace demo/);
    oneLineError(await lattice('agent', 'ls', '--admin-token', 'wrong'), /admin token/);
    const deadApi = `http://127.0.0.1:${await freePort()}`;
    oneLineError(await lattice('agent', 'ls', '--api', deadApi), new RegExp(`cannot reach the control-plane API at ${deadApi}`));
    oneLineError(await lattice('policy', 'set', 'demo', join(dir, 'missing.json')), /cannot read policy file/);
    const bad = join(dir, 'bad.json');
    await writeFile(bad, '{"version": 1, "surprise": true}');
    oneLineError(await lattice('policy', 'set', 'demo', bad), /policy file .*bad\.json: surprise: unknown field/);
    await writeFile(bad, '{nope');
    oneLineError(await lattice('policy', 'set', 'demo', bad), /not valid JSON/);
    oneLineError(await lattice('token', 'create', '--namespace', 'demo', '--limit', 'many'), /--limit many/);
  });

  it('a state dir with loose permissions is refused', async () => {
    const loose = await tempDir('loose');
    try {
      const { mkdir, chmod } = await import('node:fs/promises');
      await mkdir(join(loose, 'control-plane'), { mode: 0o777 });
      await chmod(join(loose, 'control-plane'), 0o777);
      const r = await cliRun(['--state-dir', loose, 'control-plane', 'start', '--nats', nats.url, '--http', 'off']);
      oneLineError(r, /chmod 0700/);
    } finally {
      await cleanup(loose);
    }
  });
});

describe('credential writes under kill -9', () => {
  it('never leave a torn or empty credential file', async () => {
    const stateDir = await tempDir('kill9');
    const rnd = seededRandom(); // where in the write loop each kill lands
    try {
      for (let round = 0; round < 6; round++) {
        const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'e2e/controlplane/fixtures/cred-writer.ts'), stateDir], {
          cwd: ROOT,
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        await new Promise<void>((resolve, reject) => {
          child.stdout.once('data', () => resolve());
          child.once('exit', (c) => reject(new Error(`writer exited ${c}`)));
        });
        await new Promise((r) => setTimeout(r, 5 + rnd.int(150)));
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGKILL');
        await exited;
        const c = await loadCredentials(stateDir, 'victim');
        expect(c).not.toBeNull();
        expect(c!.jwt.length).toBeGreaterThanOrEqual(100);
        expect(c!.agentId).toMatch(/^agent-\d+$/);
      }
    } finally {
      await cleanup(stateDir);
    }
  });
});
