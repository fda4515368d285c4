import { describe, it, expect, vi } from 'vitest';
import { execa } from 'execa';
import pino from 'pino';
import { REFILL_HOLD_MS, WarmPool, claimLine, memberKey, parsePoolSpec, poolId, requestKey, sourceOf, type PoolSpec, type WarmMember } from '../../src/daemon/pool.js';
import { ociResources, parseResourceFlags } from '../../src/oci/resources.js';
import { CreateRequest } from '../../src/daemon/api.js';
import { UsageError } from '../../src/errors.js';
import { seededRandom } from '../support/random.js';

const abs = (p: string) => (p.startsWith('/') ? p : `/cwd/${p}`);

describe('parsePoolSpec', () => {
  it('reads ROOTFS=N and ROOTFS:POLICY=N, paths made absolute', () => {
    expect(parsePoolSpec('rootfs=4', abs)).toEqual({ rootfs: '/cwd/rootfs', size: 4 });
    expect(parsePoolSpec('/srv/r:p.yaml=2', abs)).toEqual({ rootfs: '/srv/r', policy: '/cwd/p.yaml', size: 2 });
  });
  it('reads KEY=VALUE,...,size=N: an image (not a path), limits as given, paths made absolute', () => {
    expect(parsePoolSpec('image=alpine:3.19,policy=p.yaml,memory=512m,cpus=0.5,pids-limit=256,tmp-size=64m,size=3', abs)).toEqual({
      image: 'alpine:3.19',
      policy: '/cwd/p.yaml',
      memory: '512m',
      cpus: '0.5',
      pidsLimit: '256',
      tmpSize: '64m',
      size: 3,
    });
    expect(parsePoolSpec('image-archive=a.tar,size=1', abs)).toEqual({ imageArchive: '/cwd/a.tar', size: 1 });
    expect(parsePoolSpec('rootfs=r,size=0', abs, 0)).toEqual({ rootfs: '/cwd/r', size: 0 });
  });
  it.each([
    'rootfs',
    '=3',
    'rootfs:=2',
    'rootfs=0',
    'rootfs=257',
    'rootfs=-1',
    'rootfs=two',
    'image=a',
    'image=a,size=',
    'image=a,size=1,size=2',
    'image=a,image-archive=/b,size=1',
    'image=a,frob=1,size=1',
    'image=a,memory=1k,size=1',
    'image=a,cpus=lots,size=1',
    'image=a,pids-limit=3,size=1',
  ])('refuses %s', (bad) => {
    expect(() => parsePoolSpec(bad, abs)).toThrow(UsageError);
  });
});

describe('poolId', () => {
  it('names a pool by everything but its size, limits normalized', () => {
    expect(poolId({ image: 'a', memory: '512m', size: 1 })).toBe(poolId({ image: 'a', memory: '512M', size: 9 }));
    expect(poolId({ image: 'a', size: 1 })).not.toBe(poolId({ image: 'a', memory: '512m', size: 1 }));
    expect(poolId({ image: 'a', size: 1 })).not.toBe(poolId({ image: 'a', policy: '/p', size: 1 }));
    expect(poolId({ image: 'a', size: 1 })).not.toBe(poolId({ rootfs: 'a', size: 1 }));
  });
});

