import type { Command } from 'commander';
import { resolve as resolvePath } from 'node:path';
import { resolveStateDir, statePaths } from '../state.js';
import { UsageError } from '../errors.js';
import type { Logger } from '../log.js';
import { parseDnsLimits, parseEnv, parseMaxFlows, requireRoot } from '../sandbox/inputs.js';
import { parseCapability } from '../oci/capabilities.js';
import { globalOpts } from './run.js';
import { registerSandboxOps } from './sandbox-ops.js';

// Heavy modules load inside the actions: every command pays only for what it uses.
const sandboxModules = async () => {
  const [{ SandboxRegistry, isLauncherAlive }, { collectOrphans }] = await Promise.all([import('../sandbox/registry.js'), import('../sandbox/gc.js')]);
  return { SandboxRegistry, isLauncherAlive, collectOrphans };
};

/** How gc removes a record of each engine; the Docker client loads only when a Docker record is met. */
const cleaners: import('../sandbox/gc.js').EngineCleaners = {
  runsc: async () => (await import('../sandbox/run.js')).removeRunscRecord,
  docker: async () => (await import('../docker/engine.js')).dockerRecordCleaner(),
};

const collect = (v: string, prev: string[]) => [...prev, v];

const MAX_FLOWS_HELP = 'flows the sandbox\'s flow table tracks at once, 16-1048576 (default 16384); when full, closed, denied and half-open flows are evicted first, established allowed ones never';

