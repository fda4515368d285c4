import { LatticeError } from '../errors.js';

/** Wire and storage shapes of the control plane. Stored records are JSON in the KV buckets. */

export const SandboxMode = { None: 'none', Gvisor: 'gvisor' } as const;
export type SandboxMode = (typeof SandboxMode)[keyof typeof SandboxMode];

export const EnforcementMode = { Disabled: 'disabled', Audit: 'audit', Enforce: 'enforce' } as const;
export type EnforcementMode = (typeof EnforcementMode)[keyof typeof EnforcementMode];

export interface Modes {
  sandbox: SandboxMode;
  enforcement: EnforcementMode;
}

export const DEFAULT_MODES: Modes = { sandbox: SandboxMode.Gvisor, enforcement: EnforcementMode.Enforce };

/** A policy a token hands out: a preset by name or an inline document (opaque here). */
export type PolicyRef = { preset: string } | { inline: unknown };

/** Stable error codes of enrollment and the admin API; they travel in replies as {error: {code, message}}. */
export const CpErrorCode = {
  BadRequest: 'EBADREQ',
  TokenUnknown: 'ETOKEN_UNKNOWN',
  TokenExpired: 'ETOKEN_EXPIRED',
  TokenExhausted: 'ETOKEN_EXHAUSTED',
  NameTaken: 'ENAME_TAKEN',
  KeyInUse: 'EKEY_IN_USE',
  Revoked: 'EREVOKED',
  IpamExhausted: 'EIPAM_EXHAUSTED',
  Unauthorized: 'EUNAUTHORIZED',
  NotFound: 'ENOTFOUND',
  Busy: 'EBUSY',
  Internal: 'EINTERNAL',
  /** Delegation asked for more than the parent holds (tools, namespaces, modes). */
  Forbidden: 'EFORBIDDEN',
  /** Re-enrollment of an existing identity: prove possession of its private key (reply carries `challenge`). */
  Challenge: 'ECHALLENGE',
} as const;
export type CpErrorCode = (typeof CpErrorCode)[keyof typeof CpErrorCode];

/** A control-plane request failed with a stable code (CpErrorCode), returned to the caller in the error reply. */
export class ControlPlaneError extends LatticeError {
  override readonly name = 'ControlPlaneError';
  constructor(
    override readonly code: CpErrorCode,
    message: string,
    options?: { cause?: unknown; challenge?: { nonce: string; key: string; namespace: string } },
  ) {
    super(code, message, options);
    this.challenge = options?.challenge;
  }
  /** ECHALLENGE only: what the launcher must answer (possession.ts). */
  readonly challenge?: { nonce: string; key: string; namespace: string };
}

export const badRequest = (msg: string) => new ControlPlaneError(CpErrorCode.BadRequest, msg);

export interface TokenRecord {
  id: string;
  namespace: string;
  allowedTools: string[];
  allowedNamespaces: string[];
  limit: number;
  uses: number;
  /** Epoch ms. */
  expiresAt: number;
  createdAt: number;
  policy?: PolicyRef;
  modes: Modes;
  /** Labels the enrolled agents start with (validated with policy/labels.ts). */
  labels?: Record<string, string>;
  /** Delegation: the agent that created this token; its children record it and die with it. */
  parent?: ParentRef;
  /** Delegation: no JWT issued from this token outlives this time (epoch ms; the parent's JWT expiry). */
  notAfter?: number;
}

/** The delegating agent of a child token / child agent. */
export interface ParentRef {
  agentId: string;
  namespace: string;
  name: string;
  publicKey: string;
}

export const AgentStatus = { Pending: 'pending', Active: 'active' } as const;
export type AgentStatus = (typeof AgentStatus)[keyof typeof AgentStatus];

export interface AgentRecord {
  agentId: string;
  name: string;
  namespace: string;
  /** WireGuard public key, base64 (32 bytes). */
  publicKey: string;
  /** Pending while enrollment is in flight (name and key claimed, address and token not yet). */
  status: AgentStatus;
  address?: { ipv4: string; ipv6: string; offset: number };
  /** host:port where the agent's WireGuard UDP socket is reachable, as the launcher last published it. */
  endpoint?: string;
  allowedTools: string[];
  allowedNamespaces: string[];
  modes: Modes;
  policy?: PolicyRef;
  /** Labels: from the token at enrollment, then as an operator sets them (setLabels). */
  labels?: Record<string, string>;
  tokenId: string;
  jti?: string;
  jwtExpiresAt?: number;
  createdAt: number;
  updatedAt: number;
  /** Delegation: copied from the token (see TokenRecord.parent / notAfter). */
  parent?: ParentRef;
  notAfter?: number;
  /** nkey public key of the launcher's NATS user (revoked with the agent). */
  natsUser?: string;
  /** Routes this agent advertises (subnet router, exit node) and their approval state (routes.ts). */
  routes?: RouteRecord[];
  /** Delegation: enrollments this agent's delegated tokens allow in total (its quota counter). */
  delegated?: number;
}

