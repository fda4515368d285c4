import { createHash, X509Certificate } from 'node:crypto';
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type DetailedPeerCertificate } from 'node:tls';
import { LatticeError } from '../errors.js';
import { ControlPlaneUnreachableError } from './client.js';

/**
 * Trust on a pin, the way `kubeadm join --discovery-token-ca-cert-hash` does: the join token carries
 * "sha256:<hex>" of the control plane's CA certificate; the launcher opens one connection to the NATS
 * port (INFO in plain text, then the TLS upgrade the NATS protocol does), takes the certificate chain the
 * server sends WITHOUT trusting it, and keeps the CA certificate only if its SHA-256 equals the pin. Every
 * later connection verifies the server normally (chain and name) against that CA, and the CA is stored
 * with the launcher's credentials, so a restart needs no pin and no token.
 *
 * Nothing but the certificate is read from that first connection: no credentials are sent on it.
 */

export class CaPinError extends LatticeError {
  override readonly name = 'CaPinError';
  constructor(message: string, options?: { cause?: unknown }) {
    super('ETLS_PIN', message, options);
  }
}

/** host and port of nats://HOST:PORT, tls://HOST:PORT or HOST:PORT (default port 4222). */
export function natsHostPort(url: string): { host: string; port: number } {
  const u = new URL(/^[a-z]+:\/\//i.test(url) ? url : `nats://${url}`);
  return { host: u.hostname.replace(/^\[|\]$/g, ''), port: u.port ? Number(u.port) : 4222 };
}

/** Every certificate of a peer chain, leaf first, each once. */
function chainOf(leaf: DetailedPeerCertificate): Buffer[] {
  const out: Buffer[] = [];
  for (let c: DetailedPeerCertificate | undefined = leaf; c && c.raw && !out.some((r) => r.equals(c!.raw)); c = c.issuerCertificate) out.push(c.raw);
  return out;
}

const fingerprint = (der: Buffer) => `sha256:${createHash('sha256').update(der).digest('hex')}`;

/**
 * The CA certificate (PEM) of the NATS server at `url` whose SHA-256 is `pin`. Errors (one line each):
 * CaPinError when the server offers no TLS or its chain holds no certificate with that hash (wrong
 * control plane, or someone in between); ControlPlaneUnreachableError when it cannot be reached in `timeoutMs`.
 */
export async function fetchPinnedCa(url: string, pin: string, timeoutMs = 5000): Promise<string> {
  const { host, port } = natsHostPort(url);
  const plain = netConnect({ host, port });
  const timer = setTimeout(() => plain.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
  try {
    const info = await readInfo(plain);
    if (info.tls_required !== true && info.tls_available !== true) {
      throw new CaPinError(`the control plane at ${url} does not offer TLS, but the join token pins its CA ${pin}: the token is for another control plane, or the address is wrong`);
    }
    const chain = await new Promise<Buffer[]>((resolve, reject) => {
      // Verification is ours here (the pin); the chain is read, never trusted as such.
      const s = tlsConnect({ socket: plain, rejectUnauthorized: false, ...(/^[\d.:]+$/.test(host) ? {} : { servername: host }) }, () => {
        resolve(chainOf(s.getPeerCertificate(true)));
        s.destroy();
      });
      s.once('error', reject);
    });
    const ca = chain.find((der) => fingerprint(der) === pin);
    if (!ca) {
      const root = chain.length > 0 ? fingerprint(chain[chain.length - 1]!) : 'no certificate';
      throw new CaPinError(`the control plane at ${url} presented CA ${root}, but the join token pins ${pin}: refusing to connect (the token is for another control plane, or someone is in between); get a fresh join token with \`lattice token create\``);
    }
    return new X509Certificate(ca).toString();
  } catch (err) {
    if (err instanceof CaPinError) throw err;
    throw new ControlPlaneUnreachableError(`cannot fetch the CA certificate of the control plane at ${url}: ${(err as Error).message}`, { cause: err });
  } finally {
    clearTimeout(timer);
    plain.destroy();
  }
}

/** The server's INFO line (NATS client protocol: the first thing a server sends). */
function readInfo(s: Socket): Promise<{ tls_required?: boolean; tls_available?: boolean }> {
  return new Promise((resolve, reject) => {
    let buf = '';
    const onData = (d: Buffer) => {
      buf += d.toString('latin1');
      const end = buf.indexOf('\r\n');
      if (end < 0) {
        if (buf.length > 64 * 1024) done(new Error('the server sent no INFO line'));
        return;
      }
      const line = buf.slice(0, end);
      if (!line.startsWith('INFO ')) return done(new Error('the server is not a NATS server (no INFO line)'));
      try {
        const info = JSON.parse(line.slice(5)) as { tls_required?: boolean; tls_available?: boolean };
        done(undefined, info);
      } catch {
        done(new Error('the server sent an INFO line that is not JSON'));
      }
    };
    const onError = (err: Error) => done(err);
    const onClose = () => done(new Error('the connection closed before INFO'));
    const done = (err?: Error, info?: { tls_required?: boolean; tls_available?: boolean }) => {
      s.off('data', onData);
      s.off('error', onError);
      s.off('close', onClose);
      if (err) reject(err);
      else resolve(info!);
    };
    s.on('data', onData);
    s.once('error', onError);
    s.once('close', onClose);
  });
}