/** Register `lattice sandbox` (run, start, and the inspection subcommands) on the CLI program. */
export function registerSandbox(program: Command): void {
  const sandbox = program.command('sandbox').description('run and inspect gVisor sandboxes');

  const run = sandbox
    .command('run')
    .description('run CMD in a fresh gVisor sandbox; stdio, signals and the exit code pass through')
    .option('--name <name>', 'sandbox name (default: its id)')
    .option('--engine <engine>', 'runsc (default), or docker: a Docker container under the lattice-runsc runtime (needs --image)', 'runsc')
    .option('--network <mode>', 'network: none (default), wg with --wg-config, or host (host egress; the default with --policy alone)', undefined)
    .option('--wg-config <file>', 'static mode: WireGuard identity, address and peers from a wg-quick style file')
    .option('--policy <file>', 'network policy (JSON, see README); default: deny everything')
    .option('--dns-name <name=addr>', 'an overlay name the sandbox can resolve, e.g. web.team.lattice=10.77.0.10 (repeatable)', collect, [])
    .option('--audit-log <file>', 'where audit events are appended as JSON lines (default: <state>/audit/audit.ndjson)')
    .option('--egress <mode>', 'host: flows the policy allows leave through this host\'s network, source-NATed (the default with --policy and no --wg-config)')
    .option('--dns-upstream <addr>', 'resolver for domain rules, ADDR or ADDR:PORT (repeatable; default: the host\'s /etc/resolv.conf)', collect, [])
    .option('--max-flows <n>', MAX_FLOWS_HELP)
    .option('-d, --detach', 'run it in the daemon (lattice daemon): print its name once it runs and return; see sandbox logs/stop/rm');
  addProcessOptions(run).action(async (cmd: string[], o: Record<string, unknown>, command: Command) => {
      const g = globalOpts(command);
      const checked = checkProcessFlags(o);
      const maxFlows = parseMaxFlows(o.maxFlows as string | undefined);
      const wgConfig = o.wgConfig as string | undefined;
      const egress = o.egress as string | undefined;
      if (egress !== undefined && egress !== 'host') throw new UsageError(`--egress ${egress} is unknown; use --egress host`);
      const network = (o.network as string | undefined) ?? (wgConfig ? 'wg' : o.policy || egress ? 'host' : 'none');
      if (network !== 'none' && network !== 'wg' && network !== 'host') throw new UsageError(`--network ${network} is unknown; use none, wg with --wg-config FILE, or host`);
      if (network === 'host' && wgConfig) throw new UsageError('--network host takes no --wg-config; use --network wg');
      const dnsUpstream = o.dnsUpstream as string[];
      if (dnsUpstream.length > 0 && network !== 'host') throw new UsageError('--dns-upstream applies to host egress; give --policy FILE without --wg-config');
      if (network === 'wg' && !wgConfig) throw new UsageError('--network wg needs --wg-config FILE (a wg-quick style file)');
      const wgOnly = (['policy', 'dnsName', 'auditLog', 'maxFlows'] as const).filter((k) => (Array.isArray(o[k]) ? (o[k] as unknown[]).length > 0 : o[k] !== undefined));
      const flag = (k: string) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;
      if (network === 'none' && o.network === undefined && wgOnly.length > 0) {
        throw new UsageError(`${wgOnly.map(flag).join(', ')} ${wgOnly.length > 1 ? 'apply' : 'applies'} to the WireGuard network: add --wg-config FILE (without it the sandbox has no network at all)`);
      }
      if (network === 'none' && (wgConfig || wgOnly.length > 0)) throw new UsageError(`--network none takes no ${[...(wgConfig ? ['--wg-config'] : []), ...wgOnly.map(flag)].join(', ')}; drop --network none or those options`);
      const engine = o.engine as string;
      if (engine !== 'runsc' && engine !== 'docker') throw new UsageError(`--engine ${engine} is unknown; use runsc or docker`);
      if (engine === 'docker' && (!o.image || o.rootfs || o.imageArchive || o.ociLayout)) {
        throw new UsageError('--engine docker runs an image from the local Docker engine: give --image REF (and no --rootfs/--image-archive/--oci-layout)');
      }
      if (o.detach) {
        if (engine === 'docker' || network === 'wg') throw new UsageError('-d runs a runsc sandbox with no network or host egress (--policy); --engine docker and --wg-config run in the foreground only');
        if (o.maxFlows !== undefined) throw new UsageError('-d does not take --max-flows yet; run it in the foreground');
        const client = await requireDaemon(command);
        const net = network === 'host' ? { mode: 'host' as const, policy: absolute(o.policy as string | undefined), dnsUpstream } : { mode: 'none' as const };
        console.log((await client.create(createRequest(cmd, o, checked, net))).name);
        return;
      }
      requireRoot();
      const stateDir = resolveStateDir(g.stateDir);
      const staticNet =
        network === 'wg'
          ? await import('../sandbox/static-network.js').then((m) =>
              m.loadStaticNetwork({
                wgConfig: wgConfig!,
                policy: o.policy as string | undefined,
                dnsNames: o.dnsName as string[],
                auditLog: o.auditLog as string | undefined,
                stateDir,
                hostEgress: egress === 'host',
                maxFlows,
              }),
            )
          : undefined;
      const hostNet =
        network === 'host'
          ? await import('../sandbox/egress-network.js').then((m) =>
              m.loadHostEgressNetwork({ policy: o.policy as string | undefined, dnsUpstream, auditLog: o.auditLog as string | undefined, stateDir, maxFlows }),
            )
          : undefined;
      const [{ createLogger }, { runSandbox }] = await Promise.all([import('../log.js'), import('../sandbox/run.js')]);
      const log = createLogger({ level: g.debug ? 'debug' : undefined });
      const networkFor = staticNet?.network(log) ?? hostNet?.network(log);
      if (engine === 'docker') {
        const { runInDocker } = await import('../docker/engine.js');
        process.exitCode = await runInDocker({
          stateDir,
          name: o.name as string | undefined,
          image: o.image as string,
          cmd: cmd.length > 0 ? cmd : undefined,
          entrypoint: o.entrypoint as string | undefined,
          env: parseEnv(o.env as string[]),
          cwd: o.cwd as string | undefined,
          user: o.user as string | undefined,
          capabilities: checked.capabilities,
          keep: Boolean(o.keep),
          stopGraceMs: checked.stopGraceMs,
          network: networkFor,
          log,
        });
        return;
      }
      const { prepareProcess } = await import('../sandbox/prepare.js');
      const proc = await prepareProcess(processFlags(cmd, o), stateDir);
      process.exitCode = await runSandbox({
        ...runBase(stateDir, checked, o, g.debug, log),
        network: networkFor,
        name: o.name as string | undefined,
        ...proc,
      });
    });

  const start = sandbox
    .command('start')
    .description('enroll with the control plane (or reuse the stored identity) and run the agent on the overlay')
    .requiredOption('--name <name>', 'agent name (its identity is stored under this name and reused on restart)')
    .option('--control-plane <urls>', 'the control plane\'s NATS URL, or several joined by commas (first start: unless the join token carries them)')
    .option('--token <token>', 'one-time enrollment token (first start only; also $LATTICE_TOKEN)')
    .option('--advertise <host>', 'address peers reach our WireGuard port at', '127.0.0.1')
    .option('--listen-port <port>', 'WireGuard UDP port (default: any free port)')
    .option('--audit-log <file>', 'also append audit events here as JSON lines')
    .option('--stun <url>', 'NAT traversal: STUN server stun:IP:PORT on our WireGuard port (repeatable)', collect, [])
    .option('--turn <url>', 'NAT traversal: TURN relay turn:USER:PASS@IP:PORT via ICE (repeatable)', collect, [])
    .option('--ice', 'NAT traversal: also try ICE data channels (node-datachannel) with the --stun servers')
    .option('--relay <url>', 'NAT traversal: lattice TCP relay tcp://IP:PORT as the last resort')
    .option('--relay-token <token>', "this sandbox's relay credential: `lattice relay credential NAME` (also $LATTICE_RELAY_TOKEN)")
    .option('--egress <mode>', 'host: destinations that are not overlay addresses leave through this host\'s network when the policy allows them (default: refused)')
    .option('--exit-node <name>', 'send destinations that are not overlay addresses (when the policy allows them), and DNS for domain rules, to this peer over WireGuard: NAME or NAMESPACE.NAME, an exit node whose routes an operator approved (default: the namespace\'s, lattice namespace set); "none": no exit node, if the operator allows opting out')
    .option('--dns-max-in-flight <n>', 'upstream DNS lookups (for domain rules) in flight at once; the excess is answered SERVFAIL (default 64)')
    .option('--dns-rate <per-second>', 'upstream DNS lookups per second, sustained (default 50)')
    .option('--dns-burst <n>', 'upstream DNS lookups allowed in a burst above --dns-rate (default 100)')
    .option('--max-flows <n>', MAX_FLOWS_HELP)
    .option('--metrics <host:port>', 'serve Prometheus metrics at http://HOST:PORT/metrics (peers, drops, policy decisions, audit outbox)')
    .option('-d, --detach', 'run it in the daemon (lattice daemon): print its name once it runs and return; see sandbox logs/stop/rm');
  addProcessOptions(start).action(async (cmd: string[], o: Record<string, unknown>, command: Command) => {
    const g = globalOpts(command);
    const checked = checkProcessFlags(o);
    const dnsLimits = parseDnsLimits({ maxInFlight: o.dnsMaxInFlight as string | undefined, perSecond: o.dnsRate as string | undefined, burst: o.dnsBurst as string | undefined });
    const maxFlows = parseMaxFlows(o.maxFlows as string | undefined);
    requireRoot();
    const stateDir = resolveStateDir(g.stateDir);
    if (o.egress !== undefined && o.egress !== 'host') throw new UsageError(`--egress ${String(o.egress)} is unknown; use --egress host`);
    if (o.exitNode !== undefined) {
      const { isPeerRef } = await import('../controlplane/routes.js');
      if (!isPeerRef(o.exitNode)) throw new UsageError(`--exit-node ${JSON.stringify(o.exitNode)} is not a peer name; use NAME or NAMESPACE.NAME (DNS labels)`);
      if (o.egress !== undefined && o.exitNode !== 'none') throw new UsageError('--exit-node and --egress host both choose where non-overlay traffic leaves; give one');
    }
    const cpUrl = o.controlPlane as string | undefined;
    if (cpUrl !== undefined) checkControlPlaneUrl(cpUrl);
    const listenPort = o.listenPort === undefined ? undefined : Number(o.listenPort);
    if (listenPort !== undefined && !(Number.isInteger(listenPort) && listenPort > 0 && listenPort < 65536)) {
      throw new UsageError(`--listen-port ${String(o.listenPort)} is not a UDP port; use 1-65535`);
    }
    if (o.detach) {
      const foregroundOnly = (['stun', 'turn', 'ice', 'relay', 'metrics', 'auditLog', 'dnsMaxInFlight', 'dnsRate', 'dnsBurst', 'maxFlows'] as const).filter((k) =>
        Array.isArray(o[k]) ? (o[k] as unknown[]).length > 0 : o[k] !== undefined,
      );
      if (foregroundOnly.length) throw new UsageError(`-d does not take ${foregroundOnly.map((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(', ')} yet; run those in the foreground`);
      const client = await requireDaemon(command);
      const net = {
        mode: 'enrolled' as const,
        controlPlane: cpUrl,
        token: (o.token as string | undefined) ?? process.env.LATTICE_TOKEN,
        advertise: o.advertise as string,
        listenPort,
        ...(o.egress === 'host' ? { egress: 'host' as const } : {}),
        ...(o.exitNode !== undefined ? { exitNode: o.exitNode as string } : {}),
      };
      console.log((await client.create({ ...createRequest(cmd, o, checked, net), name: o.name as string })).name);
      return;
    }
    const { parseNatFlags } = await import('../sandbox/nat-status.js');
    const nat = parseNatFlags({
      stun: o.stun as string[],
      turn: o.turn as string[],
      ice: Boolean(o.ice),
      relay: o.relay as string | undefined,
      relayToken: (o.relayToken as string | undefined) ?? (o.relay ? process.env.LATTICE_RELAY_TOKEN : undefined),
    });
    const { prepareProcess } = await import('../sandbox/prepare.js');
    const proc = await prepareProcess(processFlags(cmd, o), stateDir);
    const [{ createLogger }, { runSandbox }, { enrollAndPrepare }] = await Promise.all([
      import('../log.js'),
      import('../sandbox/run.js'),
      import('../sandbox/enrolled.js'),
    ]);
    const log = createLogger({ level: g.debug ? 'debug' : undefined });
    // Everything that can be checked locally is, before enrollment spends a token and an address.
    const { Runsc } = await import('../runsc/client.js');
    await new Runsc({ root: statePaths(stateDir).runscRoot }).version();
    const enrolled = await enrollAndPrepare({
      stateDir,
      name: o.name as string,
      controlPlaneUrl: o.controlPlane as string | undefined,
      token: (o.token as string | undefined) ?? process.env.LATTICE_TOKEN,
      advertiseHost: o.advertise as string,
      listenPort,
      auditLog: o.auditLog as string | undefined,
      nat,
      hostEgress: o.egress === 'host',
      ...(o.exitNode !== undefined ? { exitNode: o.exitNode as string } : {}),
      dnsLimits,
      maxFlows,
      metrics: o.metrics === undefined ? undefined : (await import('../metrics/index.js')).parseMetricsListen(o.metrics as string),
      log,
    });
    const c = enrolled.credentials;
    console.error(`lattice: ${enrolled.reused ? 'reusing' : 'enrolled'} ${c.namespace}/${c.name} at ${c.address.ipv4} (${c.address.ipv6})`);
    try {
      process.exitCode = await runSandbox({
        ...runBase(stateDir, checked, o, g.debug, log),
        name: o.name as string,
        ...proc,
        network: enrolled.network,
        hostUds: true,
        stopWhen: enrolled.revoked,
        onStarted: (r) => enrolled.record({ type: 'sandbox.started', sandboxId: r.id }),
        onExited: (r, code, cause) => enrolled.record({ type: 'sandbox.exited', sandboxId: r.id, code, ...(cause ? { reason: cause } : {}) }),
      });
    } finally {
      await enrolled.close();
    }
  });

  registerSandboxOps(sandbox);

  sandbox
    .command('ls')
    .description('list sandboxes of this state dir: the daemon\'s and foreground ones (orphans of dead launchers are removed first)')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean }, command: Command) => {
      const client = await daemonClient(command);
      let rows: Array<{ id: string; name: string; status: string; address: string; created: string; command: string }>;
      if (client) {
        rows = (await client.list()).map((v) => ({ id: v.id, name: v.name, status: v.status, address: v.address ?? '-', created: v.created, command: v.command }));
      } else {
        const { SandboxRegistry, collectOrphans } = await sandboxModules();
        const { statusOf } = await import('../sandbox/registry.js');
        const registry = new SandboxRegistry(resolveStateDir(globalOpts(command).stateDir));
        await collectOrphans(registry, cleaners);
        rows = (await registry.list()).map((r) => ({
          id: r.id,
          name: r.name,
          status: statusOf(r),
          address: r.address ?? '-',
          created: r.createdAt,
          command: r.args.join(' '),
        }));
      }
      if (o.json) {
        console.log(JSON.stringify(rows, null, 2));
        return;
      }
      printTable(rows, ['id', 'name', 'status', 'address', 'created', 'command']);
    });

  sandbox
    .command('logs')
    .description('output (stdout and stderr, merged) of a sandbox started with -d')
    .argument('<sandbox>', 'sandbox id or name')
    .option('-f, --follow', 'keep printing until the sandbox exits')
    .action(async (which: string, o: { follow?: boolean }, command: Command) => {
      const client = await daemonClient(command);
      if (client) {
        for await (const chunk of client.logs(which, { follow: o.follow })) process.stdout.write(chunk);
        return;
      }
      // Alone: the log file is all there is (nothing runs in a daemon that is not there).
      const [{ SandboxRegistry }, { pickForRemoval }, { OUTPUT_LOG }, { readFile }, { join }] = await Promise.all([
        import('../sandbox/registry.js'),
        import('../sandbox/gc.js'),
        import('../daemon/supervisor.js'),
        import('node:fs/promises'),
        import('node:path'),
      ]);
      const registry = new SandboxRegistry(resolveStateDir(globalOpts(command).stateDir));
      const [r] = pickForRemoval(await registry.list(), [which], () => false);
      const text = await readFile(join(registry.dirOf(r!.id), OUTPUT_LOG)).catch(() => {
        throw new UsageError(`sandbox ${which} has no log: only sandboxes started with -d keep one (a foreground sandbox's output went to its terminal)`);
      });
      process.stdout.write(text);
    });

  sandbox
    .command('stop')
    .description('stop a running sandbox: SIGTERM, SIGKILL after its --stop-timeout; returns once it exited')
    .argument('<sandbox...>', 'sandbox ids or names')
    .action(async (which: string[], _o: unknown, command: Command) => {
      const client = await daemonClient(command);
      if (client) {
        for (const w of which) console.log(`${(await client.stop(w)).name} ${(await client.get(w)).status}`);
        return;
      }
      // Alone: a foreground launcher stops its sandbox on SIGTERM (as Ctrl-C); wait until it is gone.
      const { SandboxRegistry, isLauncherAlive } = await sandboxModules();
      const registry = new SandboxRegistry(resolveStateDir(globalOpts(command).stateDir));
      const records = await registry.list();
      for (const w of which) {
        const hits = records.filter((r) => (r.id === w || r.name === w) && !r.kept && isLauncherAlive(r));
        if (hits.length !== 1) throw new UsageError(hits.length ? `${hits.length} running sandboxes are named ${w}; name one by id: ${hits.map((r) => r.id).join(' ')}` : `no running sandbox has id or name ${w}; see lattice sandbox ls`);
        const r = hits[0]!;
        process.kill(r.launcherPid, 'SIGTERM');
        const { setTimeout: sleep } = await import('node:timers/promises');
        while (isLauncherAlive(r)) await sleep(50); // the launcher's own exit is the event; no signal tells us of it
        console.log(`${r.name} stopped`);
      }
    });

  sandbox
    .command('status')
    .description('WireGuard peers of running `sandbox start` sandboxes: endpoint, handshake, traffic, NAT path, RTT')
    .argument('[sandbox]', 'sandbox id or name (default: all)')
    .option('--json', 'print JSON (one object when a sandbox is named, else an array)')
    .action(async (which: string | undefined, o: { json?: boolean }, command: Command) => {
      const [{ SandboxRegistry, isLauncherAlive }, { STATUS_FILE, statusRows }, { readFile }, { join }] = await Promise.all([
        import('../sandbox/registry.js'),
        import('../sandbox/nat-status.js'),
        import('node:fs/promises'),
        import('node:path'),
      ]);
      const registry = new SandboxRegistry(resolveStateDir(globalOpts(command).stateDir));
      const records = (await registry.list()).filter((r) => !r.kept && isLauncherAlive(r));
      const chosen = which === undefined ? records : records.filter((r) => r.id === which || r.name === which);
      if (which !== undefined && chosen.length === 0) throw new UsageError(`no running sandbox has id or name ${which}; see lattice sandbox ls`);
      if (chosen.length > 1) throw new UsageError(`${chosen.length} running sandboxes are named ${which}; name one by id: ${chosen.map((r) => r.id).join(' ')}`);
      const statuses: import('../sandbox/nat-status.js').SandboxStatus[] = [];
      for (const r of chosen) {
        try {
          statuses.push(JSON.parse(await readFile(join(registry.dirOf(r.id), STATUS_FILE), 'utf8')) as never);
        } catch {
          // not a `sandbox start` sandbox, or its network is not up yet
        }
      }
      if (which !== undefined && statuses.length === 0) throw new UsageError(`sandbox ${which} has no status yet: only \`sandbox start\` sandboxes report one, once their network is up`);
      if (o.json) {
        console.log(JSON.stringify(which !== undefined ? statuses[0] : statuses, null, 2));
        return;
      }
      printTable(statusRows(statuses, Date.now()), ['sandbox', 'peer', 'endpoint', 'handshake', 'rx', 'tx', 'path', 'rtt', 'established']);
    });

  sandbox
    .command('rm')
    .description('remove finished sandboxes kept with --keep (or left by a dead launcher): bundle, record, container')
    .argument('<sandbox...>', 'sandbox ids or names (see lattice sandbox ls)')
    .option('--json', 'print JSON')
    .action(async (which: string[], o: { json?: boolean }, command: Command) => {
      const client = await daemonClient(command);
      if (client) {
        for (const w of which) await client.remove(w);
        console.log(o.json ? JSON.stringify({ removed: which }) : `removed ${which.join(' ')}`);
        return;
      }
      const { SandboxRegistry, isLauncherAlive } = await sandboxModules();
      const { pickForRemoval, removeSandboxResources } = await import('../sandbox/gc.js');
      const registry = new SandboxRegistry(resolveStateDir(globalOpts(command).stateDir));
      const picked = pickForRemoval(await registry.list(), which, isLauncherAlive);
      for (const r of picked) {
        await removeSandboxResources(r, cleaners);
        await registry.remove(r.id);
      }
      const removed = picked.map((r) => r.id);
      console.log(o.json ? JSON.stringify({ removed }) : `removed ${removed.join(' ')}`);
    });

  program
    .command('gc')
    .description('remove containers, networks and bundles whose launcher is gone (with --kept: also those kept with --keep)')
    .option('--kept', 'also remove finished sandboxes kept with --keep')
    .option('--docker', 'also remove every lattice-labelled Docker container whose launcher is gone, whatever state dir made it')
    .option('--json', 'print JSON')
    .action(async (o: { json?: boolean; kept?: boolean; docker?: boolean }, command: Command) => {
      const { SandboxRegistry, collectOrphans, isLauncherAlive } = await sandboxModules();
      const registry = new SandboxRegistry(resolveStateDir(globalOpts(command).stateDir));
      const { removed } = await collectOrphans(registry, cleaners, { kept: o.kept });
      // Containers of dead launchers that no record of this state dir names (another state dir, a lost record).
      if (o.docker) removed.push(...(await import('../docker/engine.js').then((m) => m.reapDockerOrphans())));
      if (o.json) return console.log(JSON.stringify({ removed }));
      // What only --kept would remove, named, so "nothing to remove" never hides a sandbox that is still there.
      const kept = o.kept ? [] : (await registry.list()).filter((r) => r.kept && !isLauncherAlive(r));
      const hint = kept.length ? `; kept with --keep: ${kept.map((r) => r.name || r.id).join(', ')} (\`lattice gc --kept\` or \`lattice sandbox rm NAME\` removes ${kept.length > 1 ? 'them' : 'it'})` : '';
      console.log(`${removed.length ? `removed ${removed.join(' ')}` : 'nothing to remove'}${hint}`);
    });
}

