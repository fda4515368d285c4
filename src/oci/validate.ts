import { readFileSync } from 'node:fs';
import { Ajv, type ValidateFunction } from 'ajv';
import { LatticeError } from '../errors.js';
import type { OciSpec } from './spec.js';

const SCHEMA_PATH = new URL('../../oci/config.schema.json', import.meta.url);

export class InvalidSpecError extends LatticeError {
  override readonly name = 'InvalidSpecError';
  constructor(readonly problems: string[]) {
    super('EOCI_SPEC', `generated config.json violates the OCI schema (oci/config.schema.json): ${problems.join('; ')}`);
  }
}

let validator: ValidateFunction | undefined;

function compiled(): ValidateFunction {
  if (!validator) {
    const schema = JSON.parse(readFileSync(SCHEMA_PATH, 'utf8')) as object;
    validator = new Ajv({ allErrors: true, strict: true }).compile(schema);
  }
  return validator;
}

/** Problems with a config.json, one string each ("/process/cwd must match pattern ..."); empty when valid. */
export function specProblems(spec: unknown): string[] {
  const v = compiled();
  if (v(spec)) return [];
  return (v.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? 'is invalid'}${e.params && 'additionalProperty' in e.params ? ` (${String(e.params.additionalProperty)})` : ''}`);
}

export function assertValidSpec(spec: OciSpec | unknown): void {
  const problems = specProblems(spec);
  if (problems.length > 0) throw new InvalidSpecError(problems);
}
