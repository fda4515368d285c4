import type { NatsConnection } from 'nats';
import { AUDIT_EVENT_VERSION, auditSubject, newEventId, type AuditEvent } from '../audit/events.js';
import type { Clock } from '../clock.js';
import type { Logger } from '../log.js';
import type { ControlPlaneEvent } from './types.js';

/**
 * Enrollments, re-enrollments and revocations in the audit stream, beside the launchers' own events:
 * published by the control plane (launcherId "control-plane") on the agent's own subject,
 * lattice.audit.<ns>.<agentId>.enrollment.{enrolled,revoked}, so `lattice audit events --agent NAME`
 * shows them with the rest of that agent's trail. A re-enrollment (proof of key possession, a new JWT)
 * is an `enrollment.enrolled` of the same agent.
 */

/** The audit event for `e` (pure): `now` epoch ms, `seq` this publisher's counter, `id` a fresh event id. */
export function enrollmentAuditEvent(e: ControlPlaneEvent, now: number, seq: number, id: string): AuditEvent {
  const envelope = { v: AUDIT_EVENT_VERSION, id, seq, launcherId: 'control-plane', ts: new Date(now).toISOString(), agentId: e.agentId, namespace: e.namespace };
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
      log?.warn({ err: (err as Error).message, type: e.type, agentId: e.agentId }, 'enrollment audit event not published (is the audit stream there?)');
    });
  };
}
