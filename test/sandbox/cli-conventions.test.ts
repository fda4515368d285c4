/** Pure pieces of the CLI's conventions (issue 22): exit codes, option checks, stdio plan, state dir. */
import { describe, it, expect } from 'vitest';
import { isAbsolute, resolve } from 'node:path';
import { exitCodeOf, EXIT } from '../../src/cli/run.js';
import { checkControlPlaneUrl } from '../../src/cli/sandbox.js';
import { LatticeError, UsageError } from '../../src/errors.js';
import { commandStartError } from '../../src/runsc/errors.js';
import { parseCapability } from '../../src/oci/capabilities.js';
import { planStdio } from '../../src/sandbox/stdio.js';
import { resolveStateDir } from '../../src/state.js';

describe('exit codes', () => {
  it.each([
    [new UsageError('x'), 'sandbox run', EXIT.usage],
    [new LatticeError('ERUNSC', 'x'), 'sandbox run', EXIT.launcher],
    [new LatticeError('ERUNSC', 'x'), 'sandbox start', EXIT.launcher],
    [new LatticeError('ECP', 'x'), 'token create', EXIT.failure],
    [new Error('x'), 'sandbox run', EXIT.launcher],
    [commandStartError('running container: ... error finding executable "nope" in PATH [/bin /sbin]: no such file or directory')!, 'sandbox run', 127],
    [commandStartError('creating process: failed to load /etc/passwd: permission denied')!, 'sandbox start', 126],
  ])('%s from %s -> %i', (err, path, code) => {
    expect(exitCodeOf(err, path)).toBe(code);
  });

  it('runsc failures that are not about the command stay runsc failures', () => {
    expect(commandStartError('cannot create sandbox: cannot read client sync file: EOF')).toBeUndefined();
    expect(commandStartError('creating process: failed to load /bin/x: no such file or directory')?.message).toMatch(/^\/bin\/x: command not found in the sandbox/);
    expect(commandStartError('creating process: failed to load /bin: is a directory')?.exitCode).toBe(126);
  });
});

describe('option checks', () => {
  it.each([['NET_RAW', 'CAP_NET_RAW'], ['cap_net_admin', 'CAP_NET_ADMIN'], ['CAP_SYS_PTRACE', 'CAP_SYS_PTRACE']])('--cap-add %s -> %s', (input, name) => {
    expect(parseCapability(input)).toBe(name);
  });
  it('an unknown capability is a usage error listing the choices', () => {
    expect(() => parseCapability('CAP_FOO')).toThrow(UsageError);
    expect(() => parseCapability('NET_RAWW')).toThrow(/did you mean CAP_NET_RAW\?.*choices: CHOWN/);
  });
  it.each(['nats://127.0.0.1:4222', 'tls://cp.example.org:4222', '127.0.0.1:4222', 'nats://[::1]:4222', 'cp.internal', 'nats://10.0.0.1:4222,nats://10.0.0.2:4222'])('--control-plane %s is accepted', (url) => {
    expect(() => checkControlPlaneUrl(url)).not.toThrow();
  });
  it('the admin API URL is refused with the NATS URL to use', () => {
    expect(() => checkControlPlaneUrl('http://127.0.0.1:8470')).toThrow(/admin API's URL; .*nats:\/\/127\.0\.0\.1:4222/);
    expect(() => checkControlPlaneUrl('nats://a b')).toThrow(UsageError);
    expect(() => checkControlPlaneUrl('nats://a:4222,http://b:8470')).toThrow(/admin API's URL/);
  });
});

describe('stdio plan', () => {
  const st = (kind: 'file' | 'tty' | 'pipe', ino: number) => ({ isFile: () => kind === 'file', isBlockDevice: () => false, dev: 1, ino });
  it('regular files are piped through the launcher; terminals and pipes are handed over', () => {
    expect(planStdio((fd) => [st('tty', 1), st('tty', 1), st('tty', 1)][fd]!)).toEqual({ stdin: 'inherit', stdout: 'inherit', merged: false });
    expect(planStdio((fd) => [st('file', 5), st('file', 6), st('pipe', 7)][fd]!)).toEqual({ stdin: 'pipe', stdout: 'pipe', merged: false });
  });
  it('`> log 2>&1` (one file on 1 and 2) is one merged pipe', () => {
    expect(planStdio((fd) => [st('pipe', 5), st('file', 6), st('file', 6)][fd]!)).toEqual({ stdin: 'inherit', stdout: 'pipe', merged: true });
  });
});

describe('state dir', () => {
  it('a relative --state-dir is made absolute', () => {
    expect(resolveStateDir('st')).toBe(resolve('st'));
    expect(isAbsolute(resolveStateDir())).toBe(true);
  });
});