export interface RevocationRecord {
  agentId: string;
  name: string;
  namespace: string;
  publicKey: string;
  jti?: string;
  revokedAt: number;
}

export interface NamespacePolicyRecord {
  namespace: string;
  policy: unknown;
  updatedAt: number;
}

export interface Peer {
  name: string;
  namespace: string;
  publicKey: string;
  allowedIPs: string[];
  endpoint?: string;
  /** The peer's labels (absent when it has none); policy "peers" rules select by them. */
  labels?: Record<string, string>;
  /**
   * Approved routes the peer carries beyond its own addresses (subnet router; `0.0.0.0/0` and `::/0`
   * for an exit node), with the approval time (epoch ms) that breaks ties (routes.ts peerAllowedIPs).
   * Absent when none.
   */
  routes?: PeerRoute[];
}

/** An approved route as launchers see it in the directory. */
export interface PeerRoute {
  /** Canonical CIDR (net/addr.ts formatCidr). */
  cidr: string;
  /** Epoch ms of the approval. */
  approvedAt: number;
}

export const RouteState = { Pending: 'pending', Approved: 'approved', Rejected: 'rejected' } as const;
export type RouteState = (typeof RouteState)[keyof typeof RouteState];

/** One advertised route on an agent record. Only `approved` routes reach the directory. */
export interface RouteRecord {
  /** Canonical CIDR. */
  cidr: string;
  state: RouteState;
  /** Epoch ms the agent advertised it. */
  advertisedAt: number;
  /** Epoch ms and who (a caller-given name) of the last approve/reject. */
  decidedAt?: number;
  decidedBy?: string;
}

export interface EnrollRequest {
  token: string;
  publicKey: string;
  name: string;
  endpoint?: string;
  /** Re-enrollment: the challenge received with ECHALLENGE and the answer (possession.ts). */
  challenge?: string;
  proof?: string;
  /** nkey user public key (U...) the launcher generated; required when the control plane runs NATS auth. */
  natsPublicKey?: string;
  /** Subnets this peer routes (canonical CIDRs); each waits for an operator's approval (routes.ts). */
  advertiseRoutes?: string[];
  /** This peer offers itself as an exit node: advertises 0.0.0.0/0 and ::/0 (approved like any route). */
  exitNode?: boolean;
}

export interface EnrollResponse {
  agentId: string;
  name: string;
  namespace: string;
  address: { ipv4: string; ipv6: string };
  /** The agent's own allowed IPs as its peers see it (v4 /32, v6 /128). */
  allowedIPs: string[];
  subnets: { v4: string; v6: string };
  /** The overlay's two pools (every agent's address is inside them); absent from control planes before it was sent. */
  overlay?: { v4: string; v6: string };
  peers: Peer[];
  policy: unknown;
  jwt: string;
  jwtExpiresAt: number;
  allowedTools: string[];
  allowedNamespaces: string[];
  modes: Modes;
  controlPlane: ControlPlaneInfo;
  /** The launcher's NATS user JWT (for natsPublicKey) and the inbox prefix it must use; absent without NATS auth. */
  nats?: { jwt: string; inboxPrefix: string };
}

export interface ControlPlaneInfo {
  clusterId: string;
  issuer: string;
  subjects: typeof SUBJECTS;
  buckets: typeof BUCKETS;
}

export interface ErrorReply {
  error: { code: CpErrorCode; message: string; challenge?: { nonce: string; key: string; namespace: string } };
}

/** NATS subjects served by the control plane (request/reply). */
export const SUBJECTS = {
  enroll: 'lattice.cp.enroll',
  endpoint: 'lattice.cp.endpoint',
  directory: 'lattice.cp.directory',
  /** An agent replaces the set of routes it advertises: {jwt, advertiseRoutes, exitNode}. */
  routes: 'lattice.cp.routes',
} as const;

