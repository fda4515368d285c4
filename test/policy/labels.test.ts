import { describe, expect, it } from 'vitest';
import {
  bindPeers,
  compile,
  evaluate,
  formatProblem,
  labelKeyProblem,
  labelValueProblem,
  labelsProblems,
  parseIp,
  parseLabelArgs,
  applyLabelEdit,
  peerBindingKey,
  reevaluateFlows,
  validatePolicy,
  LabelLimits,
  type Decision,
  type DirectorySnapshot,
  type FlowQuery,
  type Policy,
} from '../../src/policy/index.js';
import { explainFlow } from '../../src/controlplane/explain.js';

const NOW = Date.parse('2026-01-01T00:00:00Z');

function peer(name: string, n: number, labels?: Record<string, string>, namespace = 'team') {
  return { name, namespace, ...(labels ? { labels } : {}), addresses: [parseIp(`10.77.0.${n}`)!, parseIp(`fd77::${n}`)!] };
}

const DB_RULE = { version: 1, egress: [{ id: 'db', action: 'allow', peers: { role: 'db' }, ports: [5432], protocol: 'tcp' }] };

function valid(doc: unknown): Policy {
  const v = validatePolicy(doc);
  if (!v.ok) throw new Error(v.problems.map(formatProblem).join('\n'));
  return v.policy;
}

function problems(doc: unknown): string[] {
  const v = validatePolicy(doc);
  return v.ok ? [] : v.problems.map(formatProblem);
}

const tcp = (ip: string, port: number): FlowQuery => ({ direction: 'egress', protocol: 6, remote: parseIp(ip)!, dstPort: port });

describe('label grammar (Kubernetes label syntax, explicit limits)', () => {
  it.each([
    ['role', true],
    ['app.kubernetes.io/name', true],
    ['example.com/tier', true],
    ['A_b-c.d', true],
    ['x'.repeat(63), true],
    ['x'.repeat(64), false],
    ['-role', false],
    ['role-', false],
    ['ro le', false],
    ['', false],
    ['/role', false],
    ['Example.com/role', false],
    ['example.com/', false],
    ['name', false],
  ])('key %j valid: %s', (key, ok) => {
    expect(labelKeyProblem(key) === undefined).toBe(ok);
  });

  it.each([
    ['db', true],
    ['', true],
    ['v1.2_3-a', true],
    ['y'.repeat(63), true],
    ['y'.repeat(64), false],
    ['-db', false],
    ['d b', false],
    [5, false],
  ])('value %j valid: %s', (value, ok) => {
    expect(labelValueProblem(value) === undefined).toBe(ok);
  });

  it('the reserved key "name" says why; a set with too many labels is refused; every problem is listed', () => {
    expect(labelKeyProblem('name')).toMatch(/reserved/);
    const many = Object.fromEntries(Array.from({ length: LabelLimits.maxPerPeer + 1 }, (_, i) => [`k${i}`, 'v']));
    expect(labelsProblems(many)).toEqual([`${LabelLimits.maxPerPeer + 1} labels; a peer carries at most ${LabelLimits.maxPerPeer}`]);
    expect(labelsProblems({ '-a': 'x', b: '-y' })).toHaveLength(2);
  });

  it('k=v sets, k- removes; bad arguments are all reported', () => {
    expect(parseLabelArgs(['role=db', 'tier-'])).toEqual({ ok: true, edit: { set: { role: 'db' }, remove: ['tier'] } });
    expect(parseLabelArgs(['role=', 'x=1'])).toEqual({ ok: true, edit: { set: { role: '', x: '1' }, remove: [] } });
    const bad = parseLabelArgs(['role', 'a=b c', 'name=x', 'k=1', 'k-']);
    expect(bad.ok).toBe(false);
    if (!bad.ok) expect(bad.problems).toHaveLength(4);
    expect(applyLabelEdit({ tier: '1', role: 'web' }, { set: { role: 'db' }, remove: ['tier'] })).toEqual({ ok: true, labels: { role: 'db' } });
  });
});

describe('"peers" rules: schema', () => {
  it('accepts labels, a name, a list of names, a list of selectors', () => {
    for (const peers of [{ role: 'db' }, { name: 'alice' }, { name: ['alice', 'bob.other'] }, [{ role: 'db' }, { name: 'alice' }], { name: 'alice', role: 'db' }]) {
      expect(problems({ version: 1, egress: [{ id: 'r', action: 'allow', peers }] })).toEqual([]);
    }
    expect(problems({ version: 1, ingress: [{ id: 'r', action: 'allow', peers: { role: 'web' }, ports: [8080] }] })).toEqual([]);
  });

  it('refuses mistakes with one problem per line, each naming its path and the fix', () => {
    const p = problems({
      version: 1,
      egress: [
        { id: 'a', action: 'allow', peers: {} },
        { id: 'b', action: 'allow', peers: { role: 'db' }, cidrs: ['10.0.0.0/24'] },
        { id: 'c', action: 'allow', peers: { '-x': 'db', role: 'd b' } },
        { id: 'd', action: 'allow', peers: { name: 'Alice' } },
        { id: 'e', action: 'allow', peers: [] },
        { id: 'f', action: 'allow', peers: { role: 'db' }, allowAnyAddress: true },
        { id: 'g', action: 'allow', peers: 'db' },
      ],
    });
    expect(p).toEqual([
      expect.stringMatching(/^egress\[0\]\.peers: an empty selector would select every peer; /),
      expect.stringMatching(/^egress\[1\]: has both "cidrs" and "peers"; split it into 2 rules/),
      expect.stringMatching(/^egress\[2\]\.peers\.-x: not a label key; /),
      expect.stringMatching(/^egress\[2\]\.peers\.role: not a label value; /),
      expect.stringMatching(/^egress\[3\]\.peers\.name: "Alice" is not a peer name; /),
      expect.stringMatching(/^egress\[4\]\.peers: an empty list selects no peer; /),
      expect.stringMatching(/^egress\[5\]\.allowAnyAddress: /),
      expect.stringMatching(/^egress\[6\]\.peers: "db" is not a selector; /),
    ]);
    for (const line of p) expect(line).not.toContain('\n');
  });
});

