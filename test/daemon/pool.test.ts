import { describe, it, expect } from 'vitest';
import { execa } from 'execa';
import pino from 'pino';
import { WarmPool, claimLine, matchKey, parsePoolSpec, poolKey, type PoolSpec, type WarmMember } from '../../src/daemon/pool.js';
import { CreateRequest } from '../../src/daemon/api.js';
import { UsageError } from '../../src/errors.js';
import { seededRandom } from '../support/random.js';

const abs = (p: string) => (p.startsWith('/') ? p : `/cwd/${p}`);

describe('parsePoolSpec', () => {
  it('reads ROOTFS=N and ROOTFS:POLICY=N, paths made absolute', () => {
    expect(parsePoolSpec('rootfs=4', abs)).toEqual({ rootfs: '/cwd/rootfs', size: 4 });
    expect(parsePoolSpec('/srv/r:p.yaml=2', abs)).toEqual({ rootfs: '/srv/r', policy: '/cwd/p.yaml', size: 2 });
  });
  it.each(['rootfs', 'rootfs=', '=3', 'rootfs:=2', 'rootfs=0', 'rootfs=257', 'rootfs=-1', 'rootfs=two'])('refuses %s', (bad) => {
    expect(() => parsePoolSpec(bad, abs)).toThrow(UsageError);
  });
});

describe('matchKey', () => {
  const req = (o: object) => CreateRequest.parse({ rootfs: '/r', cmd: ['true'], ...o });
  it('matches the rootfs and the network (none, or host egress under a policy file)', () => {
    expect(matchKey(req({}), '/r')).toBe(poolKey('/r', undefined));
    expect(matchKey(req({ env: ['A=1'], cwd: '/tmp', name: 'x' }), '/r')).toBe(poolKey('/r', undefined));
    expect(matchKey(req({ network: { mode: 'host', policy: '/p' } }), '/r')).toBe(poolKey('/r', '/p'));
  });
  it.each([{ memory: '1g' }, { cpus: '1' }, { pidsLimit: '9' }, { tmpSize: '1m' }, { user: '1' }, { capAdd: ['NET_RAW'] }, { network: { mode: 'host' } }, { network: { mode: 'host', policy: '/p', dnsUpstream: ['1.1.1.1'] } }, { network: { mode: 'enrolled' } }])(
    'runs cold what a parked sandbox cannot give: %j',
    (o) => expect(matchKey(req(o), '/r')).toBeUndefined(),
  );
  it('runs an image cold', () => {
    expect(matchKey(CreateRequest.parse({ image: 'alpine', cmd: ['true'] }), '/r')).toBeUndefined();
  });
});

describe('claimLine', () => {
  it('passes arguments, environment and directory to the command through sh unchanged (seeded random bytes)', async () => {
    const rnd = seededRandom();
    const word = () => Array.from({ length: 1 + rnd.int(12) }, () => String.fromCharCode(1 + rnd.int(126))).join('').replace(/\n/g, ' ');
    for (let round = 0; round < 20; round++) {
      const args = Array.from({ length: 1 + rnd.int(4) }, word);
      const value = word();
      const line = claimLine({ args: ['/bin/sh', '-c', 'printf "%s\\0" "$PWD" "$V" "$@"', 'sh', ...args], env: [`V=${value}`], cwd: '/tmp' });
      const r = await execa('/bin/sh', [], { input: line });
      expect(r.stdout.split('\0').slice(0, -1)).toEqual(['/tmp', value, ...args]);
    }
  });
});

/** A member that ends when drained or when the test ends it. */
function fakeMember(id: string) {
  let end!: () => void;
  const exited = new Promise<void>((resolve) => (end = resolve));
  const m: WarmMember & { end(): void; drained: boolean } = {
    id,
    exited,
    drained: false,
    drain: () => {
      m.drained = true;
      end();
    },
    end,
  };
  return m;
}

describe('WarmPool', () => {
  const spec: PoolSpec = { rootfs: '/r', size: 3 };
  const setup = () => {
    const made: ReturnType<typeof fakeMember>[] = [];
    let n = 0;
    const pool = new WarmPool([spec], async () => {
      const m = fakeMember(`m${n++}`);
      made.push(m);
      return m;
    }, pino({ level: 'silent' }));
    return { pool, made };
  };
  const settle = async () => {
    for (let i = 0; i < 20; i++) await Promise.resolve();
  };

  it('fills to its size, hands each member out once, and refills', async () => {
    const { pool, made } = setup();
    pool.start();
    await settle();
    const key = poolKey('/r', undefined);
    expect(pool.state()[0]!.warm).toEqual(['m0', 'm1', 'm2']);
    const a = pool.take(key)!;
    const b = pool.take(key)!;
    expect(a.id).not.toBe(b.id);
    expect(pool.isWarm(a.id)).toBe(false);
    await settle();
    expect(pool.state()[0]!.warm).toEqual(['m2', 'm3', 'm4']);
    expect(made).toHaveLength(5);
    expect(pool.take(poolKey('/other', undefined))).toBeUndefined();
  });

  it('replaces a parked member that ended, and drains every parked one on close', async () => {
    const { pool, made } = setup();
    pool.start();
    await settle();
    made[1]!.end();
    await settle();
    expect(pool.state()[0]!.warm).toEqual(['m0', 'm2', 'm3']);
    await pool.close();
    expect(made.filter((m) => m.drained).map((m) => m.id)).toEqual(['m0', 'm2', 'm3']);
    expect(pool.state()[0]!.warm).toEqual([]);
  });
});
