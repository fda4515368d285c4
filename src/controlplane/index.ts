import { join } from 'node:path';
import { mkdir, readFile } from 'node:fs/promises';
import { connect, jwtAuthenticator, type NatsConnection } from 'nats';
import { NatsAuthority, type NatsUserCreds } from '../natsserver/auth.js';
import { natsUserIssuer, pushAccount } from './natsusers.js';
import { systemClock, type Clock } from '../clock.js';
import { LatticeError } from '../errors.js';
import { writeFileAtomic } from '../fsutil.js';
import type { Logger } from '../log.js';
import { startNatsServer, type StartedNatsServer } from '../natsserver/server.js';
import { isLoopbackHost, prepareServerTls, reachableAddresses, serverNamesFor, type ControlPlaneTls } from '../natsserver/tls.js';
import { formatProblem, validatePolicy } from '../policy/index.js';
import { statePaths } from '../state.js';
import { mountAdminRoutes } from './api.js';
import { agentOpsHandlers, mountAgentOpsRoutes } from './agentops.js';
import { EgressRequests } from './egress.js';
import { HttpApi, HttpError, RawBody } from './http.js';
import { controlPlaneMetrics, METRICS_CONTENT_TYPE, newRegistry, scrapeAuthorized } from '../metrics/index.js';
import type { IpamConfig } from './ipam.js';
import { serveNatsApi, type NatsApiStats } from './natsapi.js';
import { publishEnrollmentEvents } from './enrollaudit.js';
import { mountOperatorRoutes } from './operator.js';
import { NatsKvStore } from './natskv.js';
import { defaultReplicas } from '../natsserver/replicas.js';
import { assertPrivate, loadOrCreateAdminToken } from './secrets.js';
import { ControlPlaneService, type NatsUserIssuer, type ServiceOptions } from './service.js';
import { badRequest, BUCKETS, CpErrorCode } from './types.js';
import { ensureClusterAdminToken } from './admin-token.js';
import { ADMINS_BUCKET, AdminUsers, mountAdminUserRoutes } from './admins.js';

export * from './types.js';
export { ControlPlaneService, DEFAULT_JWT_TTL_MS, peerOf, agentKey, pubkeyKey, type AgentView } from './service.js';
export { HttpApi, HttpError, type RouteHandler, type RouteContext } from './http.js';
export { ADMIN_ROLES, AdminRole, AdminUsers, ROOT_USER, type AdminIdentity } from './admins.js';
export { API_BASE } from './api.js';
export { AGENT_SUBJECTS, type DelegationReply } from './agentops.js';
export { APPROVALS_BUCKET, ApprovalStatus, ChangeKind, type ApprovalRecord } from './approvals.js';
export { explainFlow, minimalAllowRule, type ExplainAnswer, type ExplainQuery } from './explain.js';
export { EGRESS_BUCKET, type EgressRequestRecord } from './egress.js';
export { planDelegation, type DelegationRequest, type AgentTreeNode } from './delegation.js';
export { verifyAgentJwt, signAgentJwt, JwtError, type AgentClaims } from './jwt.js';
export { parseDuration } from './tokens.js';
export { encodeJoinToken, parseJoinToken, JoinTokenError, JOIN_PREFIX, type JoinToken } from './join.js';
export type { NatsUserIssuer } from './service.js';
export { readAdminToken, adminTokenPath } from './secrets.js';
export { DEFAULT_IPAM, type IpamConfig } from './ipam.js';

export const DEFAULT_HTTP = { host: '127.0.0.1', port: 8470 } as const;

/** Where a started control plane writes its admin API's URL (one line), read by admin commands given the same state dir. */
export function apiUrlPath(controlPlaneDir: string): string {
  return join(controlPlaneDir, 'api-url');
}

/**
 * The admin API's URL as clients find it, in this order: `given` (--api), $LATTICE_API, the `api-url`
 * file a control plane started with this state dir wrote (its --http may have chosen another port), the
 * default http://127.0.0.1:8470.
 */
