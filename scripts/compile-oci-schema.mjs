// Build step: compile oci/config.schema.json into a standalone validator module next to the built
// validate.js, so a sandbox start does not pay for loading and compiling ajv (~120 ms here).
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { Ajv } from 'ajv';
import standaloneCode from 'ajv/dist/standalone/index.js';

const schema = JSON.parse(readFileSync(new URL('../oci/config.schema.json', import.meta.url), 'utf8'));
const ajv = new Ajv({ allErrors: true, strict: true, code: { source: true, esm: true } });
const code = standaloneCode.default(ajv, ajv.compile(schema));
mkdirSync(new URL('../dist/oci/', import.meta.url), { recursive: true });
// ajv's ESM output still require()s two small runtime helpers (equal, ucs2length).
const header = "// Generated from oci/config.schema.json by scripts/compile-oci-schema.mjs. Do not edit.\nimport { createRequire } from 'node:module';\nconst require = createRequire(import.meta.url);\n";
writeFileSync(new URL('../dist/oci/config-validator.js', import.meta.url), `${header}${code}\n`);
