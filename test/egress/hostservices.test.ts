import { describe, it, expect } from 'vitest';
import { HostServicesGuard, HOST_SERVICES_DENY, networkOf } from '../../src/egress/hostservices.js';
import { compile, evaluate, parseIp, parsePolicy, validatePolicy, type FlowQuery } from '../../src/policy/index.js';
import { egressRuleset, egressTableName, tableOwner } from '../../src/egress/nftables.js';

const HOST = ['192.0.2.2/24', '192.0.2.2/32', '100.77.0.0/16'];
const q = (addr: string, dstPort = 443, protocol = 6): FlowQuery => ({ direction: 'egress', protocol, remote: parseIp(addr)!, dstPort });

function decide(policyJson: object, addr: string, port = 443, protocol = 6) {
  const policy = parsePolicy(JSON.stringify(policyJson));
  const guard = new HostServicesGuard(HOST);
  const flow = q(addr, port, protocol);
  return guard.vet(flow, evaluate(compile(policy), flow, 0), policy, 0);
}

const everything = { version: 1, egress: [{ id: 'all', action: 'allow', cidrs: ['0.0.0.0/0'], allowAnyAddress: true }] };

describe('HostServicesGuard', () => {
  it.each(['127.0.0.1', '169.254.169.254', '192.0.2.2', '192.0.2.77', '100.77.3.4', '0.0.0.1', '224.0.0.251', '255.255.255.255'])(
    'an allow-everything rule does not open %s',
    (addr) => {
      expect(decide(everything, addr)).toEqual(HOST_SERVICES_DENY);
    },
  );

  it.each(['203.0.113.10', '8.8.8.8', '192.0.3.1'])('an allow-everything rule still opens %s', (addr) => {
    expect(decide(everything, addr)).toMatchObject({ effective: 'allow', ruleId: 'all' });
  });

  it('a rule with allowHostAccess that names the address opens exactly that address, port and protocol', () => {
    const p = { version: 1, egress: [{ id: 'h', action: 'allow', cidrs: ['192.0.2.2/32'], ports: [8080], protocol: 'tcp', allowHostAccess: true }] };
    expect(decide(p, '192.0.2.2', 8080)).toMatchObject({ effective: 'allow', ruleId: 'h' });
    expect(decide(p, '192.0.2.2', 8081)).toMatchObject({ effective: 'deny', ruleId: 'default-deny' });
    expect(decide(p, '192.0.2.3', 8080)).toMatchObject({ effective: 'deny' });
  });

  it('allowHostAccess does not beat a deny rule', () => {
    const p = {
      version: 1,
      egress: [
        { id: 'h', action: 'allow', cidrs: ['192.0.2.0/24'], allowHostAccess: true },
        { id: 'no', action: 'deny', cidrs: ['192.0.2.2/32'] },
      ],
    };
    expect(decide(p, '192.0.2.2')).toMatchObject({ effective: 'deny', ruleId: 'no' });
    expect(decide(p, '192.0.2.3')).toMatchObject({ effective: 'allow', ruleId: 'h' });
  });

  it('audit and disabled modes do not open host services either (the guard belongs to host egress)', () => {
    expect(decide({ ...everything, mode: 'audit' }, '169.254.169.254')).toEqual(HOST_SERVICES_DENY);
    expect(decide({ version: 1, mode: 'disabled' }, '127.0.0.1')).toEqual(HOST_SERVICES_DENY);
    expect(decide({ version: 1, mode: 'disabled' }, '203.0.113.10')).toMatchObject({ effective: 'allow', record: false });
  });

  it('IPv6 loopback, link-local and IPv4-mapped addresses are special', () => {
    const all6 = { version: 1, egress: [{ id: 'all6', action: 'allow', cidrs: ['::/0'], allowAnyAddress: true }] };
    for (const a of ['::1', 'fe80::1', '::ffff:127.0.0.1', 'ff02::1']) expect(decide(all6, a)).toEqual(HOST_SERVICES_DENY);
    expect(decide(all6, '2001:db8::1')).toMatchObject({ effective: 'allow' });
  });

  it('networkOf turns an interface address into its network', () => {
    expect(networkOf('192.0.2.2/24')).toBe('192.0.2.0/24');
    expect(networkOf('192.0.2.0/24')).toBe('192.0.2.0/24');
    expect(networkOf('fd00::2/64')).toBe('fd00::/64');
  });
});

describe('policy: allowHostAccess', () => {
  it('is accepted only on egress allow rules with cidrs', () => {
    const bad = (rule: object, dir = 'egress') => {
      const r = validatePolicy({ version: 1, [dir]: [{ id: 'x', action: 'allow', cidrs: ['192.0.2.2/32'], ...rule }] });
      return r.ok ? [] : r.problems.map((p) => p.path);
    };
    expect(bad({ allowHostAccess: true })).toEqual([]);
    expect(bad({ allowHostAccess: 'yes' })).toEqual(['egress[0].allowHostAccess']);
    expect(bad({ allowHostAccess: true, action: 'deny' })).toEqual(['egress[0].allowHostAccess']);
    expect(bad({ allowHostAccess: true }, 'ingress')).toEqual(['ingress[0].allowHostAccess']);
    expect(bad({ allowHostAccess: true, cidrs: undefined, domains: ['api.example.com'] })).toEqual(['egress[0].allowHostAccess']);
  });

  it('host-services is a reserved rule id', () => {
    const r = validatePolicy({ version: 1, egress: [{ id: 'host-services', action: 'allow', cidrs: ['192.0.2.2/32'] }] });
    expect(r.ok).toBe(false);
  });
});

describe('egress nftables ruleset', () => {
  const o = { table: egressTableName('lt-1a2b3c4d'), tun: 'le0123456789ab', address: '100.77.1.2', pool: '100.77.0.0/16', owner: { pid: 42, startTicks: 777 } };

  it('masquerades only the sandbox source leaving the egress TUN and admits only replies into it', () => {
    const text = egressRuleset(o);
    expect(o.table).toBe('lattice_egress_lt_1a2b3c4d');
    expect(text).toContain('iifname "le0123456789ab" oifname != "le0123456789ab" ip saddr 100.77.1.2 masquerade');
    expect(text).toContain('oifname "le0123456789ab" ct state established,related accept');
    expect(text).toMatch(/oifname "le0123456789ab" drop/);
    expect(text).toContain('iifname "le0123456789ab" ip daddr 100.77.0.0/16 drop');
    expect(tableOwner(text)).toEqual({ pid: 42, startTicks: 777 });
  });

  it('refuses names that could inject rules', () => {
    expect(() => egressRuleset({ ...o, tun: 'le0"; flush ruleset' })).toThrow();
    expect(() => egressRuleset({ ...o, address: '100.77.1.2 accept' })).toThrow();
  });
});