export async function findApiUrl(given: string | undefined, stateDir: string, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const chosen = given ?? (env.LATTICE_API || undefined);
  if (chosen !== undefined) return chosen;
  const written = await readFile(apiUrlPath(statePaths(stateDir).controlPlane), 'utf8').catch(() => '');
  return written.trim() || `http://${DEFAULT_HTTP.host}:${DEFAULT_HTTP.port}`;
}
export const DEFAULT_NATS_PORT = 4222;

export interface ControlPlaneOptions {
  stateDir: string;
  /** An existing NATS server or cluster; without it an embedded nats-server is started. */
  natsUrl?: string;
  /** Port of the embedded nats-server (default 4222; 0 picks a free one). */
  natsPort?: number;
  /**
   * Address the embedded nats-server listens on (default 127.0.0.1; 0.0.0.0 or :: for every interface).
   * Beyond loopback it speaks TLS only, with a certificate from the control plane's own CA.
   */
  natsHost?: string;
  /** TLS on NATS and on the HTTP API even on loopback (beyond loopback it is always on). */
  tls?: boolean;
  /** Where the HTTP API listens; false for none. Beyond loopback (or with `tls`) it is HTTPS. */
  http?: { host: string; port: number } | false;
  jwtTtlMs?: number;
  ipam?: IpamConfig;
  clock?: Clock;
  log?: Logger;
  /** Enrollment and revocation events, e.g. for the audit publisher. */
  onEvent?: ServiceOptions['onEvent'];
  /**
   * Replicas of every KV bucket (and, through `mount`, the audit stream): default 1 on a single server, 3 when
   * the server is clustered. Existing buckets with fewer are raised (logged). natsserver/replicas.ts.
   */
  replicas?: number;
  /**
   * A token that may read GET /metrics and nothing else (Prometheus' bearer credentials). Without it only the
   * admin token may: /metrics is never public.
   */
  metricsToken?: string;
  /** Mount more HTTP routes (e.g. the audit API) before the server starts listening. */
  mount?: (api: HttpApi, ctx: { nc: NatsConnection; service: ControlPlaneService; replicas: number; adminUsers: AdminUsers }) => Promise<void> | void;
}

export interface StartedControlPlane extends AsyncDisposable {
  readonly natsUrl: string;
  readonly httpUrl?: string;
  readonly adminToken: string;
  readonly service: ControlPlaneService;
  /** Mount further routes here (e.g. the audit API). */
  readonly api: HttpApi;
  readonly natsStats: NatsApiStats;
  /** Replicas of the control plane's buckets (chosen or detected). */
  readonly replicas: number;
  /** The control plane's own NATS connection. */
  readonly nc: NatsConnection;
  /** Operator-mode keys of the embedded server (absent with --nats): tests mint users with it. */
  readonly natsAuthority?: NatsAuthority;
  /** The URLs launchers on other hosts use (written into join tokens); [natsUrl] on loopback. */
  readonly natsUrls: string[];
  /** The CA (PEM) and its pin when NATS or the HTTP API speak TLS. */
  readonly tls?: { caPem: string; caHash: string };
  stop(): Promise<void>;
}

const splitNatsUrls = (s: string) => s.split(',').map((u) => u.trim()).filter((u) => u.length > 0);

/** Policy documents are checked with the policy engine's schema; one line per failure. */
export function checkPolicyDocument(p: unknown): void {
  const res = validatePolicy(p);
  if (!res.ok) {
    const more = res.problems.length > 1 ? ` (and ${res.problems.length - 1} more)` : '';
    throw badRequest(`invalid policy: ${formatProblem(res.problems[0])}${more}`);
  }
}

/** Connect to NATS, as the user `creds` when given (operator mode), verifying the server against `caPem` when given. */
export async function connectNats(url: string, name: string, creds?: NatsUserCreds, caPem?: string): Promise<NatsConnection> {
  try {
    return await connect({
      servers: splitNatsUrls(url),
      ...(caPem ? { tls: { ca: caPem } } : {}),
      name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
      timeout: 5000,
      ...(creds ? { authenticator: jwtAuthenticator(creds.jwt, new TextEncoder().encode(creds.seed)), inboxPrefix: creds.inboxPrefix } : {}),
    });
  } catch (err) {
    throw new LatticeError('ENATS_CONNECT', `cannot reach NATS at ${url}: ${(err as Error).message}; is the control plane running?`, { cause: err });
  }
}

