import type { NatsConnection } from 'nats';
import { LatticeError } from '../errors.js';
import type { NatsAuthority } from '../natsserver/auth.js';
import type { NatsUserIssuer } from './service.js';
import { BUCKETS, SUBJECTS } from './types.js';

/** The system-account subject that takes a new account JWT (full resolver); replies {data: {code: 200}}. */
export const CLAIMS_UPDATE_SUBJECT = '$SYS.REQ.CLAIMS.UPDATE';

/**
 * NatsUserIssuer over the authority (keys, JWTs) and a system-account connection (to push revocations).
 * Revocations are serialized: each push carries the whole list, so the last one written wins in order.
 */
export function natsUserIssuer(authority: NatsAuthority, sys: NatsConnection, reach: { caHash?: string; urls?: string[] } = {}): NatsUserIssuer {
  let chain: Promise<unknown> = Promise.resolve();
  const buckets = { agents: BUCKETS.agents, policies: BUCKETS.policies, revocations: BUCKETS.revocations };
  return {
    caHash: reach.caHash,
    urls: reach.urls,
    bootstrap: (tokenId, expiresAtMs) => authority.bootstrapUser(tokenId, expiresAtMs, SUBJECTS.enroll),
    launcher: (pk, scope, expiresAtMs) => authority.launcherUser(pk, scope, buckets, expiresAtMs),
    revoke(keys) {
      const run = chain.then(async () => {
        const jwt = await authority.revoke(keys, Math.floor(Date.now() / 1000));
        await pushAccount(sys, jwt);
      });
      chain = run.catch(() => undefined);
      return run;
    },
  };
}

/** Hand the server a new account JWT; throws unless it answers code 200. */
export async function pushAccount(sys: NatsConnection, accountJwt: string): Promise<void> {
  const r = await sys.request(CLAIMS_UPDATE_SUBJECT, new TextEncoder().encode(accountJwt), { timeout: 5000 });
  let reply: { data?: { code?: number; message?: string }; error?: { code?: number; description?: string } };
  try {
    reply = JSON.parse(new TextDecoder().decode(r.data)) as typeof reply;
  } catch {
    reply = {};
  }
  if (reply.data?.code !== 200) {
    throw new LatticeError('ENATS_CLAIMS', `nats-server refused the account update: ${reply.error?.description ?? reply.data?.message ?? 'no answer'}`);
  }
}