describe('"peers" rules: compiled against a directory snapshot', () => {
  const dir: DirectorySnapshot = { namespace: 'team', peers: [peer('db1', 5, { role: 'db' }), peer('web', 6, { role: 'web' }), peer('db2', 7, { role: 'db' }, 'other')] };

  it('a label rule covers both address families of each selected peer, on its ports only', () => {
    const c = compile(valid(DB_RULE), dir);
    for (const ip of ['10.77.0.5', 'fd77::5', '10.77.0.7', 'fd77::7']) expect(evaluate(c, tcp(ip, 5432), NOW)).toMatchObject({ verdict: 'allow', ruleId: 'db' });
    expect(evaluate(c, tcp('10.77.0.5', 80), NOW).ruleId).toBe('default-deny');
    expect(evaluate(c, tcp('fd77::6', 5432), NOW).ruleId).toBe('default-deny');
    expect(evaluate(c, tcp('10.77.0.9', 5432), NOW).ruleId).toBe('default-deny');
  });

  it('without a directory a peers rule selects nobody (deny by default)', () => {
    expect(evaluate(compile(valid(DB_RULE)), tcp('10.77.0.5', 5432), NOW).ruleId).toBe('default-deny');
  });

  it('names: a plain name means the policy\'s namespace, name.namespace another; a list is any of them', () => {
    const byName = (name: unknown) => compile(valid({ version: 1, egress: [{ id: 'n', action: 'allow', peers: { name } }] }), dir);
    expect(evaluate(byName('db1'), tcp('fd77::5', 1), NOW).ruleId).toBe('n');
    expect(evaluate(byName('db2'), tcp('10.77.0.7', 1), NOW).ruleId).toBe('default-deny');
    expect(evaluate(byName('db2.other'), tcp('10.77.0.7', 1), NOW).ruleId).toBe('n');
    const list = byName(['web', 'db2.other']);
    expect(['10.77.0.5', '10.77.0.6', '10.77.0.7'].map((ip) => evaluate(list, tcp(ip, 1), NOW).ruleId)).toEqual(['default-deny', 'n', 'n']);
    const both = compile(valid({ version: 1, egress: [{ id: 'nb', action: 'allow', peers: { name: ['db1', 'web'], role: 'db' } }] }), dir);
    expect(['10.77.0.5', '10.77.0.6'].map((ip) => evaluate(both, tcp(ip, 1), NOW).ruleId)).toEqual(['nb', 'default-deny']);
  });

  it('a deny "peers" rule wins over a CIDR allow', () => {
    const c = compile(valid({ version: 1, egress: [{ id: 'all', action: 'allow', cidrs: ['10.77.0.0/16'] }, { id: 'no-db', action: 'deny', peers: { role: 'db' } }] }), dir);
    expect(evaluate(c, tcp('10.77.0.5', 5432), NOW).ruleId).toBe('no-db');
    expect(evaluate(c, tcp('10.77.0.6', 5432), NOW).ruleId).toBe('all');
  });

  it('relabelling updates the decision: the open flow to a peer that lost the label is cut, one that gained it opens', () => {
    const policy = valid(DB_RULE);
    const before = compile(policy, dir);
    const flow = { ...tcp('fd77::5', 5432), decision: evaluate(before, tcp('fd77::5', 5432), NOW) as Decision };
    expect(flow.decision.verdict).toBe('allow');
    const relabelled: DirectorySnapshot = { namespace: 'team', peers: [peer('db1', 5, { role: 'old-db' }), peer('web', 6, { role: 'db' })] };
    const after = compile(policy, relabelled);
    expect(reevaluateFlows(after, [flow], NOW).cut).toEqual([{ flow, decision: expect.objectContaining({ verdict: 'deny', ruleId: 'default-deny' }) }]);
    expect(evaluate(after, tcp('10.77.0.6', 5432), NOW).ruleId).toBe('db');
    // The launcher re-applies the policy only when a selection changed.
    expect(peerBindingKey(bindPeers(policy, relabelled))).not.toBe(peerBindingKey(bindPeers(policy, dir)));
    const moved = { namespace: 'team', peers: [...dir.peers, peer('cache', 9, { role: 'cache' })] };
    expect(peerBindingKey(bindPeers(policy, moved))).toBe(peerBindingKey(bindPeers(policy, dir)));
  });

  it('explain names the label rule and the peers it selects; a peer\'s address is answered with a rule naming the peer', () => {
    const yes = explainFlow(DB_RULE, { address: 'fd77::5', port: 5432, proto: 'tcp' }, NOW, dir);
    expect(yes).toMatchObject({ allowed: true, ruleId: 'db', peers: { selectors: ['role=db'], selected: ['db1.team', 'db2.other'] } });
    expect(yes.explanation).toBe('fd77::5:5432/tcp is allowed by rule db (peers role=db: db1.team, db2.other)');
    const no = explainFlow(DB_RULE, { address: '10.77.0.6', port: 5432, proto: 'tcp' }, NOW, dir);
    expect(no).toMatchObject({ allowed: false, ruleId: 'default-deny', suggestedRule: { id: 'allow-web-tcp-5432', peers: { name: 'web' }, ports: [5432] } });
  });
});
