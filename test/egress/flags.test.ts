import { describe, it, expect } from 'vitest';
import { checkDnsUpstream } from '../../src/sandbox/egress-network.js';
import { UsageError } from '../../src/errors.js';
import { egressTunName } from '../../src/egress/host.js';
import { sandboxIdOfTable, egressTableName } from '../../src/egress/nftables.js';

describe('--dns-upstream', () => {
  it.each(['192.0.2.53', '192.0.2.53:5353', '[2001:db8::53]:53', '2001:db8::53'])('accepts %s', (a) => {
    expect(checkDnsUpstream(a)).toBe(a);
  });
  it.each(['dns.example.com', '192.0.2.300', '192.0.2.53:0', '192.0.2.53:70000', '', '[2001:db8::53]:x'])('refuses %j with a usage error', (a) => {
    expect(() => checkDnsUpstream(a)).toThrow(UsageError);
  });
});

describe('names of what host egress creates', () => {
  it('the egress TUN name fits IFNAMSIZ and differs per sandbox', () => {
    const a = egressTunName('lt-1a2b3c4d');
    expect(a).toMatch(/^le[0-9a-f]{12}$/);
    expect(egressTunName('lt-1a2b3c4e')).not.toBe(a);
  });
  it('table names round-trip to the sandbox id', () => {
    expect(sandboxIdOfTable(egressTableName('lt-1a2b3c4d'))).toBe('lt-1a2b3c4d');
    expect(sandboxIdOfTable('lattice_egress_other')).toBeUndefined();
  });
});
