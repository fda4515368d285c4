import { describe, expect, it } from 'vitest';
import { UsageError, LatticeError } from '../../src/errors.js';
import { netnsPath, validNetnsName } from '../../src/netns/ip.js';
import { sandboxNetnsName, sandboxTunName, setupSandboxNetwork, SANDBOX_NETNS_PREFIX } from '../../src/netns/sandbox-net.js';

describe('netns names', () => {
  it('names the netns from the sandbox id under the lattice- prefix', () => {
    expect(SANDBOX_NETNS_PREFIX).toBe('lattice-');
    expect(sandboxNetnsName('abc123')).toBe('lattice-abc123');
    expect(sandboxNetnsName('x', 'ltnet-')).toBe('ltnet-x');
    expect(netnsPath('lattice-abc123')).toBe('/var/run/netns/lattice-abc123');
  });

  it('rejects ids that cannot be a netns file name', () => {
    for (const bad of ['', 'a/b', '../x', 'sp ace', 'x'.repeat(60)]) {
      expect(() => sandboxNetnsName(bad)).toThrow(UsageError);
    }
    expect(validNetnsName('..')).toBe(false);
    expect(() => netnsPath('a/b')).toThrow(LatticeError);
  });

  it('derives a stable TUN name within IFNAMSIZ, distinct per netns', () => {
    const a = sandboxTunName('lattice-a');
    expect(a).toMatch(/^lt[0-9a-f]{12}$/);
    expect(a.length).toBeLessThanOrEqual(15);
    expect(sandboxTunName('lattice-a')).toBe(a);
    expect(sandboxTunName('lattice-b')).not.toBe(a);
  });
});

describe('setupSandboxNetwork validation (before any host change)', () => {
  const base = { id: 'unit', prefix: 'ltnet-unit-' };
  it('needs addresses, well-formed CIDRs and a gateway per family', async () => {
    await expect(setupSandboxNetwork({ ...base, overlayAddrs: [] })).rejects.toThrow(UsageError);
    await expect(setupSandboxNetwork({ ...base, overlayAddrs: ['10.0.0.2'], gateway: '10.0.0.1' })).rejects.toThrow(/address\/prefix-length/);
    await expect(setupSandboxNetwork({ ...base, overlayAddrs: ['10.0.0.2/33'], gateway: '10.0.0.1' })).rejects.toThrow(UsageError);
    await expect(setupSandboxNetwork({ ...base, overlayAddrs: ['10.0.0.2/32'] })).rejects.toThrow(/IPv4 gateway/);
    await expect(setupSandboxNetwork({ ...base, overlayAddrs: ['fd77::2/128'], gateway: '10.0.0.1' })).rejects.toThrow(/gateway6/);
    await expect(setupSandboxNetwork({ ...base, overlayAddrs: ['10.0.0.2/32'], gateway: 'fd77::1' })).rejects.toThrow(/IPv4 gateway/);
  });
});
