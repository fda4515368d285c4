/**
 * The audit stream's contract, schema/audit-event.schema.json, compiled with ajv for tests. Producers'
 * tests pass every event they make through `auditSchemaProblems`; the events test checks that the
 * runtime validator (src/audit/events.ts) agrees with the schema.
 */
import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import type { AuditEventDraft } from '../../src/audit/events.js';

const schema = JSON.parse(readFileSync(new URL('../../schema/audit-event.schema.json', import.meta.url), 'utf8')) as object;
const validate = new Ajv({ allErrors: true, strict: true }).compile(schema);

/** Problems of `event` against the schema ("/dstPort must be <= 65535"), empty when it conforms. */
export function auditSchemaProblems(event: unknown): string[] {
  if (validate(event)) return [];
  return (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? 'is invalid'}`);
}

/** A producer's draft with the envelope the outbox would add: what goes on the stream. */
export function asPublished(draft: AuditEventDraft, seq = 1): Record<string, unknown> {
  return { v: 1, id: '0190c1a2-0000-7000-8000-000000000001', seq, launcherId: 'l1', ts: '2024-07-30T10:00:00.000Z', ...draft };
}

/** Throws (failing the producing test) when a draft would not conform once published. */
export function assertPublishable(draft: AuditEventDraft): void {
  const problems = auditSchemaProblems(asPublished(draft));
  // With oneOf, ajv lists every branch's complaint; the type's own branch is among them.
  if (problems.length > 0) throw new Error(`audit event ${draft.type} violates schema/audit-event.schema.json: ${problems.join('; ')}`);
}
