import type { Logger } from 'pino';
import type { NatsConnection } from 'nats';
import { LatticeError } from '../errors.js';
import { statePaths } from '../state.js';
import { decodeKey, encodeKey, generatePrivateKey, publicKeyOf } from '../wg/keys.js';
import { defaultCrypto } from '../wg/crypto.js';
import { parseEndpoint } from '../wg/config.js';
import type { PeerConfig } from '../wg/peer.js';
import { validatePolicy, denyAllPolicy, parseIp, bindPeers, peerBindingKey, type IpAddr, type Policy } from '../policy/index.js';
import { directorySnapshot } from '../controlplane/service.js';
import { cidrHas, formatCidr, parseCidr, type Cidr } from '../net/addr.js';
import { findPeer, isExitRoute, peerAllowedIPs } from '../controlplane/routes.js';
import type { NamespaceExitDefault } from '../controlplane/namespaces.js';
import { fetchDirectory, obtainIdentity, updateEndpoint, updateRoutes, connectControlPlane, controlPlaneEndpoint, rememberServers, DirectoryWatcher, type Credentials, type Peer } from '../enroll/index.js';
import { credentialsPath } from '../enroll/credentials.js';
import { Outbox, OutboxLockedError } from '../audit/outbox.js';
import { assertStateDirs } from '../controlplane/secrets.js';
import { OutboxPublisher } from '../audit/publisher.js';
import { startLauncherMetrics } from '../metrics/launcher.js';
import type { AuditEventDraft } from '../audit/events.js';
import { ndjsonAuditSink } from '../audit/local.js';
import { wgSandboxNetwork, type TunPlacement, type WgSandboxNetwork } from './network.js';
import type { DnsLimits } from '../dataplane/dns.js';
import { startAgentApi, agentApiMounts, type StartedAgentApi } from '../agentapi/index.js';
import { mkdir, rm } from 'node:fs/promises';
import { writeFileAtomic } from '../fsutil.js';
import { createPeerConnectivity, type PeerConnectivity } from '../nat/connectivity.js';
import { buildStatus, STATUS_FILE, type NatFlags } from './nat-status.js';
import { join } from 'node:path';
import type { SandboxNetwork } from './lifecycle.js';
import { explainDenial } from './explain.js';
import { Teardown } from './teardown.js';

/** Keepalive towards peers: keeps NAT mappings open and lets a restarted peer find us again. */
const PERSISTENT_KEEPALIVE_SEC = 25;

export interface EnrolledOptions {
  stateDir: string;
  name: string;
  /** NATS URL(s) of the control plane, a list or comma-separated (first start; later tried before the stored ones). */
  controlPlaneUrl?: string | string[];
  token?: string;
  /** host to advertise to peers with our WireGuard port (default 127.0.0.1: peers on this host). */
  advertiseHost?: string;
  listenPort?: number;
  auditLog?: string;
  /** NAT traversal (STUN/TURN/relay); undefined = direct endpoints from the directory only. */
  nat?: NatFlags;
  /** Host egress (`--egress host`): non-overlay destinations the policy allows leave through this host. */
  hostEgress?: boolean;
  /**
   * `--exit-node NAME` ("name" or "namespace.name"): non-overlay destinations the policy allows go to
   * this peer over WireGuard, once its exit routes are approved (controlplane/routes.ts), and so does
   * upstream DNS (dataplane/dns-tunnel.ts). Unset: the namespace's default exit node, if an operator
   * set one (controlplane/namespaces.ts); "none": no exit node, when the operator allows opting out.
   */
  exitNode?: string;
  /**
   * `lattice up --advertise-routes CIDR,... [--exit-node]`: advertise these routes (replacing what this
   * agent advertised before) and forward for the approved ones (PumpOptions.routed). `onOwnRoutes` hears
   * the approved set (canonical CIDRs) at start and whenever an operator changes it.
   */
  router?: { advertiseRoutes: string[]; exitNode: boolean; onOwnRoutes?: (approved: string[]) => void };
  /** Hears the directory's peers (routes included) when the network starts and on every directory change (`lattice up` routes approved routes into its TUN). */
  onPeers?: (peers: readonly Peer[]) => void;
  /** Bounds on the sandbox's upstream DNS lookups (`--dns-max-in-flight`, `--dns-rate`, `--dns-burst`); unset keep the pump's defaults. */
  dnsLimits?: Partial<DnsLimits>;
  /** Where the TUN lives (see WgNetworkOptions.placeTun); default: the sandbox's own netns. */
  placeTun?: TunPlacement;
  /** Serve the agent API socket to the sandbox (default true; `lattice up` has no sandbox to serve). */
  agentApi?: boolean;
  /** Bound of the pump's flow table (`--max-flows`); unset keeps the default. */
  maxFlows?: number;
  /** How often status.json is rewritten (ms). */
  statusIntervalMs?: number;
  /** Serve Prometheus GET /metrics here (src/metrics/launcher.ts); undefined = no metrics server. */
  metrics?: { host: string; port: number };
  log: Logger;
  /**
   * Called after each step has opened its resource (ENROLL_STEPS, then NETWORK_STEPS in the network
   * hook). A throw (or rejection) fails the start at that point, as a real failure there would.
   */
  onStep?: (step: EnrollStep) => void | Promise<void>;
}

