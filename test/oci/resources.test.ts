import { describe, expect, it } from 'vitest';
import { buildSpec } from '../../src/oci/spec.js';
import { specProblems } from '../../src/oci/validate.js';
import { defaultResourceLimits, ociResources, parseResourceFlags } from '../../src/oci/resources.js';
import { CgroupKill, cgroupKillFromLog } from '../../src/runsc/cgroup-kill.js';
import { limitMessage } from '../../src/sandbox/run.js';

const host = { mem: 16 * 2 ** 30, cpus: 8 };

describe('resource limits', () => {
  it('defaults protect the host: min(2 GiB, half the RAM), CPUs - 1, 1024 tasks', () => {
    expect(defaultResourceLimits(host)).toEqual({ memoryBytes: 2 * 2 ** 30, cpus: 7, pids: 1024 });
    expect(defaultResourceLimits({ mem: 2 * 2 ** 30, cpus: 1 })).toEqual({ memoryBytes: 2 ** 30, cpus: 1, pids: 1024 });
  });

  it('flags override the defaults and become linux.resources', () => {
    const l = parseResourceFlags({ memory: '512m', cpus: '1.5', pidsLimit: '256' }, defaultResourceLimits(host));
    expect(ociResources(l)).toEqual({
      memory: { limit: 512 * 2 ** 20, swap: 512 * 2 ** 20 },
      cpu: { quota: 150_000, period: 100_000 },
      pids: { limit: 256 },
    });
  });

  for (const [flags, msg] of [
    [{ memory: 'much' }, '--memory "much" is not a size'],
    [{ memory: '4m' }, 'below the 32m gVisor needs'],
    [{ cpus: '0' }, '--cpus "0" must be a number of CPUs'],
    [{ cpus: 'two' }, '--cpus "two"'],
    [{ pidsLimit: '64' }, '--pids-limit 64 is below 128'],
    [{ pidsLimit: '1e3' }, 'must be a positive whole number'],
  ] as const) {
    it(`refuses ${JSON.stringify(flags)}`, () => {
      expect(() => parseResourceFlags(flags, defaultResourceLimits(host))).toThrow(msg);
    });
  }

  it('the spec carries resources and the cgroup path, and stays valid against the schema', async () => {
    const spec = buildSpec({ args: ['true'], resources: ociResources(defaultResourceLimits(host)), cgroupsPath: '/lattice/lt-1', tmpSizeBytes: 1 << 20 });
    expect(spec.linux.cgroupsPath).toBe('/lattice/lt-1');
    expect(spec.linux.resources?.pids.limit).toBe(1024);
    expect(spec.mounts.find((m) => m.destination === '/tmp')?.options).toContain('size=1048576');
    expect(await specProblems(spec)).toEqual([]);
  });
});

describe('which limit stopped a sandbox, from the kernel log', () => {
  const log = [
    '6,100,5,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=lt-2,mems_allowed=0,oom_memcg=/lattice/lt-2,task_memcg=/lattice/lt-2,task=exe,pid=1,uid=0',
    '6,101,6,-;cgroup: fork rejected by pids controller in /lattice/lt-3',
    '6,102,7,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=lt-10,mems_allowed=0,oom_memcg=/lattice/lt-10,task_memcg=/lattice/lt-10,task=exe,pid=2,uid=0',
  ];
  it('names the OOM kill of exactly this cgroup', () => {
    expect(cgroupKillFromLog(log, '/lattice/lt-2')).toBe(CgroupKill.Oom);
    expect(cgroupKillFromLog(log, '/lattice/lt-1')).toBeUndefined(); // lt-10 is another sandbox
  });
  it('names a pids refusal', () => {
    expect(cgroupKillFromLog(log, '/lattice/lt-3')).toBe(CgroupKill.PidsLimit);
  });
  it('says it in one line with the exit status', () => {
    const r = ociResources({ memoryBytes: 64 * 2 ** 20, cpus: 1, pids: 128 });
    expect(limitMessage('hog', CgroupKill.Oom, r, 137)).toBe('lattice: sandbox hog was killed: out of memory (limit 64 MiB, raise it with --memory); exit status 137');
    expect(limitMessage('s', CgroupKill.PidsLimit, r, 2)).not.toContain('\n');
  });
});
