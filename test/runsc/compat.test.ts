import { describe, it, expect } from 'vitest';
import { parseRunscVersion, needsNetnsWorkaround } from '../../src/runsc/compat.js';
import { runscMessage } from '../../src/runsc/errors.js';

describe('runsc version and the gVisor 10704 workaround', () => {
  it.each([
    ['runsc version 0.0~20240729.0\nspec: 1.0.2-dev', 20240729],
    ['runsc version release-20250101.0\nspec: 1.1.0', 20250101],
    ['runsc version 0.0~20221219.0', 20221219],
    ['runsc version custom-build', undefined],
  ])('parses %j', (out, date) => {
    expect(parseRunscVersion(out).date).toBe(date);
  });

  it('applies only to old builds on kernels that expose rmem_default in every netns', () => {
    const old = parseRunscVersion('runsc version 0.0~20240729.0');
    const fixed = parseRunscVersion('runsc version release-20240801.0');
    expect(needsNetnsWorkaround(old, 6, true)).toBe(true);
    expect(needsNetnsWorkaround(old, 5, true)).toBe(false);
    expect(needsNetnsWorkaround(old, 6, false)).toBe(false);
    expect(needsNetnsWorkaround(fixed, 6, true)).toBe(false);
    expect(needsNetnsWorkaround(parseRunscVersion('runsc version dev'), 6, true)).toBe(false);
  });

  it('quotes runsc\'s own last message, not its log lines', () => {
    const stderr = 'W1128 16:12:17.441489 6419 filter.go:40] warning\nrunning container: creating process: failed to load /x: no such file\n';
    expect(runscMessage(stderr)).toBe('running container: creating process: failed to load /x: no such file');
    expect(runscMessage('')).toMatch(/no message/);
  });
});