/**
 * The daemon's client when a daemon answers on its socket, else undefined: the CLI then works alone.
 * With --verbose, one line on stderr says which.
 */
async function daemonClient(command: Command) {
  const { LatticeClient, defaultSocket, socketAnswers } = await import('../client/index.js');
  const g = globalOpts(command);
  const socket = defaultSocket(resolveStateDir(g.stateDir));
  const up = await socketAnswers(socket);
  if (g.verbose) console.error(up ? `lattice: using the daemon at ${socket}` : `lattice: no daemon at ${socket}; working alone`);
  return up ? new LatticeClient({ socket }) : undefined;
}

/** -d needs the daemon: its client, or a usage error saying how to start one. */
async function requireDaemon(command: Command) {
  const client = await daemonClient(command);
  if (!client) throw new UsageError(`-d needs the daemon and none answers on its socket; start it with: lattice${globalOpts(command).stateDir ? ` --state-dir ${globalOpts(command).stateDir}` : ''} daemon`);
  return client;
}

/** A path on the daemon's host: relative paths are the caller's, so they are made absolute here. */
function absolute(p: string | undefined): string | undefined {
  return p === undefined ? undefined : resolvePath(p);
}

/** The daemon's create request from the flags `sandbox run`/`start` share. */
function createRequest(cmd: string[], o: Record<string, unknown>, checked: ReturnType<typeof checkProcessFlags>, network: import('../client/index.js').NetworkSpec): import('../client/index.js').CreateRequest {
  const f = processFlags(cmd, o);
  const defined = Object.fromEntries(Object.entries(f).filter(([, v]) => v !== undefined));
  return {
    ...defined,
    ...(o.name !== undefined ? { name: o.name as string } : {}),
    cmd,
    rootfs: absolute(f.rootfs),
    imageArchive: absolute(f.imageArchive),
    ociLayout: absolute(f.ociLayout),
    capAdd: checked.capabilities,
    stopTimeoutSeconds: checked.stopGraceMs / 1000,
    network,
  };
}

