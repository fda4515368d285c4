import { describe, it, expect } from 'vitest';
import { mergeRuntime } from '../../src/docker/runtime.js';

describe('mergeRuntime (daemon.json)', () => {
  it('adds the runtime to an empty or missing file', () => {
    const r = mergeRuntime(undefined, 'lattice-runsc', '/opt/lattice/runsc/lattice-runsc');
    expect(JSON.parse(r.text)).toEqual({ runtimes: { 'lattice-runsc': { path: '/opt/lattice/runsc/lattice-runsc' } } });
    expect(r.changed).toBe(true);
  });

  it('keeps every other setting and runtime', () => {
    const before = JSON.stringify({ 'log-level': 'warn', runtimes: { runsc: { path: '/usr/bin/runsc' } }, 'data-root': '/d' });
    const after = JSON.parse(mergeRuntime(before, 'lattice-runsc', '/w').text);
    expect(after).toEqual({ 'log-level': 'warn', 'data-root': '/d', runtimes: { runsc: { path: '/usr/bin/runsc' }, 'lattice-runsc': { path: '/w' } } });
  });

  it('is idempotent', () => {
    const once = mergeRuntime('{}', 'lattice-runsc', '/w').text;
    const twice = mergeRuntime(once, 'lattice-runsc', '/w');
    expect(twice.changed).toBe(false);
    expect(twice.text).toBe(once);
  });

  it('refuses a file it cannot parse, with the fix', () => {
    expect(() => mergeRuntime('{ "runtimes": ', 'x', '/w')).toThrow(/not valid JSON.*fix it by hand/);
    expect(() => mergeRuntime('[1]', 'x', '/w')).toThrow(/must hold a JSON object/);
  });
});
