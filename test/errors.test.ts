import { describe, it, expect } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCode, errorMessage } from '../src/errors.js';

/** OS errno names that src/ matches on (node:fs, node:dns, ioctl), which are not lattice's codes. */
const OS_ERRNO = new Set(['EACCES', 'EADDRINUSE', 'ECONNREFUSED', 'EEXIST', 'EINVAL', 'ENODATA', 'ENODEV', 'ENOENT', 'ENOEXEC', 'ENOTEMPTY', 'ENOTFOUND', 'EPERM', 'EPIPE', 'ESRCH', 'EBUSY', 'EAGAIN', 'ECONNRESET', 'ETIMEDOUT', 'EISDIR', 'ENOTDIR', 'EXDEV', 'ENOSPC', 'EROFS', 'EMFILE']);
/** Quoted words that look like codes but are column headers. */
const NOT_CODES = new Set(['ENDPOINT', 'ENROLLED']);

function* sources(dir: string): Generator<string> {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) yield* sources(p);
    else if (p.endsWith('.ts')) yield p;
  }
}

describe('error codes', () => {
  const listed = new Set<string>(Object.values(ErrorCode));
  const used = new Map<string, string>();
  for (const file of sources(new URL('../src', import.meta.url).pathname)) {
    let text = readFileSync(file, 'utf8');
    // The list itself does not count as a use.
    if (file.endsWith('/src/errors.ts')) text = text.slice(text.indexOf('export class LatticeError'));
    for (const m of text.matchAll(/'(E[A-Z][A-Z0-9_]+)'/g)) used.set(m[1], file);
  }

  it('every code used in src/ is in the one list (src/errors.ts)', () => {
    const unlisted = [...used].filter(([c]) => !listed.has(c) && !OS_ERRNO.has(c) && !NOT_CODES.has(c));
    expect(unlisted).toEqual([]);
  });

  it('every listed code is used, once in the list, in the one style', () => {
    expect([...listed].filter((c) => !used.has(c))).toEqual([]);
    expect(listed.size).toBe(Object.values(ErrorCode).length);
    for (const c of listed) expect(c).toMatch(/^E[A-Z0-9]+(_[A-Z0-9]+)*$/);
  });
});

describe('errorMessage', () => {
  it('turns a nats.js error that is only a code into a line a person can act on', async () => {
    const { NatsError, ErrorCode } = await import('nats');
    expect(errorMessage(NatsError.errorForCode(ErrorCode.NoResponders))).toMatch(/^NATS answered 503 \(no responders\): .*retry shortly$/);
    expect(errorMessage(NatsError.errorForCode(ErrorCode.Timeout))).toBe('a NATS request timed out: is the control plane running and reachable?');
    expect(errorMessage(new Error('503'))).toBe('503'); // only nats.js errors are read as NATS codes
  });
});
