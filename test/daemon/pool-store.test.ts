import { describe, it, expect, beforeEach, afterEach } from 'vitest';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { POOL_STORE_FORMAT, PoolStore, formatStoredPools, mergePools, parseStoredPools, withSet } from '../../src/daemon/pool-store.js';
import { formatPoolSpec, parsePoolSpec, type PoolSpec } from '../../src/daemon/pool.js';
import { seededRandom } from '../support/random.js';

const P = '/state/daemon-pools.json';
const file = (pools: unknown[]) => JSON.stringify({ format: POOL_STORE_FORMAT, pools });

describe('parseStoredPools', () => {
  it('reads back what formatStoredPools wrote', () => {
    const specs: PoolSpec[] = [
      { rootfs: '/srv/r', size: 2 },
      { image: 'alpine:3.19', policy: '/etc/lattice/web.yaml', memory: '512m', cpus: '0.5', pidsLimit: '256', tmpSize: '64m', size: 4 },
    ];
    expect(parseStoredPools(formatStoredPools(specs), P)).toEqual({ specs, warnings: [] });
  });

  it.each([
    ['not JSON', '{"format":', /is not JSON/],
    ['another format', JSON.stringify({ format: 'lattice-daemon-pools/9', pools: [] }), /is not a lattice-daemon-pools\/1 file/],
    ['no list', JSON.stringify({ format: POOL_STORE_FORMAT }), /is not a lattice-daemon-pools\/1 file/],
    ['null', 'null', /is not a lattice-daemon-pools\/1 file/],
  ])('a file that is %s: no pools, one warning naming the file', (_what, text, why) => {
    const r = parseStoredPools(text, P);
    expect(r.specs).toEqual([]);
    expect(r.warnings).toHaveLength(1);
    expect(r.warnings[0]).toMatch(why);
    expect(r.warnings[0]).toContain(P);
  });

  it('skips each entry that does not parse, with one warning each, and keeps the others in order', () => {
    const good1 = { rootfs: '/a', size: 1 };
    const good2 = { image: 'b', size: 2 };
    const r = parseStoredPools(
      file([
        good1,
        { rootfs: '/a', size: 'two' }, // size not a number
        { rootfs: '/x', frob: 1, size: 1 }, // unknown key
        { rootfs: 'rel/x', size: 1 }, // relative path
        { rootfs: '/y', size: 0 }, // removed
        { image: 'c', memory: '1k', size: 1 }, // limit below the minimum
        { image: 'c', imageArchive: '/d.tar', size: 1 }, // two sources
        { rootfs: '/a', size: 3 }, // the same pool again
        good2,
        'nonsense',
      ]),
      P,
    );
    expect(r.specs).toEqual([good1, good2]);
    expect(r.warnings).toHaveLength(8);
    expect(r.warnings.map((w) => w.match(/stored pool (\d+) skipped/)?.[1])).toEqual(['2', '3', '4', '5', '6', '7', '8', '10']);
    expect(r.warnings[2]).toContain('rel/x is not an absolute path');
    expect(r.warnings[6]).toContain('listed twice');
  });
});

describe('withSet', () => {
  const a = { rootfs: '/a', size: 1 };
  const b = { image: 'b', memory: '512m', size: 2 };
  it('appends a new pool, replaces a known one in place (limits normalized), removes one with size 0', () => {
    expect(withSet([], a)).toEqual([a]);
    expect(withSet([a], b)).toEqual([a, b]);
    const b5 = { image: 'b', memory: '512M', size: 5 };
    expect(withSet([b, a], b5)).toEqual([b5, a]);
    expect(withSet([a, b], { image: 'b', memory: '512m', size: 0 })).toEqual([a]);
    expect(withSet([a], { image: 'b', size: 0 })).toEqual([a]);
    // Other limits are another pool.
    expect(withSet([b], { image: 'b', memory: '1g', size: 1 })).toHaveLength(2);
  });
});