/** The enrolled side of `sandbox start`: identity, audit pipeline, directory watch and the network hook. */
export interface Enrolled {
  credentials: Credentials;
  reused: boolean;
  /** For runSandbox: builds the WireGuard network from the enrolled identity and keeps it current. */
  network: (id: string, dir: string) => Promise<SandboxNetwork>;
  /** Resolves when the control plane revokes this agent (the caller stops the sandbox). */
  revoked: Promise<void>;
  record: (event: AuditEventDraft) => void;
  close(): Promise<void>;
}

/**
 * WireGuard peer configs for the directory's peers: own addresses plus the approved routes each one
 * wins (longest prefix across peers, ties and exit nodes as controlplane/routes.ts peerAllowedIPs says).
 */
export function peerConfigs(peers: readonly Peer[], exitNode?: string): PeerConfig[] {
  const allowed = peerAllowedIPs(peers, exitNode);
  return peers.map((p) => {
    const ep = p.endpoint ? parseEndpoint(p.endpoint)?.endpoint : undefined;
    return { publicKey: decodeKey(p.publicKey), allowedIPs: allowed.get(p.publicKey) ?? p.allowedIPs, endpoint: ep, persistentKeepalive: PERSISTENT_KEEPALIVE_SEC };
  });
}

/** The overlay IPv4 address of exit node `ref` in the directory (its DNS forwarder listens there); undefined: not there. */
export function exitNodeAddress(peers: readonly Peer[], ref: string): IpAddr | undefined {
  const p = findPeer(peers, ref);
  return p?.allowedIPs.map((c) => parseIp(c.split('/')[0]!)).find((a) => a?.family === 4);
}

/** `sandbox start --exit-node none`: no exit node, even when the namespace has a default. */
export const NO_EXIT_NODE = 'none';

/**
 * Why `ref` cannot be this launcher's exit node, as one line for the user; undefined: it can (a peer of
 * the directory `peers` named `ref`, "name" or "namespace.name", carrying an approved exit route). Pure.
 */
export function unapprovedExitNode(peers: readonly Peer[], ref: string, namespace: string): string | undefined {
  const p = findPeer(peers, ref);
  if (!p) return `exit node ${ref} is not a peer this agent sees (namespace ${namespace} and the namespaces its token allows); name one from lattice route ls, or drop --exit-node`;
  if ((p.routes ?? []).some((r) => isExitRoute(r.cidr))) return undefined;
  return `exit node ${ref} has no approved exit routes; an operator approves them with lattice route approve ${p.namespace}/${p.name} exit (after lattice up --exit-node there), or drop --exit-node`;
}

