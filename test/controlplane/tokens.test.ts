import { describe, expect, it } from 'vitest';
import {
  buildTokenRecord,
  checkUsable,
  consumeToken,
  generateTokenSecret,
  hashToken,
  isWellFormedToken,
  parseDuration,
  refundToken,
} from '../../src/controlplane/tokens.js';

const NOW = 1_700_000_000_000;

describe('token rules', () => {
  it('secrets are 32 random bytes in base64url; only the hash is a lookup key', () => {
    const a = generateTokenSecret();
    expect(a).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(a, 'base64url')).toHaveLength(32);
    expect(isWellFormedToken(a)).toBe(true);
    expect(isWellFormedToken('short')).toBe(false);
    expect(hashToken(a)).toMatch(/^[0-9a-f]{64}$/);
    expect(hashToken(a)).not.toBe(hashToken(generateTokenSecret()));
  });

  it('parses durations', () => {
    expect(parseDuration('90s')).toBe(90_000);
    expect(parseDuration('1h')).toBe(3600_000);
    expect(parseDuration('365d')).toBe(365 * 86_400_000);
    expect(() => parseDuration('1 week')).toThrow(/bad duration/);
    expect(() => parseDuration('0s')).toThrow(/out of range/);
  });

  it('builds a record with defaults', () => {
    const t = buildTokenRecord({ namespace: 'team-a', allowedTools: ['list_peers', 'list_peers', 'get_policy'], ttl: '1h' }, NOW, 'id1');
    expect(t).toMatchObject({
      id: 'id1',
      namespace: 'team-a',
      allowedTools: ['list_peers', 'get_policy'],
      allowedNamespaces: [],
      limit: 1,
      uses: 0,
      expiresAt: NOW + 3600_000,
      modes: { sandbox: 'gvisor', enforcement: 'enforce' },
    });
    expect(buildTokenRecord({ namespace: 'n', policy: 'default-deny' }, NOW, 'x').policy).toEqual({ preset: 'default-deny' });
    expect(buildTokenRecord({ namespace: 'n', policy: { version: 1 } }, NOW, 'x').policy).toEqual({ inline: { version: 1 } });
    expect(buildTokenRecord({ namespace: 'n', expiresAt: new Date(NOW + 5000).toISOString() }, NOW, 'x').expiresAt).toBe(NOW + 5000);
    expect(buildTokenRecord({ namespace: 'n', ttl: 60 }, NOW, 'x').expiresAt).toBe(NOW + 60_000);
  });

  it.each([
    [null, /JSON object/],
    [{}, /namespace/],
    [{ namespace: 'Bad_NS' }, /namespace/],
    [{ namespace: 'n', limit: 0 }, /limit/],
    [{ namespace: 'n', limit: 1.5 }, /limit/],
    [{ namespace: 'n', allowedTools: 'a,b' }, /allowedTools/],
    [{ namespace: 'n', allowedTools: ['bad tool'] }, /allowedTools/],
    [{ namespace: 'n', allowedTools: ['list_peers', 'frob'] }, /^allowedTools: no tool "frob"; the agent API's tools are list_peers, check_connectivity, get_policy, request_egress, delegate$/],
    [{ namespace: 'n', ttl: '-1h' }, /duration/],
    [{ namespace: 'n', expiresAt: NOW - 1 }, /already be expired/],
    [{ namespace: 'n', modes: { sandbox: 'docker' } }, /modes.sandbox/],
    [{ namespace: 'n', modes: { enforcement: 'strict' } }, /modes.enforcement/],
    [{ namespace: 'n', policy: 42 }, /policy/],
    [{ namespace: 'n', extra: 1 }, /unknown field "extra"/],
  ])('rejects %j', (body, re) => {
    expect(() => buildTokenRecord(body, NOW, 'x')).toThrow(re);
  });

  it('runs the policy validator on inline policies', () => {
    expect(() =>
      buildTokenRecord({ namespace: 'n', policy: { bad: true } }, NOW, 'x', () => {
        throw new Error('nope');
      }),
    ).toThrow('nope');
  });

  it('is used at most limit times and never after expiry', () => {
    let t = buildTokenRecord({ namespace: 'n', limit: 2, ttl: '1m' }, NOW, 'x');
    t = consumeToken(t, NOW);
    t = consumeToken(t, NOW + 1);
    expect(t.uses).toBe(2);
    expect(() => consumeToken(t, NOW + 2)).toThrow(expect.objectContaining({ code: 'ETOKEN_EXHAUSTED' }));
    t = refundToken(t);
    expect(() => checkUsable(t, NOW + 60_000)).toThrow(expect.objectContaining({ code: 'ETOKEN_EXPIRED' }));
    expect(() => checkUsable(t, NOW + 59_999)).not.toThrow();
    expect(refundToken({ ...t, uses: 0 }).uses).toBe(0);
  });
});
