/** Launcher log lines: text for a person on a terminal, JSON otherwise (issue 22, item 8). */
import { describe, it, expect } from 'vitest';
import { humanLine, logFormat } from '../../src/log.js';

describe('log format', () => {
  it('a terminal gets text, a file or pipe JSON; LATTICE_LOG_FORMAT decides when set', () => {
    expect(logFormat(undefined, true)).toBe('text');
    expect(logFormat(undefined, false)).toBe('json');
    expect(logFormat('json', true)).toBe('json');
    expect(logFormat('text', false)).toBe('text');
  });
  it('a pino line becomes one readable line with its fields', () => {
    const line = JSON.stringify({ level: 40, time: 1, pid: 7, name: 'lattice', msg: 'policy updated by the control plane', cut: 2 });
    expect(humanLine(line)).toBe('lattice: warning: policy updated by the control plane (cut=2)\n');
    expect(humanLine(JSON.stringify({ level: 50, msg: 'audit event not recorded', err: 'disk full', type: 'flow.opened' }))).toBe(
      'lattice: error: audit event not recorded (err=disk full, type=flow.opened)\n',
    );
  });
});