/** Start the control plane: NATS (embedded or given), KV-backed service, NATS request handlers, HTTP API. */
export async function startControlPlane(opts: ControlPlaneOptions): Promise<StartedControlPlane> {
  const dir = statePaths(opts.stateDir).controlPlane;
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await assertPrivate(dir);
  const { token: localAdminToken } = await loadOrCreateAdminToken(dir);

  const cleanups: (() => Promise<unknown> | unknown)[] = [];
  const stop = async () => {
    for (const c of cleanups.splice(0).reverse()) await Promise.resolve(c()).catch(() => undefined);
  };
  try {
    let natsUrl = opts.natsUrl;
    let natsUrls = opts.natsUrl ? splitNatsUrls(opts.natsUrl) : [];
    let cpCreds: NatsUserCreds | undefined;
    let natsUsers: NatsUserIssuer | undefined;
    let authority: NatsAuthority | undefined;
    const clock = opts.clock ?? systemClock;
    const natsHost = opts.natsHost ?? '127.0.0.1';
    const http = opts.http === undefined ? DEFAULT_HTTP : opts.http;
    // TLS whenever a listener faces more than loopback (natsserver/tls.ts): one CA, one certificate per start.
    const natsTls = !opts.natsUrl && (opts.tls === true || !isLoopbackHost(natsHost));
    const httpTls = http !== false && (opts.tls === true || !isLoopbackHost(http.host));
    let tls: ControlPlaneTls | undefined;
    if (natsTls || httpTls) {
      const tlsDir = join(dir, 'tls');
      await mkdir(tlsDir, { recursive: true, mode: 0o700 });
      await assertPrivate(tlsDir);
      const hosts = [...(natsTls ? [natsHost] : []), ...(httpTls && http ? [http.host] : [])];
      const names = hosts.map((h) => serverNamesFor(h));
      tls = await prepareServerTls(tlsDir, { ips: [...new Set(names.flatMap((n) => n.ips))], dns: [...new Set(names.flatMap((n) => n.dns))] }, clock.now());
    }
    if (!natsUrl) {
      // Embedded server: operator mode, every connection authenticated (natsserver/auth.ts).
      const authDir = join(dir, 'nats-auth');
      await mkdir(authDir, { recursive: true, mode: 0o700 });
      await assertPrivate(authDir);
      authority = await NatsAuthority.open(authDir);
      const storeDir = join(dir, 'nats');
      const auth = authority;
      const serverTls = natsTls && tls ? { cert: tls.certFile, key: tls.keyFile } : undefined;
      const srv: StartedNatsServer = await startNatsServer({
        storeDir,
        port: opts.natsPort ?? DEFAULT_NATS_PORT,
        host: natsHost,
        writeConfig: (listen) => auth.writeServerConfig({ listen, storeDir, tls: serverTls }),
      });
      cleanups.push(() => srv.stop());
      natsUrl = srv.url;
      natsUrls = isLoopbackHost(natsHost) ? [srv.url] : reachableAddresses(natsHost).map((a) => `nats://${a.includes(':') ? `[${a}]` : a}:${srv.port}`);
      cpCreds = await authority.controlPlaneUser();
      const sys = await connectNats(natsUrl, 'lattice-control-plane-system', await authority.systemUser(), serverTls ? tls!.caPem : undefined);
      cleanups.push(() => sys.close());
      // The server may hold an older account JWT from an earlier run: hand it the current one.
      await pushAccount(sys, await authority.accountJwt());
      natsUsers = natsUserIssuer(authority, sys, { ...(serverTls ? { caHash: tls!.caHash } : {}), urls: natsUrls });
    }
    const nc = await connectNats(natsUrl, 'lattice-control-plane', cpCreds, natsTls ? tls?.caPem : undefined);
    cleanups.push(() => nc.drain());
    const replicas = opts.replicas ?? defaultReplicas(nc.info);
    opts.log?.info({ replicas, cluster: nc.info?.cluster ?? null }, `control plane state: ${replicas} replica(s) per bucket`);
    const auditEnrollment = publishEnrollmentEvents(nc, clock, opts.log);
    const kvStore = new NatsKvStore(nc, { replicas, log: opts.log });
    const service = await ControlPlaneService.open({
      store: kvStore,
      clock,
      ipam: opts.ipam,
      jwtTtlMs: opts.jwtTtlMs,
      validatePolicy: checkPolicyDocument,
      // Every enrollment and revocation: to the caller (the log) and to the audit stream.
      onEvent: (e) => {
        opts.onEvent?.(e);
        auditEnrollment(e);
      },
      natsUsers,
    });
    cleanups.push(() => service.close());
    // One admin token for every instance of the cluster (admin-token.ts).
    const adminToken = await ensureClusterAdminToken(await kvStore.bucket(BUCKETS.config), dir, localAdminToken, opts.log);
    // Agent operations (delegation, egress requests): agentops.ts.
    const egress = await EgressRequests.open(kvStore, opts.clock ?? systemClock);
    const nats = serveNatsApi(nc, service, opts.log, agentOpsHandlers(service, egress));
    cleanups.push(() => nats.stop());
    // Per-user admin identities beside the root token (admins.ts), in a bucket every instance shares.
    const adminUsers = new AdminUsers({ bucket: await kvStore.bucket(ADMINS_BUCKET), rootToken: adminToken, clock, audit: auditEnrollment });
    const api = new HttpApi({ adminToken, authenticate: (t) => adminUsers.authenticate(t), log: opts.log });
    // Prometheus text for the scrape token (--metrics-token-file) or the admin token, never public: a
    // scraper gets a credential that reads counts and can change nothing. README "Metrics".
    const metrics = newRegistry();
    controlPlaneMetrics(metrics, { service: service.stats, nats: nats.stats, replicas });
    const scrapeTokens = [adminToken, ...(opts.metricsToken ? [opts.metricsToken] : [])];
    api.route(
      'GET',
      '/metrics',
      async ({ req, res }) => {
        if (!scrapeAuthorized(req, scrapeTokens)) {
          res.setHeader('www-authenticate', 'Bearer');
          throw new HttpError(401, CpErrorCode.Unauthorized, 'GET /metrics needs Authorization: Bearer <the token of --metrics-token-file, or the admin token>');
        }
        return new RawBody(await metrics.metrics(), METRICS_CONTENT_TYPE);
      },
      { auth: 'none' },
    );
    mountAdminRoutes(api, service);
    mountAdminUserRoutes(api, adminUsers);
    mountAgentOpsRoutes(api, service, egress);
    // Approvals, explain, token list (operator.ts): for people and `lattice mcp`.
    await mountOperatorRoutes(api, { store: kvStore, nc, targets: service, validatePolicy: checkPolicyDocument, clock: opts.clock ?? systemClock, log: opts.log });
    await opts.mount?.(api, { nc, service, replicas, adminUsers });
    let httpUrl: string | undefined;
    if (http) {
      try {
        httpUrl = (await api.listen(http.host, http.port, httpTls && tls ? { cert: tls.certPem, key: tls.keyPem } : undefined)).url;
      } catch (err) {
        throw new LatticeError('EHTTP_LISTEN', `cannot listen on ${http.host}:${http.port}: ${(err as Error).message}`, { cause: err });
      }
      // Admin commands with this state dir find the API here, whatever --http chose (not a secret: 0644).
      await writeFileAtomic(apiUrlPath(dir), `${httpUrl}\n`, 0o644);
      cleanups.push(() => api.close());
    }
    return {
      natsUrl,
      natsUrls,
      httpUrl,
      adminToken,
      service,
      api,
      natsStats: nats.stats,
      replicas,
      nc,
      natsAuthority: authority,
      ...(tls ? { tls: { caPem: tls.caPem, caHash: tls.caHash } } : {}),
      stop,
      [Symbol.asyncDispose]: stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}
