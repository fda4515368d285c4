/** `sandbox run|start --max-flows N` (issue #13 item 9): checked, one line; the value reaches the flow table. */
import { describe, it, expect } from 'vitest';
import { parseMaxFlows } from '../../src/sandbox/inputs.js';
import { DefaultMaxFlows, FlowTable } from '../../src/dataplane/flows.js';
import { UsageError } from '../../src/errors.js';

describe('parseMaxFlows', () => {
  it('not given keeps the default; given is a whole number in range', () => {
    expect(parseMaxFlows(undefined)).toBeUndefined();
    expect(parseMaxFlows('16')).toBe(16);
    expect(parseMaxFlows('1048576')).toBe(1_048_576);
    expect(new FlowTable({ maxFlows: parseMaxFlows('64') }).maxFlows).toBe(64);
    expect(new FlowTable({ maxFlows: parseMaxFlows(undefined) }).maxFlows).toBe(DefaultMaxFlows);
  });

  it.each(['15', '0', '-1', '64.5', '1048577', '1e9', '', ' ', 'many', 'Infinity', '0x40'])('%j is refused with one line naming the flag and range', (raw) => {
    const call = () => parseMaxFlows(raw);
    expect(call).toThrow(UsageError);
    expect(call).toThrow(`--max-flows ${raw} is out of range; give a whole number of tracked flows from 16 to 1048576 (default 16384)`);
    expect(call).not.toThrow(/\n/);
  });
});
