import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { credentialsPath, deleteCredentials, loadCredentials, saveCredentials, type Credentials } from '../../src/enroll/credentials.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ltcp-cred-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const creds = (): Credentials => ({
  version: 1,
  name: 'sb1',
  namespace: 'n',
  agentId: 'id',
  privateKey: Buffer.alloc(32, 1).toString('base64'),
  publicKey: Buffer.alloc(32, 2).toString('base64'),
  address: { ipv4: '10.77.0.1', ipv6: 'fd77::1' },
  jwt: 'h.p.s',
  jwtExpiresAt: 1,
  allowedTools: [],
  allowedNamespaces: [],
  modes: { sandbox: 'gvisor', enforcement: 'enforce' },
  controlPlane: { url: 'nats://127.0.0.1:4222', clusterId: 'c', issuer: 'lattice:c' },
  enrolledAt: 1,
});

describe('credential store', () => {
  it('persists 0600 and reloads the same identity', async () => {
    expect(await loadCredentials(dir, 'sb1')).toBeNull();
    const path = await saveCredentials(dir, creds());
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect((await stat(join(dir, 'credentials'))).mode & 0o777).toBe(0o700);
    expect(await loadCredentials(dir, 'sb1')).toEqual(creds());
    expect(await deleteCredentials(dir, 'sb1')).toBe(true);
    expect(await loadCredentials(dir, 'sb1')).toBeNull();
  });

  it('refuses a world-readable file, a damaged file, and a path-like name', async () => {
    const path = await saveCredentials(dir, creds());
    await chmod(path, 0o644);
    await expect(loadCredentials(dir, 'sb1')).rejects.toThrow(/chmod 0600/);
    await chmod(path, 0o600);
    await writeFile(path, '{"version":1,', { mode: 0o600 });
    await expect(loadCredentials(dir, 'sb1')).rejects.toThrow(/not valid JSON/);
    await writeFile(path, '{}', { mode: 0o600 });
    await expect(loadCredentials(dir, 'sb1')).rejects.toThrow(/incomplete/);
    expect(() => credentialsPath(dir, '../x')).toThrow(/DNS label/);
    expect(await readFile(path, 'utf8')).toBe('{}');
  });
});