/** JetStream KV buckets holding all control-plane state. */
export const BUCKETS = {
  tokens: 'lattice_tokens',
  agents: 'lattice_agents',
  ipam: 'lattice_ipam',
  policies: 'lattice_policies',
  revocations: 'lattice_revocations',
  config: 'lattice_config',
} as const;

/** DNS-label names, so they are safe as KV key tokens, hostnames and file names. */
const LABEL_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** True for a DNS label (RFC 1035: lowercase letters, digits, inner '-', 1 to 63 characters). */
export function isLabel(s: unknown): s is string {
  return typeof s === 'string' && LABEL_RE.test(s);
}

/**
 * The agent API's tools (src/agentapi/: POST /v1/tools/{tool}, POST /v1/delegate), the names a token's or a
 * delegation's allowedTools may grant. Lives here because grants are checked where tokens are made.
 */
export const ToolName = {
  ListPeers: 'list_peers',
  CheckConnectivity: 'check_connectivity',
  GetPolicy: 'get_policy',
  RequestEgress: 'request_egress',
  /** POST /v1/delegate; a capability like any other: it must be in allowedTools under enforce. */
  Delegate: 'delegate',
} as const;
export type ToolName = (typeof ToolName)[keyof typeof ToolName];
const TOOLS: ReadonlySet<string> = new Set(Object.values(ToolName));

/** True for one of the agent API's tools (ToolName). */
export function isToolName(s: unknown): s is ToolName {
  return typeof s === 'string' && TOOLS.has(s);
}

/**
 * A list of tool grants (at most 256, duplicates folded). @throws ControlPlaneError EBADREQUEST naming the
 * first unknown tool and the ones that exist.
 */
export function toolList(v: unknown, what: string): ToolName[] {
  if (!Array.isArray(v) || v.length > 256) throw badRequest(`${what} must be a list of tool names`);
  const unknown = v.find((t) => !isToolName(t));
  if (unknown !== undefined) throw badRequest(`${what}: no tool ${JSON.stringify(unknown)}; the agent API's tools are ${[...TOOLS].join(', ')}`);
  return [...new Set(v as ToolName[])];
}

/** A WireGuard public key: 32 bytes in canonical standard base64 (as `wg pubkey` prints it). */
export function isWgKey(s: unknown): s is string {
  return typeof s === 'string' && /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/.test(s);
}

/** host:port or [v6]:port. */
export function isEndpoint(s: unknown): s is string {
  if (typeof s !== 'string' || s.length > 300) return false;
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):(\d{1,5})$/.exec(s);
  return !!m && Number(m[3]) > 0 && Number(m[3]) < 65536;
}

/** What the control plane reports for the audit trail (wired by the caller; see ServiceOptions.onEvent). */
export type ControlPlaneEvent =
  | { type: 'enrollment.enrolled'; agentId: string; namespace: string; name: string; ipv4: string; ipv6: string; tokenId: string; expiresAt: number; parentAgentId?: string }
  | { type: 'enrollment.revoked'; agentId: string; namespace: string; name: string; reason: string }
  | { type: 'enrollment.reenrolled'; agentId: string; namespace: string; name: string; tokenId: string; endpoint?: string }
  /** A route was advertised or withdrawn by its agent (`by` "agent:<name>"), or approved, rejected or withdrawn by an operator. */
  | { type: 'route.changed'; agentId: string; namespace: string; name: string; cidr: string; change: 'advertised' | 'approved' | 'rejected' | 'withdrawn'; by: string }
  /**
   * Operators' changes (`by`: the verified admin user, "local" for a call in the control plane's own
   * process, "agent:<name>" for a delegation). policyHash: "sha256:<hex>" of the stored JSON text.
   */
  | { type: 'policy.set'; namespace: string; policyHash: string; rules: number; by: string }
  | { type: 'token.created'; namespace: string; tokenId: string; limit: number; expiresAt: number; by: string; agentId?: string }
  | { type: 'labels.changed'; agentId: string; namespace: string; name: string; labels: Record<string, string>; by: string }
  | { type: 'user.changed'; user: string; change: 'added' | 'role' | 'removed'; role?: string; by: string }
  /** A namespace's default exit node set or cleared (exitNode ""), controlplane/namespaces.ts. */
  | { type: 'namespace.exit-node'; namespace: string; exitNode: string; allowOptOut: boolean; by: string };
