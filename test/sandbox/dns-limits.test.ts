/** `sandbox start --dns-max-in-flight/--dns-rate/--dns-burst` (issue #13 item 9): checked, one line each. */
import { describe, it, expect } from 'vitest';
import { parseDnsLimits } from '../../src/sandbox/inputs.js';
import { UsageError } from '../../src/errors.js';

describe('parseDnsLimits', () => {
  it('flags not given keep the pump defaults; given ones are numbers', () => {
    expect(parseDnsLimits({})).toEqual({});
    expect(parseDnsLimits({ maxInFlight: '8', perSecond: '2.5', burst: '20' })).toEqual({ maxInFlight: 8, perSecond: 2.5, burst: 20 });
    expect(parseDnsLimits({ perSecond: '10000' })).toEqual({ perSecond: 10000 });
  });

  it.each([
    [{ maxInFlight: '0' }, /^--dns-max-in-flight 0 is out of range; give a whole number of upstream lookups in flight at once from 1 to 4096 \(default 64\)$/],
    [{ maxInFlight: '1.5' }, /^--dns-max-in-flight 1\.5 /],
    [{ maxInFlight: '5000' }, /^--dns-max-in-flight 5000 /],
    [{ perSecond: '0' }, /^--dns-rate 0 is out of range; give a number of upstream lookups per second from 0\.1 to 10000 \(default 50\)$/],
    [{ perSecond: 'fast' }, /^--dns-rate fast /],
    [{ perSecond: '' }, /^--dns-rate  /],
    [{ perSecond: 'Infinity' }, /^--dns-rate Infinity /],
    [{ burst: '-1' }, /^--dns-burst -1 is out of range; give a whole number of upstream lookups in a burst above the rate from 1 to 100000 \(default 100\)$/],
    [{ burst: '1e9' }, /^--dns-burst 1e9 /],
  ])('%o is refused with one line naming the flag', (values, message) => {
    const call = () => parseDnsLimits(values);
    expect(call).toThrow(UsageError);
    expect(call).toThrow(message); // one line: the patterns are anchored at both ends or end in the value
    expect(call).not.toThrow(/\n/);
  });
});
