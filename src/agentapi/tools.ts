import { parseIp } from '../net/addr.js';
import type { NatsConnection } from 'nats';
import { LatticeError } from '../errors.js';
import { AGENT_SUBJECTS, type DelegationReply } from '../controlplane/agentops.js';
import type { EgressRequestRecord } from '../controlplane/egress.js';
import type { ErrorReply } from '../controlplane/types.js';
import { ControlPlaneUnreachableError, EnrollError, fetchDirectory } from '../enroll/client.js';
import { ToolError, ToolName, type ToolImpl } from './execute.js';

/**
 * The tools an agent may call: control-plane operations done by the launcher on the agent's behalf,
 * with the agent's JWT. Each takes the checked call and returns a JSON value or throws ToolError.
 */

export const EgressProto = { Tcp: 'tcp', Udp: 'udp', Icmp: 'icmp' } as const;
export type EgressProto = (typeof EgressProto)[keyof typeof EgressProto];

/** The launcher's packet-path verdict for a destination (its pump/policy), without sending anything. */
export type CheckEgress = (ip: string, port: number, proto: EgressProto) => { verdict: string; ruleId?: string } | Promise<{ verdict: string; ruleId?: string }>;

export interface ToolDeps {
  nc: NatsConnection;
  checkEgress: CheckEgress;
  getPolicy: () => unknown;
  timeoutMs?: number;
}

const enc = new TextEncoder();
const dec = new TextDecoder();

const bad = (msg: string) => new ToolError(400, 'EBADREQ', msg);

/** One request to the control plane over NATS; its error replies become EnrollError(code) as in src/enroll. */
async function cpRequest<T>(nc: NatsConnection, subject: string, body: unknown, timeoutMs: number): Promise<T> {
  let reply;
  try {
    reply = await nc.request(subject, enc.encode(JSON.stringify(body)), { timeout: timeoutMs });
  } catch (err) {
    throw new ControlPlaneUnreachableError(`the control plane did not answer ${subject}: ${(err as Error).message}`, { cause: err });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(dec.decode(reply.data));
  } catch (err) {
    throw new LatticeError('ECP_REPLY', 'the control plane sent a reply that is not JSON', { cause: err });
  }
  const e = (parsed as Partial<ErrorReply>)?.error;
  if (e && typeof e.code === 'string') throw new EnrollError(e.code, String(e.message));
  return parsed as T;
}

function port(v: unknown): number {
  if (!Number.isInteger(v) || (v as number) < 1 || (v as number) > 65535) throw bad('port must be an integer 1..65535');
  return v as number;
}

/**
 * The agent API's tools by name, bound to their collaborators (`d`: NATS, the egress check, the policy,
 * a timeout in ms, default 10 000). Each tool gets the caller's identity and checked args and returns a
 * JSON value or throws an `AgentApiError` with a wire code.
 */
export function buildTools(d: ToolDeps): Record<string, ToolImpl> {
  const timeoutMs = d.timeoutMs ?? 10_000;
  return {
    /** Active peers of the agent's namespaces (args.namespace: only that one). */
    [ToolName.ListPeers]: async ({ identity, args, namespace }) => {
      const dir = await fetchDirectory({ nc: d.nc, jwt: identity.jwt, timeoutMs });
      const peers = args.namespace === undefined ? dir.peers : dir.peers.filter((p) => p.namespace === namespace);
      return { peers };
    },

    /** Would the launcher let a packet to ip:port/proto out? Answers from the policy; sends nothing. */
    [ToolName.CheckConnectivity]: async ({ args }) => {
      if (typeof args.ip !== 'string' || !parseIp(args.ip)) throw bad('ip must be an IPv4 or IPv6 address (resolve names first)');
      const proto = (args.proto ?? EgressProto.Tcp) as EgressProto;
      if (!Object.values(EgressProto).includes(proto)) throw bad(`proto must be one of ${Object.values(EgressProto).join(', ')}`);
      const p = proto === EgressProto.Icmp ? Number(args.port ?? 0) : port(args.port);
      const r = await d.checkEgress(args.ip, p, proto);
      return { ip: args.ip, port: p, proto, verdict: r.verdict, ...(r.ruleId ? { ruleId: r.ruleId } : {}) };
    },

    /** The agent's effective policy as the launcher enforces it. */
    [ToolName.GetPolicy]: async () => ({ policy: (await d.getPolicy()) ?? null }),

    /** Ask an operator to open a destination; stored by the control plane, listed on its admin API. */
    [ToolName.RequestEgress]: async ({ identity, args }) => {
      const body = { jwt: identity.jwt, host: args.host, port: args.port, proto: args.proto, reason: args.reason };
      const r = await cpRequest<EgressRequestRecord>(d.nc, AGENT_SUBJECTS.egressRequest, body, timeoutMs);
      return { requestId: r.id, status: r.status, host: r.host, port: r.port, proto: r.proto };
    },

    /** A child enrollment token with a subset of this agent's grants (POST /v1/delegate). */
    [ToolName.Delegate]: async ({ identity, args }) => {
      const { namespace, allowedTools, allowedNamespaces, limit, ttl, modes } = args;
      return cpRequest<DelegationReply>(d.nc, AGENT_SUBJECTS.delegate, { jwt: identity.jwt, namespace, allowedTools, allowedNamespaces, limit, ttl, modes }, timeoutMs);
    },
  };
}
