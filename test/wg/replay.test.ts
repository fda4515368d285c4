import { describe, expect, it } from 'vitest';
import { ReplayFilter, WindowSize } from '../../src/wg/replay.js';

// Port of wireguard-go replay/replay_test.go. Deviation: wireguard-go uses RejectAfterMessages = 2^64-2^4-1;
// our counters are exact JS numbers, so the limit cases use a smaller limit with the same shape.
const LIMIT = 2 ** 48 - 2 ** 4 - 1;
const T_LIM = WindowSize + 1;

const table: [number, boolean][] = [
  [0, true], [1, true], [1, false], [9, true], [8, true], [7, true], [7, false],
  [T_LIM, true], [T_LIM - 1, true], [T_LIM - 1, false], [T_LIM - 2, true], [2, true], [2, false],
  [T_LIM + 16, true], [3, false], [T_LIM + 16, false], [T_LIM * 4, true], [T_LIM * 4 - (T_LIM - 1), true],
  [10, false], [T_LIM * 4 - T_LIM, false], [T_LIM * 4 - (T_LIM + 1), false], [T_LIM * 4 - (T_LIM - 2), true],
  [T_LIM * 4 + 1 - T_LIM, false], [0, false], [LIMIT, false], [LIMIT - 1, true], [LIMIT, false],
  [LIMIT - 1, false], [LIMIT - 2, true], [LIMIT + 1, false], [LIMIT + 2, false], [LIMIT - 2, false],
  [LIMIT - 3, true], [0, false],
];

describe('replay window (RFC 6479, wireguard-go cases)', () => {
  it('WindowSize matches wireguard-go (127 blocks of 64 bits)', () => {
    expect(WindowSize).toBe(8128);
  });
  it('sequence table', () => {
    const f = new ReplayFilter();
    table.forEach(([n, want], i) => {
      expect(f.validateCounter(n, LIMIT), `test ${i + 1}: ${n}`).toBe(want);
    });
  });
  const bulk = (fn: (f: ReplayFilter, T: (n: number, want: boolean) => void) => void) => () => {
    const f = new ReplayFilter();
    const failures: number[] = [];
    fn(f, (n, want) => {
      if (f.validateCounter(n, LIMIT) !== want) failures.push(n);
    });
    expect(failures).toEqual([]);
  };
  it('bulk 1', bulk((_f, T) => {
    for (let i = 1; i <= WindowSize; i++) T(i, true);
    T(0, true);
    T(0, false);
  }));
  it('bulk 2', bulk((_f, T) => {
    for (let i = 2; i <= WindowSize + 1; i++) T(i, true);
    T(1, true);
    T(0, false);
  }));
  it('bulk 3', bulk((_f, T) => {
    for (let i = WindowSize + 1; i > 0; i--) T(i, true);
  }));
  it('bulk 4', bulk((_f, T) => {
    for (let i = WindowSize + 2; i > 1; i--) T(i, true);
    T(0, false);
  }));
  it('bulk 5', bulk((_f, T) => {
    for (let i = WindowSize; i > 0; i--) T(i, true);
    T(WindowSize + 1, true);
    T(0, false);
  }));
  it('bulk 6', bulk((_f, T) => {
    for (let i = WindowSize; i > 0; i--) T(i, true);
    T(0, true);
    T(WindowSize + 1, true);
  }));
});