/**
 * The exit node this launcher uses: `--exit-node NAME`, else the namespace's default (asked from the
 * control plane's directory reply at start), else none. `peers`: the directory now. Errors:
 * EEXIT_NOT_APPROVED (exit 2) when `--exit-node NAME` is not an approved exit node in `peers` (a default
 * that is not is only warned about: the operator's setting, fixed by the operator); EEXIT_OPT_OUT when
 * the sandbox opts out (`--exit-node none` or `--egress host`) of a default whose operator does not allow it.
 */
async function chooseExitNode(o: Pick<EnrolledOptions, 'exitNode' | 'hostEgress'>, c: Credentials, peers: readonly Peer[], nc: NatsConnection, log: Logger): Promise<string | undefined> {
  if (o.exitNode !== undefined && o.exitNode !== NO_EXIT_NODE) {
    const why = unapprovedExitNode(peers, o.exitNode, c.namespace);
    if (why) throw new LatticeError('EEXIT_NOT_APPROVED', why, { exitCode: 2 });
    return o.exitNode;
  }
  let d: NamespaceExitDefault | undefined;
  try {
    d = ((await fetchDirectory({ nc, jwt: c.jwt, timeoutMs: 5000 })) as { exitNode?: NamespaceExitDefault }).exitNode;
  } catch (err) {
    // The control plane answered the watch a moment ago; without its answer here, no exit node (non-overlay traffic refused).
    log.warn({ err: (err as Error).message }, 'could not ask the control plane for the namespace\'s default exit node; running without one');
    return undefined;
  }
  if (d === undefined) return undefined;
  const optOut = o.exitNode === NO_EXIT_NODE ? '--exit-node none' : o.hostEgress ? '--egress host' : undefined;
  if (optOut !== undefined && !d.allowOptOut) {
    throw new LatticeError('EEXIT_OPT_OUT', `namespace ${c.namespace} sends its sandboxes' traffic through exit node ${d.exitNode} and does not allow ${optOut}; drop ${optOut}, or ask an operator for lattice namespace set ${c.namespace} --exit-node ${d.exitNode} --allow-opt-out`);
  }
  if (optOut !== undefined) return undefined;
  const why = unapprovedExitNode(peers, d.exitNode, c.namespace);
  if (why) log.warn({ exitNode: d.exitNode, namespace: c.namespace, why }, 'the namespace\'s default exit node is not usable now: non-overlay traffic is refused until it is');
  log.info({ exitNode: d.exitNode, namespace: c.namespace }, 'using the namespace\'s default exit node');
  return d.exitNode;
}

/**
 * Routes (beyond peers' own addresses) whose next hop differs between two directory views: withdrawn,
 * rejected, or moved to another peer. Open flows to addresses in them are cut.
 */
export function changedRoutes(before: readonly PeerConfig[], after: readonly PeerConfig[]): Cidr[] {
  const owners = (cfgs: readonly PeerConfig[]) => {
    const m = new Map<string, string>();
    for (const c of cfgs) for (const a of c.allowedIPs ?? []) if (!/\/(32|128)$/.test(a)) m.set(a, encodeKey(c.publicKey));
    return m;
  };
  const next = owners(after);
  const out: Cidr[] = [];
  for (const [cidr, key] of owners(before)) {
    if (next.get(cidr) === key) continue;
    const p = parseCidr(cidr);
    if (p.ok) out.push(p.cidr);
  }
  return out;
}

/** Overlay names: `<name>.<namespace>.lattice` -> the peer's addresses. */
export function overlayNames(peers: readonly Peer[]): Array<readonly [string, IpAddr[]]> {
  return peers.map((p) => [`${p.name}.${p.namespace}.lattice`, p.allowedIPs.map((c) => parseIp(c.split('/')[0]!)).filter((a): a is IpAddr => a !== undefined)] as const);
}

/**
 * The overlay as the enrollment describes it: the control plane's two pools (EnrollResponse.overlay),
 * or, from a control plane that does not send them, the agent's namespace subnets. The pump treats an
 * upstream DNS answer inside them as another agent's address (DNS rebinding: no allowance unless a
 * CIDR rule allows it). Malformed entries are left out (the control plane is trusted, not its typos).
 */
