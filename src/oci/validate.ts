import { readFileSync } from 'node:fs';
import type { ValidateFunction } from 'ajv';
import { LatticeError } from '../errors.js';
import type { OciSpec } from './spec.js';

const SCHEMA_PATH = new URL('../../oci/config.schema.json', import.meta.url);

export class InvalidSpecError extends LatticeError {
  override readonly name = 'InvalidSpecError';
  constructor(readonly problems: string[]) {
    super('EOCI_SPEC', `generated config.json violates the OCI schema (oci/config.schema.json): ${problems.join('; ')}`);
  }
}

let validator: Promise<ValidateFunction> | undefined;

/**
 * The build compiles the schema into dist/oci/config-validator.js (scripts/compile-oci-schema.mjs);
 * from the source tree (tests) the schema is compiled here with ajv. Both come from the same file.
 */
function compiled(): Promise<ValidateFunction> {
  validator ??= import(new URL('./config-validator.js', import.meta.url).href)
    .then((m: { default: ValidateFunction }) => m.default)
    .catch(async () => {
      const { Ajv } = await import('ajv');
      const schema = JSON.parse(readFileSync(SCHEMA_PATH, 'utf8')) as object;
      return new Ajv({ allErrors: true, strict: true }).compile(schema);
    });
  return validator;
}

/** Problems with a config.json, one string each ("/process/cwd must match pattern ..."); empty when valid. */
export async function specProblems(spec: unknown): Promise<string[]> {
  const v = await compiled();
  if (v(spec)) return [];
  return (v.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? 'is invalid'}${e.params && 'additionalProperty' in e.params ? ` (${String(e.params.additionalProperty)})` : ''}`);
}

export async function assertValidSpec(spec: OciSpec | unknown): Promise<void> {
  const problems = await specProblems(spec);
  if (problems.length > 0) throw new InvalidSpecError(problems);
}
