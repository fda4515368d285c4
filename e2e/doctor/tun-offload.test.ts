/**
 * `lattice doctor`'s TUN offload line against the kernel: a TUN opened as a sandbox's is (IFF_VNET_HDR unless
 * LATTICE_TUN_OFFLOAD=off), TUNSETOFFLOAD asked of it, and the probe TUN gone afterwards; plus setTunOffload
 * itself (the kernel accepts CSUM/TSO4/TSO6 and refuses a bit it does not know).
 */
import { execa } from 'execa';
import { closeSync } from 'node:fs';
import { describe, expect, it, beforeAll } from 'vitest';
import { TunConst, openTunFd, setTunOffload } from '../../src/tun/linux.js';
import type { Check } from '../../src/doctor.js';
import { CLI, requireBinary, requirePath, requireRoot } from '../support/env.js';

beforeAll(async () => {
  requireRoot();
  requirePath('/dev/net/tun', 'load the tun module: modprobe tun');
  await requireBinary('setpriv');
});

/** `lattice doctor --json` with `env` on top of ours (LATTICE_TUN_OFFLOAD removed unless given), `pre` before node. */
async function doctor(env: Record<string, string> = {}, pre: string[] = []): Promise<{ checks: Check[]; exitCode: number | undefined }> {
  const base: Record<string, string | undefined> = { ...process.env, LATTICE_TUN_OFFLOAD: undefined };
  const r = await execa(pre[0] ?? process.execPath, [...(pre.length ? [...pre.slice(1), process.execPath] : []), CLI, 'doctor', '--json'], {
    reject: false, env: { ...base, ...env }, extendEnv: false,
  });
  return { checks: JSON.parse(String(r.stdout)) as Check[], exitCode: r.exitCode };
}

const line = (checks: Check[], name: string) => {
  const c = checks.find((x) => x.name === name);
  if (!c) throw new Error(`no "${name}" line in doctor output: ${checks.map((x) => x.name).join(', ')}`);
  return c;
};

const probeLinks = async () => String((await execa('ip', ['-o', 'link', 'show'])).stdout).split('\n').filter((l) => /^\d+: ltdoc[0-9a-f]{6}[:@]/.test(l));

describe('lattice doctor: TUN offload', () => {
  it('reports coalesce with IFF_VNET_HDR and TUNSETOFFLOAD accepted, right after the UDP offload line, and leaves no probe TUN', async () => {
    const { checks } = await doctor();
    const tun = line(checks, 'TUN offload');
    expect(tun).toMatchObject({ ok: true, optional: true });
    expect(tun.detail).toMatch(/^coalesce: IFF_VNET_HDR/);
    // Debian 12's kernel (6.1) has TUN TSO since 2.6.27: a refusal here would mean the ioctl went wrong.
    expect(tun.detail).toContain('TUNSETOFFLOAD (CSUM/TSO4/TSO6) accepted');
    expect(checks.findIndex((c) => c.name === 'TUN offload')).toBe(checks.findIndex((c) => c.name === 'UDP offload') + 1);
    expect(await probeLinks()).toEqual([]);
  });

  it('reports off (a warning, not a failure) under LATTICE_TUN_OFFLOAD=off, and the exit code does not change', async () => {
    const on = await doctor();
    const off = await doctor({ LATTICE_TUN_OFFLOAD: 'off' });
    const tun = line(off.checks, 'TUN offload');
    expect(tun).toMatchObject({ ok: false, optional: true, fix: 'unset LATTICE_TUN_OFFLOAD' });
    expect(tun.detail).toMatch(/^off: LATTICE_TUN_OFFLOAD=off, no IFF_VNET_HDR/);
    expect(off.exitCode).toBe(on.exitCode);
    // Any other value leaves it on (tunOffloadFromEnv).
    expect(line((await doctor({ LATTICE_TUN_OFFLOAD: 'on' })).checks, 'TUN offload').detail).toMatch(/^coalesce:/);
    expect(await probeLinks()).toEqual([]);
  });

  it('says why when no TUN can be opened (not root)', async () => {
    const { checks } = await doctor({}, ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups']);
    const tun = line(checks, 'TUN offload');
    expect(tun).toMatchObject({ ok: false, optional: true });
    expect(tun.detail).toMatch(/^cannot open a TUN: .*need root/);
    expect(tun.fix).toContain('run as root');
  });
});

describe('setTunOffload', () => {
  it('the kernel accepts CSUM/TSO4/TSO6 on a IFF_VNET_HDR TUN and refuses an unknown flag with EINVAL', () => {
    const { fd } = openTunFd(`ltdoc${process.pid.toString(16).padStart(6, '0').slice(-6)}`, { offload: true });
    try {
      expect(setTunOffload(fd, TunConst.TUN_F_CSUM | TunConst.TUN_F_TSO4 | TunConst.TUN_F_TSO6)).toBeUndefined();
      expect(setTunOffload(fd, 0)).toBeUndefined();
      expect(setTunOffload(fd, 0x4000_0000)).toBe('EINVAL');
    } finally {
      closeSync(fd);
    }
  });
});
