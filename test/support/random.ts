import { randomInt } from 'node:crypto';
import { onTestFailed } from 'vitest';

/** A seeded source of test inputs: the same seed gives the same bytes, so a failure can be replayed. */
export interface TestRandom {
  readonly seed: number;
  /** `n` bytes. */
  bytes(n: number): Uint8Array;
  /** An integer in [0, max). */
  int(max: number): number;
  /** A float in [0, 1). */
  float(): number;
}

/**
 * Call inside a test. The seed is LATTICE_TEST_SEED when set, else fresh; a failing test prints it with the line
 * that replays it. The generator is splitmix32: fast, 32-bit state, fine for inputs (not for keys).
 */
export function seededRandom(): TestRandom {
  const fromEnv = process.env.LATTICE_TEST_SEED;
  const seed = fromEnv !== undefined && fromEnv !== '' ? Number(fromEnv) >>> 0 : randomInt(0, 2 ** 32);
  onTestFailed(() => {
    console.error(`random inputs came from seed ${seed}; replay with LATTICE_TEST_SEED=${seed}`);
  });
  let state = seed;
  const next = (): number => {
    state = (state + 0x9e3779b9) >>> 0;
    let z = state;
    z = Math.imul(z ^ (z >>> 16), 0x21f0aaad) >>> 0;
    z = Math.imul(z ^ (z >>> 15), 0x735a2d97) >>> 0;
    return (z ^ (z >>> 15)) >>> 0;
  };
  return {
    seed,
    bytes(n) {
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i++) out[i] = next() & 0xff;
      return out;
    },
    int: (max) => Math.floor((next() / 2 ** 32) * max),
    float: () => next() / 2 ** 32,
  };
}