describe('requestKey', () => {
  const proc = { rootfs: '/r', resources: ociResources(parseResourceFlags({})) };
  const req = (o: object) => CreateRequest.parse({ rootfs: '/r', cmd: ['true'], ...o });
  it('keys on the prepared process (root filesystem, user, limits) and the network (none, or host egress under a policy file)', () => {
    expect(requestKey(req({}), proc)).toBe(memberKey(proc, undefined));
    expect(requestKey(req({ env: ['A=1'], cwd: '/tmp', name: 'x' }), proc)).toBe(memberKey(proc, undefined));
    expect(requestKey(req({ network: { mode: 'host', policy: '/p' } }), proc)).toBe(memberKey(proc, '/p'));
    expect(requestKey(req({}), proc)).not.toBe(memberKey(proc, '/p'));
    const other = [
      { ...proc, rootfs: '/r2' },
      { ...proc, user: { uid: 1, gid: 1 } },
      { ...proc, resources: ociResources(parseResourceFlags({ memory: '512m' })) },
      { ...proc, tmpSizeBytes: 1 << 20 },
    ];
    for (const p of other) expect(requestKey(req({}), p)).not.toBe(memberKey(proc, undefined));
  });
  it.each([{ capAdd: ['NET_RAW'] }, { network: { mode: 'host' } }, { network: { mode: 'host', policy: '/p', dnsUpstream: ['1.1.1.1'] } }, { network: { mode: 'enrolled' } }])(
    'runs cold what a parked sandbox cannot give: %j',
    (o) => expect(requestKey(req(o), proc)).toBeUndefined(),
  );
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
function fakeMember(id: string, rootfs = '/r') {
  let end!: () => void;
  const exited = new Promise<void>((resolve) => (end = resolve));
  const m: WarmMember & { end(): void; drained: boolean } = {
    id,
    key: memberKey({ rootfs, resources: ociResources(parseResourceFlags({})) }, undefined),
    rootfs,
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
    const gate: { open: boolean; waiting: (() => void)[] } = { open: true, waiting: [] };
    const resolved = { rootfs: '/r' };
    let n = 0;
    const pool = new WarmPool(async () => {
      if (!gate.open) await new Promise<void>((resolve) => gate.waiting.push(resolve));
      const m = fakeMember(`m${n++}`, resolved.rootfs);
      made.push(m);
      return m;
    }, pino({ level: 'silent' }));
    return { pool, made, gate, resolved };
  };
  const settle = async () => {
    for (let i = 0; i < 40; i++) await Promise.resolve();
  };
  const keyOf = (rootfs: string) => memberKey({ rootfs, resources: ociResources(parseResourceFlags({})) }, undefined);

  it('fills to its size, hands each member out once, and refills', async () => {
    const { pool, made } = setup();
    void pool.set(spec);
    await settle();
    const key = keyOf('/r');
    expect(pool.state()[0]!.warm).toEqual(['m0', 'm1', 'm2']);
    const a = pool.take(key) as ReturnType<typeof fakeMember>;
    const b = pool.take(key) as ReturnType<typeof fakeMember>;
    expect(a.id).not.toBe(b.id);
    expect(pool.isWarm(a.id)).toBe(false);
    // Their commands ran to the end: the refill is no longer held back.
    a.end();
    b.end();
    await settle();
    expect(pool.state()[0]!.warm).toEqual(['m2', 'm3', 'm4']);
    expect(made).toHaveLength(5);
    expect(pool.take(keyOf('/other'))).toBeUndefined();
  });

  it("holds a take's refill until the taken command ended, or REFILL_HOLD_MS passed", async () => {
    vi.useFakeTimers();
    try {
      const { pool, made } = setup();
      void pool.set(spec);
      await settle();
      const a = pool.take(keyOf('/r')) as ReturnType<typeof fakeMember>;
      pool.take(keyOf('/r'));
      await settle();
      expect(made).toHaveLength(3);
      a.end();
      await settle();
      expect(made).toHaveLength(4);
      await vi.advanceTimersByTimeAsync(REFILL_HOLD_MS - 1);
      expect(made).toHaveLength(4);
      await vi.advanceTimersByTimeAsync(1);
      await settle();
      expect(made).toHaveLength(5);
      expect(pool.state()[0]!.warm).toEqual(['m2', 'm3', 'm4']);
    } finally {
      vi.useRealTimers();
    }
  });

  it('replaces a parked member that ended, and drains every parked one on close', async () => {
    const { pool, made } = setup();
    void pool.set(spec);
    await settle();
    made[1]!.end();
    await settle();
    expect(pool.state()[0]!.warm).toEqual(['m0', 'm2', 'm3']);
    await pool.close();
    expect(made.filter((m) => m.drained).map((m) => m.id)).toEqual(['m0', 'm2', 'm3']);
    expect(pool.state()[0]!.warm).toEqual([]);
  });

  it('shrinks: the newest parked members end, and set resolves after they exited; grows again; size 0 removes the pool', async () => {
    const { pool, made } = setup();
    await pool.set(spec);
    await settle();
    const shrunk = await pool.set({ ...spec, size: 1 });
    expect(shrunk).toMatchObject({ rootfs: '/r', policy: null, size: 1, warm: ['m0'], starting: 0 });
    expect(made.map((m) => m.drained)).toEqual([false, true, true]);
    await settle();
    expect(made).toHaveLength(3);
    await pool.set({ ...spec, size: 2 });
    await settle();
    expect(pool.state()[0]!.warm).toEqual(['m0', 'm3']);
    expect(await pool.set({ ...spec, size: 0 })).toMatchObject({ size: 0, warm: [], starting: 0 });
    expect(made.every((m) => m.drained)).toBe(true);
    expect(pool.state()).toEqual([]);
    expect(pool.take(keyOf('/r'))).toBeUndefined();
  });

  it('a member that comes up after its pool shrank ends at once', async () => {
    const { pool, made, gate } = setup();
    gate.open = false;
    void pool.set(spec);
    await settle();
    expect(pool.state()[0]).toMatchObject({ warm: [], starting: 2 });
    await pool.set({ ...spec, size: 0 });
    expect(pool.state()[0]).toMatchObject({ size: 0, starting: 2 });
    for (const go of gate.waiting.splice(0)) go();
    await settle();
    expect(made.map((m) => m.drained)).toEqual([true, true]);
    expect(pool.state()).toEqual([]);
  });

  it('a pool is named by its spec without size: limits make another pool', async () => {
    const { pool } = setup();
    await pool.set({ image: 'a', size: 1 });
    await pool.set({ image: 'a', memory: '512m', size: 1 });
    await pool.set({ image: 'a', memory: '512M', size: 2 });
    expect(pool.state().map((p) => [p.memory ?? null, p.size])).toEqual([
      [null, 1],
      ['512M', 2],
    ]);
  });

  it('a changed source (another resolved directory) ends the parked members of the old one', async () => {
    const { pool, made, resolved } = setup();
    await pool.set({ image: 'a', size: 2 });
    await settle();
    const source = sourceOf({ image: 'a' })!;
    // A request that resolved the image to /r2 finds no member of its key; the old ones end.
    resolved.rootfs = '/r2';
    expect(pool.take(keyOf('/r2'), { source, rootfs: '/r2' })).toBeUndefined();
    await settle();
    expect(made.slice(0, 2).map((m) => m.drained)).toEqual([true, true]);
    expect(pool.state()[0]!.warm).toEqual(['m2', 'm3']);
    expect(pool.take(keyOf('/r'), { source, rootfs: '/r' })).toBeUndefined();
    // A request of another source leaves them alone.
    await settle();
    resolved.rootfs = '/r2';
    pool.take(keyOf('/x'), { source: sourceOf({ image: 'b' })!, rootfs: '/x' });
    expect(pool.take(keyOf('/r2'))?.id).toMatch(/^m\d$/);
  });
});
