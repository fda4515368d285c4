/**
 * The audit stream's contract, schema/audit-event.schema.json, compiled with ajv for tests. Producers'
 * tests pass every event they make through `auditSchemaProblems`; the events test checks that the
 * runtime validator (src/audit/events.ts) agrees with the schema.
 */
import { readFileSync } from 'node:fs';
import { Ajv } from 'ajv';
import type { AuditEventDraft } from '../../src/audit/events.js';

const schema = JSON.parse(readFileSync(new URL('../../schema/audit-event.schema.json', import.meta.url), 'utf8')) as { oneOf: Array<{ title: string }> };
const validate = new Ajv({ allErrors: true, strict: true }).compile(schema);

/**
 * Problems of `event` against the schema ("/durationMs must be >= 0"), empty when it conforms. For a
 * known `type`, only its own body's problems (oneOf reports every branch's).
 */
export function auditSchemaProblems(event: unknown): string[] {
  if (validate(event)) return [];
  const type = (event as { type?: unknown } | null)?.type;
  const branch = schema.oneOf.findIndex((b) => b.title === type);
  const errors = (validate.errors ?? []).filter((e) => branch < 0 || e.schemaPath.startsWith(`#/oneOf/${branch}/`));
  return (errors.length > 0 ? errors : validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? 'is invalid'}${e.params && 'additionalProperty' in e.params ? ` (${String(e.params.additionalProperty)})` : ''}`);
}

/** A producer's draft with the envelope the outbox would add: what goes on the stream. */
export function asPublished(draft: AuditEventDraft, seq = 1): Record<string, unknown> {
  return { v: 1, id: '0190c1a2-0000-7000-8000-000000000001', seq, launcherId: 'l1', ts: '2024-07-30T10:00:00.000Z', ...draft };
}

/** Throws (failing the producing test) when a draft would not conform once published. */
export function assertPublishable(draft: AuditEventDraft): void {
  const problems = auditSchemaProblems(asPublished(draft));
  if (problems.length > 0) throw new Error(`audit event ${draft.type} violates schema/audit-event.schema.json: ${problems.join('; ')}`);
}