/** Where the agent's filesystem and process come from: shared by run and start. */
function addProcessOptions(cmd: Command): Command {
  return cmd
    .option('--rootfs <dir|tar>', 'root filesystem: a directory or a .tar/.tar.gz')
    .option('--image <ref>', 'root filesystem and defaults from an image in the local Docker engine')
    .option('--image-archive <file>', 'root filesystem and defaults from a `docker save` tarball')
    .option('--oci-layout <dir[:tag]>', 'root filesystem and defaults from an OCI image layout directory')
    .option('--image-limits <k=v,...>', 'unpack limits: bytes=64g,entries=2000000,path=4096,entry-bytes=32g (defaults shown)')
    .option('--entrypoint <path>', 'override the image\'s entrypoint')
    .option('--env <KEY=VALUE>', 'environment variable (repeatable)', collect, [])
    .option('--cwd <dir>', 'working directory inside the sandbox (default: the image\'s, else /)')
    .option('--user <uid[:gid]>', 'user to run as inside the sandbox')
    .option('--memory <size>', 'memory limit, e.g. 512m (default: 2g or half the host\'s RAM); an OOM kill exits 137')
    .option('--cpus <n>', 'CPU limit, e.g. 0.5 (default: host CPUs - 1, at least 1)')
    .option('--pids-limit <n>', 'host tasks of the whole sandbox, gVisor\'s own ~60 included (default 1024, min 128)')
    .option('--tmp-size <size>', 'size of the /tmp tmpfs (default 256m)')
    .option('--cap-add <cap>', 'grant a Linux capability inside the sandbox (repeatable; default none)', collect, [])
    .option('--keep', 'keep the bundle and record after exit (remove it later with lattice sandbox rm)')
    .option('--stop-timeout <seconds>', 'on SIGINT/SIGTERM: seconds the sandbox gets to exit before SIGKILL (a second signal kills at once)', '10')
    .argument('[cmd...]', 'command and arguments, after --');
}