export function overlayCidrs(c: Pick<Credentials, 'overlay' | 'subnets'>): Cidr[] {
  const plan = c.overlay ?? c.subnets;
  if (!plan) return [];
  const out: Cidr[] = [];
  for (const s of [plan.v4, plan.v6]) {
    const p = parseCidr(s, { hostBits: 'mask' });
    if (p.ok) out.push(p.cidr);
  }
  return out;
}

/** The control plane hands policies over as JSON; anything that does not validate means deny-all. */
export function effectivePolicy(raw: unknown, log: Logger): Policy {
  if (raw === null || raw === undefined) return denyAllPolicy().policy;
  const v = validatePolicy(raw);
  if (v.ok) return v.policy;
  log.error({ problems: v.problems.length }, 'the control plane sent a policy that does not validate; denying everything');
  return denyAllPolicy().policy;
}

/**
 * The steps of enrollAndPrepare and of its network hook, in order. Each one opens something that the
 * failure path closes again; `onStep` observes them (progress logs, and tests that inject a failure
 * after each one).
 */
export const ENROLL_STEPS = ['outbox', 'identity', 'connection', 'publisher', 'audit-log', 'watcher', 'revocation'] as const;
export const NETWORK_STEPS = ['wireguard', 'nat', 'endpoint', 'agent-api', 'status'] as const;
export type EnrollStep = (typeof ENROLL_STEPS)[number] | (typeof NETWORK_STEPS)[number];

/**
 * Enroll (or reuse the stored identity), connect to the control plane, start the audit pipeline and
 * the directory watch, and return the network hook for the sandbox lifecycle.
 *
 * Every resource opened here (outbox lock, NATS connection, publisher, audit log file, watches) and in
 * the network hook (netns, TUN, UDP socket, NAT connectivity, agent API socket, status timer) is
 * registered on a Teardown as it is opened: a failure at any step closes all of them, last opened
 * first, each bounded in time, and rethrows. On success `close()` of the result owns them.
 * Errors: ESANDBOX_RUNNING (outbox of this name locked), EOUTBOX_FULL, ECP_UNREACHABLE, EREVOKED,
 * and enrollment errors from obtainIdentity.
 */
