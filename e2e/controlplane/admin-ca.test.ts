import { execa } from 'execa';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startControlPlane, type StartedControlPlane } from '../../src/controlplane/index.js';
import { CLI, requireBinary } from '../support/env.js';
import { cleanup, tempDir } from './helpers.js';

/**
 * Admin commands against a real HTTPS control plane (#12 item 2): the CA comes from --ca, from
 * $LATTICE_CA, or, with the control plane's own state dir, from its control-plane/tls/ca.pem; an
 * untrusted certificate is one line that names --ca.
 */
let dir: string;
let other: string;
let cp: StartedControlPlane;

beforeAll(async () => {
  await requireBinary('nats-server');
  dir = await tempDir('admin-ca-cp');
  other = await tempDir('admin-ca-elsewhere');
  cp = await startControlPlane({ stateDir: dir, natsPort: 0, http: { host: '127.0.0.1', port: 0 }, tls: true });
});
afterAll(async () => {
  await cp?.stop();
  await cleanup(dir, other);
});

const lattice = (args: string[], env: Record<string, string> = {}) =>
  execa(process.execPath, [CLI, ...args], { reject: false, stdin: 'ignore', env: { LATTICE_CA: '', ...env } });

describe('admin CLI over HTTPS', () => {
  it("with the control plane's state dir: the state dir's CA is trusted without any option", async () => {
    expect(cp.httpUrl).toMatch(/^https:/);
    const r = await lattice(['--state-dir', dir, 'agent', 'ls', '--json', '--api', cp.httpUrl!]);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(JSON.parse(String(r.stdout))).toEqual([]);
  });

  it('from elsewhere: refused in one line naming --ca; --ca FILE and LATTICE_CA=FILE work', async () => {
    const base = ['--state-dir', other, 'agent', 'ls', '--json', '--api', cp.httpUrl!, '--admin-token', cp.adminToken];
    const untrusted = await lattice(base);
    expect(untrusted.exitCode).not.toBe(0);
    expect(String(untrusted.stderr).trim().split('\n')).toHaveLength(1);
    expect(String(untrusted.stderr)).toMatch(/does not trust .*--ca/);
    const ca = join(dir, 'control-plane', 'tls', 'ca.pem');
    const withFlag = await lattice([...base, '--ca', ca]);
    expect(withFlag.exitCode, String(withFlag.stderr)).toBe(0);
    const withEnv = await lattice(base, { LATTICE_CA: ca });
    expect(withEnv.exitCode, String(withEnv.stderr)).toBe(0);
    const missing = await lattice([...base, '--ca', join(other, 'nope.pem')]);
    expect(missing.exitCode).not.toBe(0);
    expect(String(missing.stderr)).toMatch(/cannot read the CA file .*nope\.pem \(--ca\)/);
  });
});