/**
 * --control-plane takes the NATS URL (nats://HOST:PORT, tls://HOST:PORT or HOST:PORT), or several joined by commas. The admin API's
 * http:// URL is the usual mix-up: say so at once instead of timing out on a protocol that never answers.
 */
export function checkControlPlaneUrl(urls: string): void {
  for (const url of urls.split(',').map((u) => u.trim())) checkOneControlPlaneUrl(url);
}

function checkOneControlPlaneUrl(url: string): void {
  if (/^https?:\/\//i.test(url)) {
    throw new UsageError(`--control-plane ${url} is the admin API's URL; give the control plane's NATS URL instead, e.g. nats://${url.replace(/^https?:\/\//i, '').replace(/:\d+\/?.*$/, '')}:4222 (\`control-plane start\` prints it as "nats:")`);
  }
  if (!/^((nats|tls):\/\/)?[^\s/:]+(:\d{1,5})?\/?$/i.test(url) && !/^((nats|tls):\/\/)?\[[0-9a-f:]+\](:\d{1,5})?\/?$/i.test(url)) {
    throw new UsageError(`--control-plane ${url} is not a NATS URL; use nats://HOST:PORT (\`control-plane start\` prints it as "nats:")`);
  }
}

/** Process options checked before anything starts: --stop-timeout (seconds -> ms), --cap-add names. */
function checkProcessFlags(o: Record<string, unknown>): { stopGraceMs: number; capabilities: string[] } {
  const raw = String(o.stopTimeout);
  const s = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(s) || s < 0 || s > 3600) throw new UsageError(`--stop-timeout ${raw} is not a number of seconds; use 0-3600 (e.g. 10, or 2.5)`);
  return { stopGraceMs: Math.round(s * 1000), capabilities: (o.capAdd as string[]).map(parseCapability) };
}

