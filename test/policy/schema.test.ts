import { describe, expect, it } from 'vitest';
import { PolicyError, parsePolicy, validatePolicy } from '../../src/policy/index.js';

const rule = (extra: Record<string, unknown>) => ({ id: 'r', action: 'allow', cidrs: ['10.77.0.0/24'], ...extra });
const policyWith = (egress: unknown[], extra: Record<string, unknown> = {}) => ({ version: 1, mode: 'enforce', egress, ...extra });

function problems(input: unknown) {
  const res = validatePolicy(input);
  if (res.ok) throw new Error('expected problems');
  return res.problems;
}

describe('validatePolicy: accepted', () => {
  it('normalises a full policy and applies defaults', () => {
    const res = validatePolicy({
      version: 1,
      egress: [
        { id: 'allow-api', action: 'allow', cidrs: ['10.77.0.0/24', 'fd77::/64'], ports: [443, '8000-8100', '53'], protocol: 'tcp' },
        { id: 'web', action: 'allow', domains: ['API.Example.com.', '*.example.org'], expiresAt: '2030-01-31T18:00:00Z' },
        { id: 'everything', action: 'allow', cidrs: ['0.0.0.0/0', '::/0'], allowAnyAddress: true, description: 'on purpose' },
        { id: 'no-metadata', action: 'deny', cidrs: ['0.0.0.0/0'] },
      ],
    });
    expect(res.ok).toBe(true);
    if (!res.ok) return;
    const p = res.policy;
    expect(p.mode).toBe('enforce');
    expect(p.ingress).toEqual([]);
    expect(p.egress[0]).toMatchObject({ id: 'allow-api', direction: 'egress', index: 0, protocol: 'tcp', ports: [[443, 443], [8000, 8100], [53, 53]] });
    expect(p.egress[1]).toMatchObject({ protocol: 'any', domains: ['api.example.com', '*.example.org'], expiresAtMs: Date.parse('2030-01-31T18:00:00Z') });
    expect(p.egress[1].ports).toBeUndefined();
    expect(p.egress[3].action).toBe('deny');
  });

  it('parsePolicy reads JSON text', () => {
    expect(parsePolicy('{"version":1,"mode":"audit"}').mode).toBe('audit');
  });
});

