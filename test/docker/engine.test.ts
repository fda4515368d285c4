import { describe, it, expect } from 'vitest';
import { pino } from 'pino';
import Docker from 'dockerode';
import {
  buildCreateOptions,
  bindsFromMounts,
  containerName,
  dockerCapability,
  launcherAliveFromLabels,
  netnsMapFile,
  runInDocker,
  DockerLabel,
  type CreateInput,
} from '../../src/docker/engine.js';
import { DOCKER_RUNTIME_ARGS, mergeRuntime, sameRuntime } from '../../src/docker/runtime.js';
import { processStartTicks } from '../../src/proc.js';
import { hostnameOf } from '../../src/sandbox/lifecycle.js';

const base: CreateInput = { id: 'lt-0a1b2c3d', name: 'my agent', image: 'agent:1', stdin: false, launcher: { pid: 42, startTicks: 777 } };

describe('buildCreateOptions', () => {
  it('locks the container down and labels it', () => {
    const o = buildCreateOptions(base);
    expect(o.name).toBe('lattice-lt-0a1b2c3d');
    expect(o.Image).toBe('agent:1');
    expect(o.Hostname).toBe('my-agent');
    expect(o.Labels).toEqual({
      [DockerLabel.id]: 'lt-0a1b2c3d',
      [DockerLabel.name]: 'my agent',
      [DockerLabel.managed]: 'true',
      [DockerLabel.launcherPid]: '42',
      [DockerLabel.launcherStart]: '777',
    });
    expect(o.HostConfig).toMatchObject({
      Runtime: 'lattice-runsc',
      NetworkMode: 'none',
      ReadonlyRootfs: true,
      Tmpfs: { '/tmp': 'rw,nosuid,nodev,size=64m' },
      CapDrop: ['ALL'],
      SecurityOpt: ['no-new-privileges'],
      Binds: [],
      AutoRemove: false,
    });
    expect(o.HostConfig?.CapAdd).toBeUndefined();
    // The image's config stays in charge unless a flag says otherwise.
    for (const k of ['Cmd', 'Entrypoint', 'Env', 'WorkingDir', 'User'] as const) expect(o[k]).toBeUndefined();
    expect(o).toMatchObject({ Tty: false, OpenStdin: false, AttachStdin: false, StdinOnce: false, AttachStdout: true, AttachStderr: true });
  });

  it('maps the overrides: cmd, entrypoint, env, cwd, user, capabilities, stdin, tmpfs size', () => {
    const o = buildCreateOptions({
      ...base,
      cmd: ['-c', 'echo hi'],
      entrypoint: '/bin/sh',
      env: ['A=1'],
      cwd: '/work',
      user: { uid: 1000, gid: 100 },
      capabilities: ['net_raw', 'CAP_CHOWN'],
      stdin: true,
      tmpfsSize: '8m',
    });
    expect(o).toMatchObject({ Cmd: ['-c', 'echo hi'], Entrypoint: ['/bin/sh'], Env: ['A=1'], WorkingDir: '/work', User: '1000:100' });
    expect(o).toMatchObject({ OpenStdin: true, AttachStdin: true, StdinOnce: true });
    expect(o.HostConfig?.CapAdd).toEqual(['CAP_NET_RAW', 'CAP_CHOWN']);
    expect(o.HostConfig?.Tmpfs).toEqual({ '/tmp': 'rw,nosuid,nodev,size=8m' });
    expect(buildCreateOptions({ ...base, user: 'agent:agent' }).User).toBe('agent:agent');
  });

  it('an empty entrypoint clears the image\'s', () => {
    expect(buildCreateOptions({ ...base, entrypoint: '' }).Entrypoint).toEqual(['']);
    expect(buildCreateOptions({ ...base, entrypoint: [] }).Entrypoint).toEqual(['']);
    expect(buildCreateOptions({ ...base, entrypoint: ['/bin/sh', '-c'] }).Entrypoint).toEqual(['/bin/sh', '-c']);
  });

  it('turns the network\'s resolv.conf mount into a read-only bind', () => {
    const o = buildCreateOptions({ ...base, mounts: [{ destination: '/etc/resolv.conf', type: 'bind', source: '/s/lt-1/resolv.conf', options: ['rbind', 'ro'] }] });
    expect(o.HostConfig?.Binds).toEqual(['/s/lt-1/resolv.conf:/etc/resolv.conf:ro']);
  });
});