/** The runSandbox options `sandbox run` and `sandbox start` share: engine cleaners, state dir, checked flags, logging. */
function runBase(stateDir: string, checked: ReturnType<typeof checkProcessFlags>, o: Record<string, unknown>, debug: boolean | undefined, log: Logger) {
  return { cleaners, stateDir, capabilities: checked.capabilities, keep: Boolean(o.keep), stopGraceMs: checked.stopGraceMs, debug, log };
}

function processFlags(cmd: string[], o: Record<string, unknown>) {
  return {
    rootfs: o.rootfs as string | undefined,
    image: o.image as string | undefined,
    imageArchive: o.imageArchive as string | undefined,
    ociLayout: o.ociLayout as string | undefined,
    imageLimits: o.imageLimits as string | undefined,
    cmd,
    env: o.env as string[],
    cwd: o.cwd as string | undefined,
    user: o.user as string | undefined,
    entrypoint: o.entrypoint as string | undefined,
    memory: o.memory as string | undefined,
    cpus: o.cpus as string | undefined,
    pidsLimit: o.pidsLimit as string | undefined,
    tmpSize: o.tmpSize as string | undefined,
  };
}

/** Print rows as a plain table to stdout: upper-cased column names, columns padded to their widest cell. */
export function printTable<T extends Record<string, unknown>>(rows: T[], cols: (keyof T & string)[]): void {
  const widths = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c]).length)));
  const line = (vals: string[]) => vals.map((v, i) => v.padEnd(widths[i]!)).join('  ').trimEnd();
  console.log(line(cols.map((c) => c.toUpperCase())));
  for (const r of rows) console.log(line(cols.map((c) => String(r[c]))));
}