describe('mergePools', () => {
  it('flags first and in their order, then the stored pools no flag names; a flag wins over the stored size', () => {
    const stored = [
      { rootfs: '/a', size: 5 },
      { image: 'b', size: 2 },
      { rootfs: '/c', size: 1 },
    ];
    const flags = [
      { rootfs: '/c', size: 1 },
      { rootfs: '/a', size: 2 },
      { rootfs: '/new', size: 3 },
    ];
    const m = mergePools(flags, stored);
    expect(m.flags).toEqual(flags);
    expect(m.restored).toEqual([{ image: 'b', size: 2 }]);
    // /c has the same size on both sides: nothing was overridden.
    expect(m.overridden).toEqual([{ flag: { rootfs: '/a', size: 2 }, storedSize: 5 }]);
  });
  it('without flags every stored pool is restored; without a store, the flags alone', () => {
    const s = [{ rootfs: '/a', size: 5 }];
    expect(mergePools([], s)).toEqual({ flags: [], restored: s, overridden: [] });
    expect(mergePools(s, [])).toEqual({ flags: s, restored: [], overridden: [] });
  });
});

describe('formatPoolSpec', () => {
  it('writes SPEC text that parsePoolSpec reads back to the same spec (seeded random specs)', () => {
    const rnd = seededRandom();
    const pick = <T>(xs: readonly T[]) => xs[rnd.int(xs.length)]!;
    for (let i = 0; i < 200; i++) {
      const source = pick([{ rootfs: '/srv/r' }, { image: 'alpine:3.19' }, { imageArchive: '/a/b.tar' }, { ociLayout: '/o:tag' }]);
      const spec: PoolSpec = { ...source, size: rnd.int(257) };
      if (rnd.int(2)) spec.policy = '/etc/p.yaml';
      if (rnd.int(2)) spec.memory = pick(['512m', '1g', '64M']);
      if (rnd.int(2)) spec.cpus = pick(['0.5', '2']);
      if (rnd.int(2)) spec.pidsLimit = pick(['128', '256']);
      if (rnd.int(2)) spec.tmpSize = pick(['64m', '1g']);
      const text = formatPoolSpec(spec);
      expect(parsePoolSpec(text, (p) => p, 0), text).toEqual(spec);
      expect(formatPoolSpec(spec, 0)).toMatch(/,size=0$/);
    }
  });
});

describe('PoolStore', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'lt-pool-store-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a missing file is an empty store; each record rewrites the whole file, mode 0600, no temporary left', async () => {
    const path = join(dir, 'state', 'daemon-pools.json');
    const { store, stored } = await PoolStore.open(path);
    expect(stored).toEqual({ specs: [], warnings: [] });
    await store.record({ rootfs: '/a', size: 2 });
    await store.record({ image: 'b', size: 1 });
    await store.record({ rootfs: '/a', size: 0 });
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(await readdir(join(dir, 'state'))).toEqual(['daemon-pools.json']);
    const again = await PoolStore.open(path);
    expect(again.stored).toEqual({ specs: [{ image: 'b', size: 1 }], warnings: [] });
    expect(again.store.list()).toEqual([{ image: 'b', size: 1 }]);
  });

  it('records made at once are written in the order they were made: the file ends with the last', async () => {
    const path = join(dir, 'daemon-pools.json');
    const { store } = await PoolStore.open(path);
    await Promise.all(Array.from({ length: 20 }, (_, i) => store.record({ rootfs: '/a', size: i + 1 })));
    expect(parseStoredPools(await readFile(path, 'utf8'), path).specs).toEqual([{ rootfs: '/a', size: 20 }]);
  });

  it('a damaged or unreadable file is a warning, never an error; the next record replaces a damaged one', async () => {
    const path = join(dir, 'daemon-pools.json');
    await writeFile(path, 'garbage');
    const { store, stored } = await PoolStore.open(path);
    expect(stored.specs).toEqual([]);
    expect(stored.warnings).toEqual([expect.stringContaining('is not JSON') as unknown]);
    await store.record({ rootfs: '/a', size: 1 });
    expect((await PoolStore.open(path)).stored).toEqual({ specs: [{ rootfs: '/a', size: 1 }], warnings: [] });

    const asDir = join(dir, 'sub');
    await mkdir(asDir);
    const unreadable = await PoolStore.open(asDir);
    expect(unreadable.stored.specs).toEqual([]);
    expect(unreadable.stored.warnings).toEqual([expect.stringContaining(`cannot read ${asDir}`) as unknown]);
    // Writing over a directory fails with the store's own error, saying what it means.
    await expect(unreadable.store.record({ rootfs: '/a', size: 1 })).rejects.toMatchObject({ code: 'EDAEMON_POOL_STORE', message: expect.stringContaining('a daemon restart forgets it') as unknown });
  });
});