export async function enrollAndPrepare(o: EnrolledOptions): Promise<Enrolled> {
  const { log } = o;
  const step = async (name: EnrollStep) => o.onStep?.(name);
  // Every state subdirectory (credentials, outbox, ...) ours and closed to others, before anything is read or written.
  await assertStateDirs(o.stateDir);
  credentialsPath(o.stateDir, o.name); // validates the name before it names a directory
  const teardown = new Teardown(log);
  return teardown.guard(async () => {
    // Nothing is spent before the launcher knows it can run: the outbox of this name is taken (and checked
    // for room) before a token is used, an address allocated or a connection opened. One outbox per agent
    // name, so any number of agents share a state dir; a second launcher of the same name stops here.
    const outbox = teardown.adopt(
      'outbox',
      await Outbox.open({ dir: statePaths(o.stateDir).outbox(o.name), logger: log }).catch((err: unknown) => {
        if (err instanceof OutboxLockedError) {
          throw new LatticeError('ESANDBOX_RUNNING', `agent ${o.name} already runs from this state dir (launcher pid ${err.pid}); stop it first, or give the new one another --name`, { cause: err });
        }
        throw err;
      }),
      (ob) => ob.close(),
    );
    if (outbox.isFull()) {
      throw new LatticeError('EOUTBOX_FULL', 'the audit outbox is full, so no new sandbox starts (events would be lost); restore the NATS connection to the control plane and retry');
    }
    // Prometheus /metrics: bound before anything is spent, so a taken port changes nothing.
    const metrics = o.metrics ? teardown.adopt('metrics', await startLauncherMetrics(o.metrics), (m) => m.close()) : undefined;
    metrics?.attach({ outbox });
    await step('outbox');
    const identity = await obtainIdentity({
      stateDir: o.stateDir,
      name: o.name,
      controlPlaneUrl: o.controlPlaneUrl,
      token: o.token,
      generateKeyPair: () => {
        const privateKey = generatePrivateKey(defaultCrypto);
        return { privateKey, publicKey: publicKeyOf(defaultCrypto, privateKey) };
      },
    });
    await step('identity');
    // Every known server (token, --control-plane, stored), TLS verified against the CA pinned at enrollment.
    const ep = controlPlaneEndpoint(identity.credentials, o.controlPlaneUrl);
    const nc = teardown.adopt('connection', await connectControlPlane(ep, { name: `lattice-launcher-${o.name}` }), (c) => c.close());
    await step('connection');
    // The servers a cluster announces are kept with the credentials, for a next start whose node is dead.
    const credentials = await rememberServers(o.stateDir, identity.credentials, nc, ep.urls);
    const { reused } = identity;

    // Audit: fsynced locally before it counts, then shipped to JetStream. With its own NATS user the
    // launcher may publish only its own audit subjects and read only its inbox; the control plane creates
    // the audit stream. Stopped before the connection closes (teardown is last-opened-first).
    const publisher = new OutboxPublisher({ outbox, nc, logger: log, onAck: (ms) => metrics?.observePublishLag(ms), ...(credentials.nats ? { inboxPrefix: credentials.nats.inboxPrefix, ensureStream: false } : {}) });
    publisher.start();
    metrics?.attach({ publisher });
    teardown.defer('publisher', () => publisher.stop());
    await step('publisher');
    const local = o.auditLog ? teardown.adopt('audit-log', ndjsonAuditSink(o.auditLog), (sink) => sink.close()) : undefined;
    await step('audit-log');
    const envelope = { agentId: credentials.agentId, namespace: credentials.namespace };
    // Set once the network is up: denials of a peer's address say whose it is and what would allow it.
    let explain: ((event: AuditEventDraft) => AuditEventDraft) | undefined;
    const record = (raw: AuditEventDraft) => {
      const event = explain ? explain(raw) : raw;
      local?.(event);
      outbox.append({ ...envelope, ...event } as AuditEventDraft).catch((err: unknown) => log.error({ err: (err as Error).message, type: event.type }, 'audit event not recorded'));
    };

    const watcher = DirectoryWatcher.forConnection(nc, {
      namespace: credentials.namespace,
      name: credentials.name,
      publicKey: credentials.publicKey,
      allowedNamespaces: credentials.allowedNamespaces,
    });
    teardown.defer('watcher', () => {
      watcher.removeAllListeners();
      watcher.stop();
    });
    await watcher.start();
    await step('watcher');
    let onRevoked!: () => void;
    const revoked = new Promise<void>((r) => (onRevoked = r));
    if (watcher.revoked) {
      throw new LatticeError('EREVOKED', `agent ${credentials.namespace}/${credentials.name} has been revoked; it cannot start again (enroll a new name with a new token)`);
    }
    await step('revocation');
    const exitNode = o.router ? undefined : await chooseExitNode(o, credentials, watcher.peers.length > 0 ? watcher.peers : (credentials.peers ?? []), nc, log);

    let net: WgSandboxNetwork | undefined;
    /** The policy as the control plane sent it, and bound to the current directory (what the pump holds). */
    let basePolicy: Policy | undefined;
    let currentPolicy: Policy | undefined;
    /** Re-bind "peers" rules to the directory; the pump gets the policy only when a selection changed. */
    const rebind = (peers: readonly Peer[], why: string, force = false) => {
      if (!net || !basePolicy) return;
      const next = bindPeers(basePolicy, directorySnapshot(credentials.namespace, peers));
      if (!force && currentPolicy && peerBindingKey(next) === peerBindingKey(currentPolicy)) return;
      currentPolicy = next;
      const { cut } = net.pump.setPolicy(next);
      log.warn({ cut }, why);
    };
    /** The peer configs the device holds now (routes included), to see which routes changed. */
    let configured: PeerConfig[] = [];
    let conn: PeerConnectivity | undefined;
    /** Peers the NAT layer manages: same namespace (signalling subjects are per namespace), by name. */
    let natPeers = new Map<string, string>();
    const syncNatPeers = (peers: readonly Peer[]) => {
      if (!conn) return;
      const next = new Map(peers.filter((p) => p.namespace === credentials.namespace && p.publicKey !== credentials.publicKey).map((p) => [p.name, p.publicKey]));
      for (const [name, key] of natPeers) if (next.get(name) !== key) conn.removePeer(name);
      for (const [name, key] of next) if (natPeers.get(name) !== key) conn.addPeer(name, decodeKey(key));
      natPeers = next;
    };
    const currentPeers = () => (watcher.peers.length > 0 ? watcher.peers : (credentials.peers ?? []));
    // A router forwards for its own approved routes (an exit node: every non-overlay address), never for the overlay.
    const overlay = overlayCidrs(credentials);
    let ownRoutes: Cidr[] = [];
    let ownRoutesKey: string | undefined;
    const syncOwnRoutes = (): Cidr[] => {
      const approved = (watcher.self?.routes ?? []).map((r) => r.cidr).sort();
      const key = approved.join(',');
      if (key === ownRoutesKey) return [];
      const next = approved.map((c) => parseCidr(c)).flatMap((p) => (p.ok ? [p.cidr] : []));
      const gone = ownRoutes.filter((c) => !next.some((n) => n.bits === c.bits && cidrHas(n, c.addr)));
      ownRoutes = next;
      ownRoutesKey = key;
      o.router?.onOwnRoutes?.(approved);
      return gone;
    };
    const routed = o.router ? (a: IpAddr) => ownRoutes.some((c) => cidrHas(c, a)) && !overlay.some((c) => cidrHas(c, a)) : undefined;
    if (o.router) syncOwnRoutes();
    const network = async (id: string, dir: string): Promise<SandboxNetwork> => {
      const netTeardown = new Teardown(log);
      return netTeardown.guard(async () => {
        const peers = currentPeers();
        const live = netTeardown.adopt(
          'wireguard',
          await wgSandboxNetwork({
            iface: {
              privateKey: decodeKey(credentials.privateKey),
              addresses: [`${credentials.address.ipv4}/32`, `${credentials.address.ipv6}/128`],
              listenPort: o.listenPort,
            },
            peers: (configured = peerConfigs(peers, exitNode)),
            policy: (currentPolicy = bindPeers((basePolicy = effectivePolicy(watcher.policy ?? credentials.policy, log)), directorySnapshot(credentials.namespace, peers))),
            policySource: { id: `ns:${credentials.namespace}`, version: 1 },
            names: overlayNames(peers),
            overlayCidrs: overlayCidrs(credentials),
            audit: record,
            auditReady: () => !outbox.isFull(),
            log,
            natTraversal: o.nat !== undefined,
            hostEgress: o.hostEgress,
            dnsLimits: o.dnsLimits,
            placeTun: o.placeTun,
            maxFlows: o.maxFlows,
            routed,
            // Through the exit node, DNS leaves through it too: its forwarder (src/host/dns.ts) on its overlay address.
            ...(exitNode !== undefined && { tunnelDns: { server: () => exitNodeAddress(currentPeers(), exitNode) } }),
          })(id, dir),
          (n) => n.close(),
        );
        netTeardown.defer('wireguard-ref', () => {
          net = undefined;
        });
        net = live;
        o.onPeers?.(peers);
        metrics?.attach({ network: live });
        await step('wireguard');
        if (o.nat) {
          conn = netTeardown.adopt(
            'nat',
            await createPeerConnectivity({
              device: live.device,
              bind: live.pathBind!,
              nats: nc,
              selfId: credentials.name,
              namespace: credentials.namespace,
              stunServers: o.nat.stunServers,
              turnServers: o.nat.turnServers,
              ice: o.nat.ice,
              relayUrl: o.nat.relayUrl,
              relayToken: o.nat.relayToken,
            }),
            async (c) => {
              conn = undefined;
              natPeers = new Map();
              await c.close();
            },
          );
          syncNatPeers(peers);
          log.info({ candidates: conn.candidates().length, stun: o.nat.stunServers.length, turn: o.nat.turnServers.length, relay: Boolean(o.nat.relayUrl) }, 'NAT traversal on');
        }
        await step('nat');
        await updateEndpoint({ nc, jwt: credentials.jwt, endpoint: `${o.advertiseHost ?? '127.0.0.1'}:${live.listenPort}` }).catch((err: unknown) =>
          log.warn({ err: (err as Error).message }, 'could not publish our WireGuard endpoint; peers must initiate'),
        );
        await step('endpoint');
        if (o.router) {
          const r = await updateRoutes({ nc, jwt: credentials.jwt, advertiseRoutes: o.router.advertiseRoutes, exitNode: o.router.exitNode });
          log.info({ routes: r.routes }, 'routes advertised (each forwards once an operator approves it: lattice route approve)');
        }

        explain = (event) =>
          explainDenial(
            event,
            overlayNames(currentPeers()).map(([name, addresses]) => ({ name, addresses })),
            (remote, protocol, port) => live.pump.checkEgress(remote, protocol, port),
          );
        netTeardown.defer('explain', () => (explain = undefined));
        // The agent API: a Unix socket only this sandbox can reach; the channel itself is the identity.
        const apiDir = join(dir, 'agentapi');
        if (o.agentApi !== false) await mkdir(apiDir, { recursive: true, mode: 0o755 });
        if (o.agentApi !== false) netTeardown.adopt(
          'agent-api',
          await startAgentApi({
            socketPath: join(apiDir, 'agent.sock'),
            identity: {
              agentId: credentials.agentId,
              name: credentials.name,
              namespace: credentials.namespace,
              jwt: credentials.jwt,
              jwtExpiresAt: credentials.jwtExpiresAt,
              allowedTools: credentials.allowedTools,
              allowedNamespaces: credentials.allowedNamespaces,
              enforcement: credentials.modes.enforcement,
            },
            isRevoked: () => watcher.revoked !== undefined,
            checkEgress: (ip, port, proto) => {
              const remote = parseIp(ip);
              if (!remote) return { verdict: 'deny', ruleId: 'invalid-address' };
              const protocol = proto === 'tcp' ? 6 : proto === 'udp' ? 17 : remote.family === 4 ? 1 : 58;
              const d = live.pump.checkEgress(remote, protocol, port);
              return { verdict: d.wouldDeny ? 'would-deny' : d.verdict, ruleId: d.ruleId };
            },
            getPolicy: () => currentPolicy,
            nc,
            recordSpan: (draft) => outbox.append({ ...envelope, ...draft } as AuditEventDraft).then(() => undefined),
            auditReady: () => !outbox.isFull(),
            log,
          }),
          (api: StartedAgentApi) => api.close(),
        );
        await step('agent-api');
        // status.json for `lattice sandbox status`: rewritten atomically every interval, removed on exit.
        const statusPath = join(dir, STATUS_FILE);
        let writing: Promise<void> | undefined;
        const writeStatus = () => {
          if (writing) return;
          const doc = buildStatus({
            id,
            name: o.name,
            agent: { namespace: credentials.namespace, name: credentials.name, address: `${credentials.address.ipv4},${credentials.address.ipv6}` },
            now: Date.now(),
            listenPort: live.listenPort,
            directory: currentPeers(),
            device: live.device.peerStatus(),
            paths: conn?.status(),
            candidates: conn?.candidates(),
          });
          writing = writeFileAtomic(statusPath, JSON.stringify(doc, null, 2) + '\n', 0o644)
            .catch((err: unknown) => log.debug({ err: (err as Error).message }, 'status.json not written'))
            .finally(() => (writing = undefined));
        };
        const statusTimer = setInterval(writeStatus, o.statusIntervalMs ?? 1000);
        statusTimer.unref();
        netTeardown.defer('status', async () => {
          clearInterval(statusTimer);
          await writing;
          await rm(statusPath, { force: true });
        });
        writeStatus();
        await step('status');
        const owned = netTeardown.move();
        return {
          ...live,
          mounts: [...(live.mounts ?? []), ...(o.agentApi !== false ? agentApiMounts(join(apiDir, 'agent.sock')) : [])],
          close: () => owned.close(),
        };
      });
    };

    // Directory changes reach the live network within the watch latency: peers, names, policy, revocation.
    let known = new Set<string>();
    let knownNames = new Set<string>();
    watcher.on('peers-changed', (peers) => {
      if (!net) return;
      const next = new Set(peers.map((p) => p.publicKey));
      for (const key of known) if (!next.has(key)) net.device.removePeer(decodeKey(key));
      // With NAT traversal the path layer owns the endpoints of known peers: a directory update must not
      // move a peer back from the path it is on to its advertised (possibly private) address.
      const cfgs = peerConfigs(peers, exitNode);
      for (const p of cfgs) net.device.addPeer(conn && known.has(encodeKey(p.publicKey)) ? { ...p, endpoint: undefined } : p);
      // A route withdrawn, rejected or moved: open flows through it lose their next hop and are cut.
      const gone = changedRoutes(configured, cfgs);
      configured = cfgs;
      if (gone.length) {
        const cut = net.pump.cutRoutes((remote) => gone.some((c) => cidrHas(c, remote)));
        log.warn({ routes: gone.length, cut }, 'routes changed: flows through them cut');
      }
      // Our own route withdrawn or rejected: stop forwarding for it, and cut the flows we forward through it.
      const ownGone = o.router ? syncOwnRoutes() : [];
      if (ownGone.length) {
        const cut = net.pump.cutRoutes((a) => ownGone.some((c) => cidrHas(c, a)));
        log.warn({ routes: ownGone.map(formatCidr), cut }, 'own routes withdrawn: forwarded flows through them cut');
      }
      syncNatPeers(peers);
      o.onPeers?.(peers);
      // A peer that left the directory stops resolving too.
      const names = overlayNames(peers);
      const current = new Set(names.map(([name]) => name));
      for (const name of knownNames) if (!current.has(name)) net.directory.delete(name);
      for (const [name, addrs] of names) net.directory.set(name, addrs);
      knownNames = current;
      known = next;
      log.info({ peers: peers.length }, 'peers updated');
      // A peer that gained or lost a label (or joined, or left) changes what "peers" rules select.
      rebind(peers, 'policy re-bound to the directory (a peer joined, left or changed its labels)');
    });
    watcher.on('policy-changed', (policy) => {
      if (!net) return;
      basePolicy = effectivePolicy(policy, log);
      rebind(currentPeers(), 'policy updated by the control plane', true);
    });
    watcher.on('revoked', () => {
      log.error({ agent: `${credentials.namespace}/${credentials.name}` }, 'agent revoked by the control plane: tearing the sandbox down');
      // Stop carrying traffic at once, before the sandbox itself is stopped.
      syncNatPeers([]);
      if (net) for (const p of net.device.peerStatus()) net.device.removePeer(decodeKey(p.publicKey));
      onRevoked();
    });
    known = new Set((watcher.peers.length > 0 ? watcher.peers : (credentials.peers ?? [])).map((p) => p.publicKey));
    knownNames = new Set(overlayNames(watcher.peers.length > 0 ? watcher.peers : (credentials.peers ?? [])).map(([name]) => name));

    const owned = teardown.move();
    return {
      credentials,
      reused,
      network,
      revoked,
      record,
      // Shutdown must not hang on an unreachable control plane: each step is bounded (Teardown), and
      // whatever is not acknowledged stays in the outbox and is replayed by the next start.
      close: owned.close.bind(owned),
    };
  });
}
