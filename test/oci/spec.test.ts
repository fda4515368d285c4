import { describe, it, expect } from 'vitest';
import { buildSpec } from '../../src/oci/spec.js';
import { specProblems, assertValidSpec } from '../../src/oci/validate.js';

describe('buildSpec', () => {
  const spec = buildSpec({ args: ['/bin/sh'], rootfs: '/srv/rootfs', netnsPath: '/var/run/netns/lattice-x', env: ['A=1'] });

  it('is valid against oci/config.schema.json', async () => {
    expect(await specProblems(spec)).toEqual([]);
  });

  it('defaults to least privilege: read-only root, no capabilities, no new privileges', () => {
    expect(spec.root).toEqual({ path: '/srv/rootfs', readonly: true });
    expect(spec.process.capabilities.effective).toEqual([]);
    expect(spec.process.capabilities.bounding).toEqual([]);
    expect(spec.process.noNewPrivileges).toBe(true);
    expect(spec.mounts.find((m) => m.destination === '/tmp')).toMatchObject({ type: 'tmpfs' });
    expect(spec.linux.maskedPaths).toContain('/proc/kcore');
  });

  it('joins the given network namespace', () => {
    expect(spec.linux.namespaces).toContainEqual({ type: 'network', path: '/var/run/netns/lattice-x' });
  });

  it('adds a PATH unless the caller set one', () => {
    expect(spec.process.env[0]).toMatch(/^PATH=/);
    expect(buildSpec({ args: ['x'], env: ['PATH=/bin'] }).process.env).toEqual(['PATH=/bin']);
  });

  it('normalizes capability names', () => {
    const s = buildSpec({ args: ['x'], rootfs: '/r', capabilities: ['net_raw', 'CAP_NET_RAW', 'NET_BIND_SERVICE'] });
    expect(s.process.capabilities.effective).toEqual(['CAP_NET_BIND_SERVICE', 'CAP_NET_RAW']);
  });
});

describe('schema validation rejects what runsc would misread', () => {
  const base = () => buildSpec({ args: ['/bin/true'], rootfs: '/r' });
  it.each<[string, (s: ReturnType<typeof base>) => void, RegExp]>([
    ['empty args', (s) => { s.process.args = []; }, /\/process\/args/],
    ['relative cwd', (s) => { s.process.cwd = 'tmp'; }, /\/process\/cwd/],
    ['env without =', (s) => { s.process.env.push('BROKEN'); }, /\/process\/env/],
    ['negative uid', (s) => { s.process.user.uid = -1; }, /\/process\/user\/uid/],
    ['bad capability', (s) => { s.process.capabilities.effective = ['NET_RAW']; }, /capabilities\/effective/],
    ['unknown field', (s) => { (s.process as Record<string, unknown>).privileged = true; }, /privileged/],
    ['relative netns path', (s) => { s.linux.namespaces.push({ type: 'network', path: 'netns' }); }, /namespaces/],
    ['bad hostname', (s) => { s.hostname = 'no spaces allowed'; }, /hostname/],
  ])('%s', async (_name, mutate, problem) => {
    const s = base();
    mutate(s);
    const problems = await specProblems(s);
    expect(problems.join('\n')).toMatch(problem);
    await expect(assertValidSpec(s)).rejects.toThrow(/violates the OCI schema/);
  });
});
