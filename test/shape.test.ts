import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { describeCycle, folderCycles, folderGraph, moduleState } from './support/shape.js';

/**
 * The code's shape (issue #15, "Done when"): no import cycle between src/ folders, and no module-level mutable
 * state outside lazy native-library loaders. Each check is also run on a planted example, so it can fail.
 */

const ROOT = join(import.meta.dirname, '..');

function sources(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string): void => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (p.endsWith('.ts') && !p.endsWith('.d.ts')) out.set(relative(ROOT, p), readFileSync(p, 'utf8'));
    }
  };
  walk(dir);
  return out;
}

/**
 * Module-level variables that may stay: each loads a native library (or a generated module) on first use, once
 * per process, and holds nothing a caller could observe or share by accident.
 */
const LAZY_LOADERS = new Set([
  'src/nat/ice.ts ndc', // node-datachannel, only when ICE is configured
  'src/tun/linux.ts libc', // koffi + libc for TUNSETIFF
  'src/image/xattr.ts fns', // koffi + libc lsetxattr/lgetxattr
  'src/oci/validate.ts validator', // the compiled OCI schema validator (import of a generated module)
  // The console's browser script (its own tsconfig, never imported by Node code): one page, one program;
  // its state is the page's sign-in and what it shows.
  'src/console/web/app.ts csrf',
  'src/console/web/app.ts agents',
  'src/console/web/app.ts live',
  'src/console/web/app.ts lastAgentsRefresh',
]);

describe('the shape of src/', () => {
  const files = sources(join(ROOT, 'src'));

  it('has no import cycle between folders', () => {
    const g = folderGraph(files);
    const report = folderCycles(g).map((c) => `cycle ${c.join(' <-> ')}:\n  ${describeCycle(g, c).join('\n  ')}`);
    expect(report, report.join('\n')).toEqual([]);
  }, 60_000);

  it('has no module-level mutable state outside lazy native-library loaders', () => {
    const found = [...files].flatMap(([f, s]) => moduleState(f, s)).filter((x) => !LAZY_LOADERS.has(x.replace(/:\d+ /, ' ')));
    expect(found, found.join('\n')).toEqual([]);
  }, 60_000);
});

describe("the README's folder table", () => {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf('| folder | one job |');
  const table = readme.slice(start, readme.indexOf('\n\n', start));
  // Only the first cell of each row names folders; the second may mention others in passing.
  const firstCells = table.split('\n').map((row) => row.split('|')[1] ?? '').join('\n');
  const named = [...firstCells.matchAll(/`([a-z0-9*._-]+(?:\/[a-z0-9*._-]+)*\/?)`/g)].map((m) => m[1]).filter((n) => n.endsWith('/'));

  it('names every folder of src/ and of the repository', () => {
    const dirs = (d: string, prefix: string) =>
      readdirSync(join(ROOT, d), { withFileTypes: true })
        .filter((e) => e.isDirectory() && !e.name.startsWith('.') && e.name !== 'node_modules' && e.name !== 'dist')
        .map((e) => `${prefix}${e.name}/`);
    const missing = [...dirs('src', 'src/'), ...dirs('.', '')].filter((d) => d !== 'src/' && !named.includes(d));
    expect(missing, `add these to the README's folder table: ${missing.join(', ')}`).toEqual([]);
  });

  it('names no folder that does not exist', () => {
    const gone = named.filter((n) => !existsSync(join(ROOT, n)));
    expect(gone, `the README's folder table names folders that are gone: ${gone.join(', ')}`).toEqual([]);
  });
});

describe('the shape checks catch planted examples', () => {
  it('finds a cycle through three folders, with the files that make it', () => {
    const planted = new Map([
      ['src/a/x.ts', "import { y } from '../b/y.js';\nexport const x = y;"],
      ['src/b/y.ts', "export { z as y } from '../c/z.js';"],
      ['src/c/z.ts', "export const z = 1;\nexport async function later() { return (await import('../a/x.js')).x; }"],
      ['src/d/w.ts', "import type { x } from '../a/x.js';\nexport type W = typeof x;"],
    ]);
    const g = folderGraph(planted);
    expect(folderCycles(g)).toEqual([['a', 'b', 'c']]);
    expect(describeCycle(g, ['a', 'b', 'c'])).toContain('c -> a (src/c/z.ts -> src/a/x.ts)');
  });

  it('counts type-only imports and top-level files', () => {
    const g = folderGraph(
      new Map([
        ['src/a/x.ts', "import type { T } from '../top.js';\nexport type X = T;"],
        ['src/top.ts', "import type { X } from './a/x.js';\nexport type T = number; export type Y = X;"],
      ]),
    );
    expect(folderCycles(g)).toEqual([['a', 'top.ts']]);
  });

  it('finds module-level lets, mutated collections and buffers, and leaves constants alone', () => {
    const planted = [
      'let pool = "";', // a shared pool
      'export let counter = 0;',
      'const seen = new Set<string>();',
      'export function remember(k: string) { seen.add(k); }',
      'const scratch = Buffer.alloc(16);',
      'export function fill(i: number) { scratch[i] = 1; }',
      'const TABLE = new Map([["a", 1]]);', // read-only table: fine
      'const LIMITS = [1, 2, 3];', // never mutated: fine
      'export const lookup = (k: string) => TABLE.get(k) ?? LIMITS[0];',
      'function f() { let local = 0; local++; return local + pool.length; }',
      'export { f };',
    ].join('\n');
    expect(moduleState('src/x/planted.ts', planted)).toEqual(['src/x/planted.ts:1 pool', 'src/x/planted.ts:2 counter', 'src/x/planted.ts:3 seen', 'src/x/planted.ts:5 scratch']);
  });
});
