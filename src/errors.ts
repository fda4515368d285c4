/**
 * Every error code lattice gives, in one list. Style: `E` + AREA (the component: WG, NATS, KV, OUTBOX,
 * IMAGE, RUNSC, SANDBOX, EGRESS, ...) and, when the area has more than one failure, `_` + WHAT, words
 * separated by `_` (EWG_CONFIG, EOUTBOX_FULL). Codes are stable: scripts and the admin API's clients
 * match on them. test/errors.test.ts fails on a code used in src/ that is not listed here.
 *
 * `wire` codes travel in control-plane replies (NATS and HTTP, src/controlplane/types.ts) and agent-API
 * responses (src/agentapi/): launchers and clients of other versions match on them, so they keep their
 * older names (EBADREQ, ENOTOOL); ENOTFOUND and EBUSY there are not the OS's errno.
 */
export const ErrorCode = {
  // CLI and host
  Usage: 'EUSAGE',
  Prerequisite: 'EPREREQ',
  StatePermissions: 'ESTATE_PERM',
  Credentials: 'ECREDENTIALS',
  JoinToken: 'EJOIN_TOKEN',
  // sandbox, runsc, OCI, images, Docker
  SandboxRunning: 'ESANDBOX_RUNNING',
  SandboxNotFound: 'ESANDBOX_NOT_FOUND',
  // the resident daemon (src/daemon/) and its client (src/client/)
  Daemon: 'EDAEMON',
  DaemonSocket: 'EDAEMON_SOCKET',
  DaemonRoute: 'EDAEMON_ROUTE',
  DaemonUnreachable: 'EDAEMON_UNREACHABLE',
  DaemonPool: 'EDAEMON_POOL',
  DaemonPoolStore: 'EDAEMON_POOL_STORE',
  SandboxNet: 'ESANDBOX_NET',
  SandboxCommandNotFound: 'ESANDBOX_COMMAND_NOT_FOUND',
  SandboxCommandNotExecutable: 'ESANDBOX_COMMAND_NOT_EXECUTABLE',
  SandboxNotRunning: 'ESANDBOX_NOT_RUNNING',
  SandboxCopy: 'ESANDBOX_COPY',
  SandboxCheckpoint: 'ESANDBOX_CHECKPOINT',
  SandboxPaused: 'ESANDBOX_PAUSED',
  SandboxNotPaused: 'ESANDBOX_NOT_PAUSED',
  DaemonPty: 'EDAEMON_PTY',
  Runsc: 'ERUNSC',
  RunscMissing: 'ERUNSC_MISSING',
  RunscNoContainer: 'ERUNSC_NO_CONTAINER',
  OciSpec: 'EOCI_SPEC',
  ImageExtract: 'EIMAGE_EXTRACT',
  ImageFormat: 'EIMAGE_FORMAT',
  ImageLimit: 'EIMAGE_LIMIT',
  ImageNotFound: 'EIMAGE_NOT_FOUND',
  ImageRejected: 'EIMAGE_REJECTED',
  Docker: 'EDOCKER',
  DockerConfig: 'EDOCKER_CONFIG',
  // network: netns, TUN, WireGuard, NAT, host egress, policy
  Ip: 'EIP',
  Tun: 'ETUN',
  WgConfig: 'EWG_CONFIG',
  WgBind: 'EWG_BIND',
  WgEndpoint: 'EWG_ENDPOINT',
  WgKey: 'EWG_KEY',
  WgWiring: 'EWG_WIRING',
  NatConfig: 'ENAT_CONFIG',
  NatWiring: 'ENAT_WIRING',
  EgressHost: 'EEGRESS_HOST',
  EgressHostServices: 'EEGRESS_HOST_SERVICES',
  RouterNft: 'EROUTER_NFT',
  ExitDns: 'EEXIT_DNS',
  ExitDnsBind: 'EEXIT_DNS_BIND',
  ExitOptOut: 'EEXIT_OPT_OUT',
  ExitNotApproved: 'EEXIT_NOT_APPROVED',
  Policy: 'EPOLICY',
  // audit
  Audit: 'EAUDIT',
  AuditInvalid: 'EAUDIT_INVALID',
  AuditReadBack: 'EAUDIT_READBACK',
  OutboxFull: 'EOUTBOX_FULL',
  OutboxLocked: 'EOUTBOX_LOCKED',
  OutboxClosed: 'EOUTBOX_CLOSED',
  OutboxWrite: 'EOUTBOX_WRITE',
  OutboxState: 'EOUTBOX_STATE',
  // control plane, NATS, KV, HTTP, approvals
  Api: 'EAPI',
  ApiReply: 'EAPI_REPLY',
  ApiUnreachable: 'EAPI_UNREACHABLE',
  ApiTls: 'EAPI_TLS',
  CpReply: 'ECP_REPLY',
  CpUnreachable: 'ECP_UNREACHABLE',
  AdminToken: 'EADMIN_TOKEN',
  AgentApiListen: 'EAGENTAPI_LISTEN',
  HttpListen: 'EHTTP_LISTEN',
  Jwt: 'EJWT',
  NatsAuth: 'ENATS_AUTH',
  NatsClaims: 'ENATS_CLAIMS',
  NatsConnect: 'ENATS_CONNECT',
  NatsStart: 'ENATS_START',
  TlsPin: 'ETLS_PIN',
  TlsSetup: 'ETLS_SETUP',
  KvConflict: 'EKV_CONFLICT',
  KvContention: 'EKV_CONTENTION',
  KvKey: 'EKV_KEY',
  KvTimeout: 'EKV_TIMEOUT',
  Replicas: 'EREPLICAS',
  MetricsListen: 'EMETRICS_LISTEN',
  IpamContention: 'EIPAM_CONTENTION',
  IpamExhausted: 'EIPAM_EXHAUSTED',
  ApprovalNotPending: 'EAPPROVAL_NOT_PENDING',
  ApprovalStale: 'EAPPROVAL_STALE',
  ApprovalApplyFailed: 'EAPPROVAL_APPLY_FAILED',
  ApprovalSelf: 'EAPPROVAL_SELF',
  Revoked: 'EREVOKED',
  // web console (src/console/)
  ConsoleCsrf: 'ECONSOLE_CSRF',
  ConsoleSignInLimit: 'ECONSOLE_SIGNIN_LIMIT',
  ConsoleAssets: 'ECONSOLE_ASSETS',
  // wire (see above)
  WireBadRequest: 'EBADREQ',
  WireTokenUnknown: 'ETOKEN_UNKNOWN',
  WireTokenExpired: 'ETOKEN_EXPIRED',
  WireTokenExhausted: 'ETOKEN_EXHAUSTED',
  WireNameTaken: 'ENAME_TAKEN',
  WireKeyInUse: 'EKEY_IN_USE',
  WireUnauthorized: 'EUNAUTHORIZED',
  WireForbidden: 'EFORBIDDEN',
  WireNotFound: 'ENOTFOUND',
  WireBusy: 'EBUSY',
  WireInternal: 'EINTERNAL',
  WireChallenge: 'ECHALLENGE',
  WireDenied: 'EDENIED',
  WireMethod: 'EMETHOD',
  WireNoTool: 'ENOTOOL',
} as const;
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/**
 * One error class per failure, each with a stable `code` (listed in ErrorCode), a `cause`, and a message
 * that tells the user what is wrong and what to do next. The CLI prints `message` on one line (stack only
 * with --debug).
 */
