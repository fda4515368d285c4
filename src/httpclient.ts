import { readFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { UsageError } from './errors.js';
import { statePaths } from './state.js';

/*
 * The HTTP(S) client side of the control plane's admin API, shared by the admin commands (src/cli/api.ts)
 * and `lattice mcp` (src/mcp/): one exchange over node:http/https with an explicit CA, and the rule that
 * picks the CA (--ca, $LATTICE_CA, the state dir's control-plane/tls/ca.pem).
 */

/**
 * The CA to trust for an https:// admin API, in this order: `--ca FILE`, $LATTICE_CA, the state dir's
 * `control-plane/tls/ca.pem` (a control plane on this host with this state dir). Undefined for http:// or
 * when none is there (Node's own trust store then decides). A named file that cannot be read is a UsageError.
 */
export async function apiCa(url: string, o: { ca?: string }, stateDir: string, env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  if (!url.startsWith('https:')) return undefined;
  const named = o.ca ?? (env.LATTICE_CA || undefined);
  if (named !== undefined) {
    try {
      return await readFile(named, 'utf8');
    } catch (err) {
      throw new UsageError(`cannot read the CA file ${named} (${o.ca !== undefined ? '--ca' : '$LATTICE_CA'}): ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
    }
  }
  return readFile(join(statePaths(stateDir).controlPlane, 'tls', 'ca.pem'), 'utf8').catch(() => undefined);
}

/** Node's TLS verification failures (OpenSSL's names, and Node's for a certificate naming another host). */
export const TLS_TRUST = /^(SELF_SIGNED_CERT_IN_CHAIN|DEPTH_ZERO_SELF_SIGNED_CERT|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT_LOCALLY|CERT_SIGNATURE_FAILURE|ERR_TLS_CERT_ALTNAME_INVALID)$/;

/** One HTTP(S) exchange: status and body text. `ca` (PEM) replaces the trust store for https. */
export function httpExchange(url: string, init: { method: string; headers: Record<string, string>; body?: string; ca?: string; timeoutMs: number }): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = (url.startsWith('https:') ? httpsRequest : httpRequest)(
      url,
      { method: init.method, headers: init.headers, ...(init.ca !== undefined ? { ca: init.ca } : {}), signal: AbortSignal.timeout(init.timeoutMs) },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.once('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }));
        res.once('error', reject);
      },
    );
    req.once('error', reject);
    req.end(init.body);
  });
}

