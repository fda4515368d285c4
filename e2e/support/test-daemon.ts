/** A `lattice daemon` of the built CLI for e2e tests, and api/openapi.json loaded for validating its replies. */
import { execa, type ResultPromise } from 'execa';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { CLI, REPO, waitFor } from './env.js';
import { socketAnswers } from '../../src/client/index.js';

export interface TestDaemon {
  run: ResultPromise;
  /** What it wrote to stderr so far. */
  stderr(): string;
}

/**
 * Start `lattice --state-dir STATE daemon FLAGS...`; resolves once it said it listens on `socket` (after its
 * start-up warnings) and the socket answers. Errors: the daemon's stderr when it exits first.
 */
export async function startTestDaemon(stateDir: string, socket: string, flags: string[] = []): Promise<TestDaemon> {
  const run = execa(process.execPath, [CLI, '--state-dir', stateDir, 'daemon', ...flags], { reject: false, stdin: 'ignore' });
  let err = '';
  run.stderr?.on('data', (b: Buffer) => (err += b.toString()));
  await waitFor(
    async () => {
      if (run.exitCode !== null) throw new Error(`the daemon exited ${run.exitCode}: ${err}`);
      return err.includes(`listening on ${socket}`) && (await socketAnswers(socket));
    },
    120_000,
    'the daemon answers on its socket',
  );
  return { run, stderr: () => err };
}

/** api/openapi.json, and an Ajv that knows it as `openapi` (refer to its parts as `openapi#/...`). */
export function openapiAjv<T = object>(): { doc: T; ajv: Ajv2020 } {
  const doc = JSON.parse(readFileSync(join(REPO, 'api/openapi.json'), 'utf8')) as T;
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  (addFormats as unknown as (a: Ajv2020) => void)(ajv);
  ajv.addSchema(doc as object, 'openapi');
  return { doc, ajv };
}