export class LatticeError extends Error {
  override readonly name: string = 'LatticeError';
  /** The CLI's exit code when this error ends a command; unset: by class (see src/cli/run.ts). */
  readonly exitCode?: number;
  constructor(
    readonly code: string,
    message: string,
    options?: { cause?: unknown; exitCode?: number },
  ) {
    super(message, options);
    if (options?.exitCode !== undefined) this.exitCode = options.exitCode;
  }
}

/** The user gave something we cannot use (a flag, a file, a config). Exit code 2. */
export class UsageError extends LatticeError {
  override readonly name = 'UsageError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('EUSAGE', message, options);
  }
}

/** A required host component (runsc, nats-server, root, TUN...) is missing or unusable. */
export class PrerequisiteError extends LatticeError {
  override readonly name = 'PrerequisiteError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('EPREREQ', message, options);
  }
}

/** The message of an Error, or the value as a string (for anything thrown that is not an Error). */
export function errorMessage(err: unknown): string {
  if (err instanceof Error && err.name === 'NatsError' && Object.hasOwn(NATS_MESSAGES, err.message)) return NATS_MESSAGES[err.message]!;
  return err instanceof Error ? err.message : String(err);
}

/** nats.js errors whose message is only a code ("503", "TIMEOUT"), as one line a person can act on. */
const NATS_MESSAGES: Record<string, string> = {
  '503': 'NATS answered 503 (no responders): nothing serves that subject right now, e.g. a JetStream stream still electing a leader or the control plane not running; retry shortly',
  TIMEOUT: 'a NATS request timed out: is the control plane running and reachable?',
};
