import { describe, expect, it } from 'vitest';
import { explainFlow, parseExplainQuery } from '../../src/controlplane/explain.js';
import { lineDiff } from '../../src/controlplane/textdiff.js';
import { seededRandom } from '../support/random.js';

const NOW = 1_700_000_000_000;
const policy = {
  version: 1,
  egress: [
    { id: 'no-meta', action: 'deny', cidrs: ['169.254.0.0/16'] },
    { id: 'pg', action: 'allow', cidrs: ['10.77.0.5/32'], ports: [5432], protocol: 'tcp' },
    { id: 'api', action: 'allow', domains: ['api.example.com'], ports: [443], protocol: 'tcp' },
  ],
};

describe('explainFlow', () => {
  it('names the allowing rule', () => {
    const a = explainFlow(policy, parseExplainQuery({ address: '10.77.0.5', port: 5432, proto: 'tcp' }), NOW);
    expect(a).toMatchObject({ allowed: true, ruleId: 'pg', rule: { id: 'pg' } });
    const d = explainFlow(policy, parseExplainQuery({ host: 'api.example.com', port: 443 }), NOW);
    expect(d).toMatchObject({ allowed: true, ruleId: 'api' });
  });

  it('a default deny comes with a minimal allow rule that the evaluator accepts', () => {
    const a = explainFlow(policy, parseExplainQuery({ address: '10.77.0.5', port: 6379, proto: 'tcp' }), NOW);
    expect(a).toMatchObject({ allowed: false, ruleId: 'default-deny' });
    expect(a.suggestedRule).toEqual({ id: 'allow-10-77-0-5-tcp-6379', action: 'allow', cidrs: ['10.77.0.5/32'], ports: [6379], protocol: 'tcp' });
    const withRule = { ...policy, egress: [...policy.egress, a.suggestedRule] };
    expect(explainFlow(withRule, parseExplainQuery({ address: '10.77.0.5', port: 6379 }), NOW)).toMatchObject({ allowed: true, ruleId: a.suggestedRule!.id });
    // Minimal: the neighbour port stays denied.
    expect(explainFlow(withRule, parseExplainQuery({ address: '10.77.0.5', port: 6380 }), NOW).allowed).toBe(false);
    const h = explainFlow(policy, parseExplainQuery({ host: 'db.internal', port: 5432 }), NOW);
    expect(h.suggestedRule).toMatchObject({ domains: ['db.internal'], ports: [5432] });
  });

  it('an explicit deny is named and no allow rule is suggested (denies win)', () => {
    const a = explainFlow(policy, parseExplainQuery({ address: '169.254.169.254', port: 80 }), NOW);
    expect(a).toMatchObject({ allowed: false, ruleId: 'no-meta' });
    expect(a.suggestedRule).toBeUndefined();
    expect(a.explanation).toContain('no-meta');
  });

  it('no policy is default deny; audit mode lets it through', () => {
    expect(explainFlow(null, parseExplainQuery({ address: '192.0.2.9', port: 1 }), NOW)).toMatchObject({ allowed: false, ruleId: 'default-deny' });
    expect(explainFlow({ version: 1, mode: 'audit' }, parseExplainQuery({ address: '192.0.2.9', port: 1 }), NOW)).toMatchObject({ allowed: true, verdict: 'deny' });
  });

  it('refuses malformed queries', () => {
    for (const q of [{}, { address: 'nope', port: 1 }, { address: '10.0.0.1', port: 70000 }, { host: '<script>', port: 1 }, { address: '10.0.0.1', port: 1, proto: 'sctp' }]) {
      expect(() => parseExplainQuery(q), JSON.stringify(q)).toThrow();
    }
  });
});

describe('lineDiff', () => {
  it('keeps the common lines and marks the rest (seeded)', () => {
    const r = seededRandom();
    const seed = r.seed;
    const rnd = () => r.float();
    for (let n = 0; n < 200; n++) {
      const a = Array.from({ length: Math.floor(rnd() * 12) }, () => `l${Math.floor(rnd() * 5)}`);
      const b = Array.from({ length: Math.floor(rnd() * 12) }, () => `l${Math.floor(rnd() * 5)}`);
      const d = lineDiff(a.join('\n'), b.join('\n'));
      const lines = d === '' ? [] : d.split('\n');
      // Reconstruct both sides from the diff.
      const old = lines.filter((l) => l[0] !== '+').map((l) => l.slice(1));
      const neu = lines.filter((l) => l[0] !== '-').map((l) => l.slice(1));
      if (a.join('\n') === b.join('\n')) expect(d, `seed ${seed}`).toBe('');
      else {
        expect(old, `seed ${seed}`).toEqual(a);
        expect(neu, `seed ${seed}`).toEqual(b);
      }
    }
  });
});
