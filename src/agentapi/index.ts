import type { NatsConnection } from 'nats';
import type { AuditEventDraft } from '../audit/events.js';
import { systemClock, type Clock } from '../clock.js';
import type { Logger } from '../log.js';
import { executeTool, type AgentIdentity, type ToolImpl } from './execute.js';
import { serveAgentApi } from './server.js';
import { buildTools, type CheckEgress } from './tools.js';

export {
  decideToolCall,
  executeTool,
  parseTraceparent,
  formatTraceparent,
  traceFor,
  ToolError,
  ToolName,
  DenyReason,
  type AgentIdentity,
  type Decision,
  type ToolImpl,
  type ToolRequest,
  type ToolResponse,
  type TraceContext,
} from './execute.js';
export { serveAgentApi, MAX_AGENT_BODY_BYTES, AgentApiListenError, type AgentApiServer } from './server.js';
export { buildTools, EgressProto, type CheckEgress } from './tools.js';

/** Where the agent finds the API inside the sandbox. */
export const AGENT_API_MOUNT = '/run/lattice';
export const AGENT_API_SOCKET = `${AGENT_API_MOUNT}/agent.sock`;

/**
 * The sandbox's view of the agent API: /run/lattice is a read-only tmpfs of its own (no host disk
 * behind it, nothing the agent can write), and the socket alone is bind-mounted onto
 * /run/lattice/agent.sock (reached through runsc --host-uds=open). The host directory holding the
 * socket is never visible to the agent.
 */
export function agentApiMounts(socketPath: string): Array<{ destination: string; type: string; source: string; options: string[] }> {
  return [
    { destination: AGENT_API_MOUNT, type: 'tmpfs', source: 'tmpfs', options: ['ro', 'nosuid', 'nodev', 'noexec', 'mode=755', 'size=4k'] },
    { destination: AGENT_API_SOCKET, type: 'bind', source: socketPath, options: ['bind'] },
  ];
}

export interface StartAgentApiOptions {
  /** Host path of the socket, in a directory of its own (that directory is what gets bind-mounted). */
  socketPath: string;
  identity: AgentIdentity;
  /** Fed by the launcher's DirectoryWatcher ('revoked'). */
  isRevoked: () => boolean;
  checkEgress: CheckEgress;
  getPolicy: () => unknown;
  /** The launcher's connection to the control plane's NATS (tools and delegation go through it). */
  nc: NatsConnection;
  /** Durable sink for tool.span events, e.g. `(d) => outbox.append(d)`; a call whose span fails is answered 503. */
  recordSpan: (draft: AuditEventDraft) => void | Promise<void>;
  /** See ExecuteDeps.auditReady: while false, enforce mode runs no tool. */
  auditReady?: () => boolean;
  clock?: Clock;
  log?: Logger;
  /** Replace or add tools (tests, future tools). */
  tools?: Record<string, ToolImpl>;
  timeoutMs?: number;
}

export interface StartedAgentApi {
  readonly socketPath: string;
  close(): Promise<void>;
}

/** Serve one sandbox's agent API on its Unix socket. */
export async function startAgentApi(o: StartAgentApiOptions): Promise<StartedAgentApi> {
  const clock = o.clock ?? systemClock;
  const identity: AgentIdentity = Object.freeze({ ...o.identity, allowedTools: [...o.identity.allowedTools], allowedNamespaces: [...o.identity.allowedNamespaces] });
  const tools = { ...buildTools({ nc: o.nc, checkEgress: o.checkEgress, getPolicy: o.getPolicy, timeoutMs: o.timeoutMs }), ...o.tools };
  const deps = { identity, isRevoked: o.isRevoked, tools, recordSpan: o.recordSpan, auditReady: o.auditReady, now: () => clock.now() };
  return serveAgentApi({
    socketPath: o.socketPath,
    log: o.log,
    execute: (req) => executeTool(deps, req),
    identityView: () => ({
      agentId: identity.agentId,
      ...(identity.name ? { name: identity.name } : {}),
      namespace: identity.namespace,
      allowedTools: identity.allowedTools,
      allowedNamespaces: identity.allowedNamespaces,
      enforcement: identity.enforcement,
      expiresAt: new Date(identity.jwtExpiresAt).toISOString(),
      expired: clock.now() >= identity.jwtExpiresAt,
      revoked: o.isRevoked(),
      // What this launcher serves; allowedTools is what this identity may call (under enforce).
      availableTools: Object.keys(tools),
    }),
  });
}
