import type { NatsConnection } from 'nats';
import { AUDIT_EVENT_VERSION, auditSubject, newEventId, type AuditEvent } from '../audit/events.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import type { ControlPlaneEvent } from './types.js';

/**
 * Enrollments, re-enrollments, revocations, route decisions and operators' changes (policy, tokens,
 * labels, admin users) in the audit stream, beside the launchers' own events:
 * published by the control plane (launcherId "control-plane") on the agent's own subject,
 * lattice.audit.<ns>.<agentId>.enrollment.{enrolled,revoked} (a namespace's own changes on
 * lattice.audit.<ns>._.<type>), so `lattice audit events --agent NAME`
 * shows them with the rest of that agent's trail. A re-enrollment (proof of key possession, a new JWT)
 * is an `enrollment.enrolled` of the same agent.
 */

/** The audit event for `e` (pure): `now` epoch ms, `seq` this publisher's counter, `id` a fresh event id. */
export function enrollmentAuditEvent(e: ControlPlaneEvent, now: number, seq: number, id: string): AuditEvent {
  const agentId = 'agentId' in e ? e.agentId : undefined;
  const envelope = { v: AUDIT_EVENT_VERSION, id, seq, launcherId: 'control-plane', ts: new Date(now).toISOString(), ...(agentId ? { agentId } : {}), ...('namespace' in e ? { namespace: e.namespace } : {}) };
  switch (e.type) {
    case 'enrollment.enrolled':
      return {
        ...envelope,
        type: 'enrollment.enrolled',
        enrollmentId: e.agentId,
        overlayIp: e.ipv4,
        expiresAt: new Date(e.expiresAt).toISOString(),
        ...(e.parentAgentId ? { parentAgentId: e.parentAgentId } : {}),
      };
    case 'enrollment.reenrolled':
      return { ...envelope, type: 'enrollment.enrolled', enrollmentId: e.agentId };
    case 'enrollment.revoked':
      return { ...envelope, type: 'enrollment.revoked', enrollmentId: e.agentId, reason: e.reason };
    case 'route.changed':
      return { ...envelope, type: 'route.changed', cidr: e.cidr, change: e.change, by: e.by };
    case 'policy.set':
      return { ...envelope, type: 'policy.set', policyHash: e.policyHash, rules: e.rules, by: e.by };
    case 'token.created':
      return { ...envelope, type: 'token.created', tokenId: e.tokenId, limit: e.limit, expiresAt: new Date(e.expiresAt).toISOString(), by: e.by };
    case 'labels.changed':
      return { ...envelope, type: 'labels.changed', labels: Object.entries(e.labels).map(([k, v]) => `${k}=${v}`), by: e.by };
    case 'user.changed':
      return { ...envelope, type: 'user.changed', user: e.user, change: e.change, ...(e.role ? { role: e.role } : {}), by: e.by };
    case 'namespace.exit-node':
      return { ...envelope, type: 'namespace.exit-node', exitNode: e.exitNode, optOut: e.allowOptOut ? 'allowed' : 'refused', by: e.by };
  }
}

/**
 * A ServiceOptions.onEvent that publishes each event to JetStream (de-duplicated by event id). Never
 * throws: a failed publish (no audit stream yet, NATS down) is logged, and the control plane's log keeps
 * the event either way.
 */
export function publishEnrollmentEvents(nc: NatsConnection, clock: Clock, log?: Logger): (e: ControlPlaneEvent) => void {
  const js = nc.jetstream();
  // seq: a per-process counter started at the wall clock in ms, so it increases across restarts.
  let seq = clock.now();
  return (e) => {
    const now = clock.now();
    const ev = enrollmentAuditEvent(e, now, seq++, newEventId(now));
    js.publish(auditSubject(ev), JSON.stringify(ev), { msgID: ev.id }).catch((err: unknown) => {
      log?.warn({ err: (err as Error).message, type: e.type, agentId: ev.agentId }, 'control-plane audit event not published (is the audit stream there?)');
    });
  };
}