describe('bindsFromMounts', () => {
  it('keeps rw binds rw and refuses what Docker binds cannot express', () => {
    expect(bindsFromMounts([{ destination: '/data', source: '/host/data', options: ['bind'] }])).toEqual(['/host/data:/data']);
    expect(() => bindsFromMounts([{ destination: '/t', type: 'tmpfs', source: 'tmpfs' }])).toThrow(/bind mounts only/);
    expect(() => bindsFromMounts([{ destination: '/d', type: 'bind' }])).toThrow(/bind mounts only/);
    expect(() => bindsFromMounts([{ destination: '/d', type: 'bind', source: '/a:b' }])).toThrow(/':'/);
  });
});

describe('names and labels', () => {
  it('capabilities take either spelling and reject junk', () => {
    expect(dockerCapability('net_raw')).toBe('CAP_NET_RAW');
    expect(dockerCapability('CAP_SYS_ADMIN')).toBe('CAP_SYS_ADMIN');
    expect(() => dockerCapability('ALL; rm')).toThrow(/not a name/);
  });

  it('hostnames and container names', () => {
    expect(hostnameOf('--weird name!--')).toBe('weird-name');
    expect(hostnameOf('___')).toBe('sandbox');
    expect(hostnameOf('x'.repeat(80))).toHaveLength(63);
    expect(containerName('lt-1')).toBe('lattice-lt-1');
  });

  it('the netns mapping file is named by a container id only', () => {
    expect(netnsMapFile('a'.repeat(64), '/m')).toBe(`/m/${'a'.repeat(64)}`);
    expect(() => netnsMapFile('../etc/passwd', '/m')).toThrow(/unexpected container id/);
  });

  it('liveness from labels needs the same pid and start time', () => {
    const me = { [DockerLabel.launcherPid]: String(process.pid), [DockerLabel.launcherStart]: String(processStartTicks(process.pid)) };
    expect(launcherAliveFromLabels(me)).toBe(true);
    expect(launcherAliveFromLabels({ ...me, [DockerLabel.launcherStart]: '1' })).toBe(false);
    expect(launcherAliveFromLabels({})).toBe(false);
  });
});

describe('runtime registration with runtimeArgs', () => {
  it('writes the args, and a changed or missing arg list counts as a change', () => {
    const r = mergeRuntime('{"debug":true}', 'lattice-runsc', '/w', DOCKER_RUNTIME_ARGS);
    expect(JSON.parse(r.text)).toEqual({ debug: true, runtimes: { 'lattice-runsc': { path: '/w', runtimeArgs: [...DOCKER_RUNTIME_ARGS] } } });
    expect(mergeRuntime(r.text, 'lattice-runsc', '/w', DOCKER_RUNTIME_ARGS).changed).toBe(false);
    expect(mergeRuntime('{"runtimes":{"lattice-runsc":{"path":"/w"}}}', 'lattice-runsc', '/w', DOCKER_RUNTIME_ARGS).changed).toBe(true);
    expect(sameRuntime({ path: '/w', runtimeArgs: ['--a'] }, '/w', ['--b'])).toBe(false);
    expect(sameRuntime({ path: '/w' }, '/w')).toBe(true);
    expect(sameRuntime(undefined, '/w')).toBe(false);
  });
});

describe('runInDocker without a daemon', () => {
  it('fails with one line naming the fix', async () => {
    const docker = new Docker({ socketPath: '/nonexistent/ltdock.sock' });
    const err = await runInDocker({ stateDir: '/nonexistent/state', image: 'x', docker, log: pino({ level: 'silent' }) }).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err).toBeInstanceOf(Error);
    expect(err!.message).toMatch(/^dockerd is not reachable .*; start it/);
    expect(err!.message).not.toContain('\n');
    expect((err as { code?: string }).code).toBe('EPREREQ');
  });
});