describe('validatePolicy: rejected, with path and fix', () => {
  it.each<[string, unknown, string, RegExp]>([
    ['not an object', [], '', /not a JSON object/],
    ['bad version', { version: 2 }, 'version', /not supported/],
    ['bad mode', { version: 1, mode: 'permissive' }, 'mode', /not a mode/],
    ['unknown top field', { version: 1, egres: [] }, 'egres', /unknown field/],
    ['egress not a list', { version: 1, egress: {} }, 'egress', /not a list/],
    ['CIDR /33', policyWith([rule({ cidrs: ['10.0.0.0/33'] })]), 'egress[0].cidrs[0]', /"10.0.0.0\/33" is not a CIDR/],
    ['CIDR host bits', policyWith([rule({ cidrs: ['10.0.0.1/24'] })]), 'egress[0].cidrs[0]', /bits set after the prefix/],
    ['CIDR not a string', policyWith([rule({ cidrs: [10] })]), 'egress[0].cidrs[0]', /not a CIDR/],
    ['allow 0.0.0.0/0', policyWith([rule({ cidrs: ['0.0.0.0/0'] })]), 'egress[0].cidrs[0]', /every address/],
    ['allow ::/0', policyWith([rule({ cidrs: ['::/0'] })]), 'egress[0].cidrs[0]', /every address/],
    ['allow 0.0.0.0/1', policyWith([rule({ cidrs: ['0.0.0.0/1'] })]), 'egress[0].cidrs[0]', /large share/],
    ['empty cidrs', policyWith([rule({ cidrs: [] })]), 'egress[0].cidrs', /empty/],
    ['cidrs and domains', policyWith([rule({ domains: ['a.example.com'] })]), 'egress[0]', /both/],
    ['neither', policyWith([{ id: 'x', action: 'allow' }]), 'egress[0]', /neither/],
    ['domain *', policyWith([{ id: 'x', action: 'allow', domains: ['*'] }]), 'egress[0].domains[0]', /every name/],
    ['domain *.com', policyWith([{ id: 'x', action: 'allow', domains: ['*.com'] }]), 'egress[0].domains[0]', /top-level/],
    ['domain single label', policyWith([{ id: 'x', action: 'allow', domains: ['localhost'] }]), 'egress[0].domains[0]', /single-label/],
    ['domain inner *', policyWith([{ id: 'x', action: 'allow', domains: ['api.*.example.com'] }]), 'egress[0].domains[0]', /not a leading/],
    ['domain is an IP', policyWith([{ id: 'x', action: 'allow', domains: ['1.2.3.4'] }]), 'egress[0].domains[0]', /IP address/],
    ['domain bad label', policyWith([{ id: 'x', action: 'allow', domains: ['-a.example.com'] }]), 'egress[0].domains[0]', /not a DNS name/],
    ['empty domains', policyWith([{ id: 'x', action: 'allow', domains: [] }]), 'egress[0].domains', /empty/],
    ['ingress domains', { version: 1, ingress: [{ id: 'x', action: 'allow', domains: ['a.example.com'] }] }, 'ingress[0].domains', /egress only/],
    ['port reversed', policyWith([rule({ ports: ['9000-8000'] })]), 'egress[0].ports[0]', /reversed/],
    ['port 0', policyWith([rule({ ports: [0] })]), 'egress[0].ports[0]', /not a port/],
    ['port 65536', policyWith([rule({ ports: ['1-65536'] })]), 'egress[0].ports[0]', /out of range/],
    ['port float', policyWith([rule({ ports: [44.3] })]), 'egress[0].ports[0]', /not a port/],
    ['port garbage', policyWith([rule({ ports: ['https'] })]), 'egress[0].ports[0]', /not a port or range/],
    ['empty ports', policyWith([rule({ ports: [] })]), 'egress[0].ports', /empty/],
    ['icmp with ports', policyWith([rule({ protocol: 'icmp', ports: [1] })]), 'egress[0].ports', /ICMP has no ports/],
    ['bad protocol', policyWith([rule({ protocol: 'sctp' })]), 'egress[0].protocol', /not a protocol/],
    ['protocol from prototype', policyWith([rule({ protocol: 'toString' })]), 'egress[0].protocol', /not a protocol/],
    ['bad action', policyWith([rule({ action: 'permit' })]), 'egress[0].action', /not an action/],
    ['missing id', policyWith([{ action: 'allow', cidrs: ['10.0.0.0/8'] }]), 'egress[0].id', /not a rule id/],
    ['reserved id', policyWith([rule({ id: 'default-deny' })]), 'egress[0].id', /reserved/],
    ['unknown rule field', policyWith([rule({ port: [443] })]), 'egress[0].port', /unknown field/],
    ['expiresAt without zone', policyWith([rule({ expiresAt: '2030-01-01T00:00:00' })]), 'egress[0].expiresAt', /ISO-8601/],
    ['expiresAt nonsense', policyWith([rule({ expiresAt: 'tomorrow' })]), 'egress[0].expiresAt', /ISO-8601/],
    ['allowAnyAddress not boolean', policyWith([rule({ allowAnyAddress: 'yes' })]), 'egress[0].allowAnyAddress', /not a boolean/],
  ])('%s', (_name, input, path, message) => {
    const ps = problems(input);
    const p = ps.find((x) => x.path === path);
    expect(p, JSON.stringify(ps)).toBeDefined();
    expect(p!.message).toMatch(message);
    expect(p!.fix.length).toBeGreaterThan(5);
  });

  it('suggests the field meant', () => {
    const p = problems(policyWith([rule({ cidr: ['10.0.0.0/8'] })])).find((x) => x.path === 'egress[0].cidr');
    expect(p?.fix).toMatch(/did you mean "cidrs"/);
  });

  it('the message for /33 tells how to fix it', () => {
    const p = problems(policyWith([{}, {}, rule({ cidrs: ['10.0.0.0/33'] })])).find((x) => x.path === 'egress[2].cidrs[0]');
    expect(`${p!.path}: ${p!.message}; ${p!.fix}`).toBe('egress[2].cidrs[0]: "10.0.0.0/33" is not a CIDR; use a.b.c.d/n with n<=32');
  });

  it('reports every problem, not just the first', () => {
    const ps = problems({ version: 1, egress: [rule({ cidrs: ['x'], ports: [] }), rule({ id: 'r' })], ingress: [rule({ id: 'y', action: 'nope' })] });
    expect(ps.map((p) => p.path).sort()).toEqual(['egress[0].cidrs[0]', 'egress[0].ports', 'egress[1].id', 'ingress[0].action']);
  });

  it('deny rules may use 0.0.0.0/0 without the flag', () => {
    expect(validatePolicy(policyWith([{ id: 'd', action: 'deny', cidrs: ['0.0.0.0/0', '::/0'] }])).ok).toBe(true);
  });

  it('parsePolicy throws a PolicyError with code EPOLICY and every problem', () => {
    const err = (() => {
      try {
        parsePolicy(JSON.stringify(policyWith([rule({ cidrs: ['10.0.0.0/33'] })])));
      } catch (e) {
        return e;
      }
    })() as PolicyError;
    expect(err).toBeInstanceOf(PolicyError);
    expect(err.code).toBe('EPOLICY');
    expect(err.problems).toHaveLength(1);
    expect(err.message).toContain('egress[0].cidrs[0]');
    expect(() => parsePolicy('{not json')).toThrow(/not valid JSON/);
    // Node 20 names a character offset; the message names the line and column a person looks for.
    expect(() => parsePolicy('{\n  "version": 1\n  "mode": "enforce"\n}')).toThrow(/not valid JSON \(Expected ',' or '}' after property value at line 3 column 3\)/);
  });
});
