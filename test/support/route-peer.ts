import type { Peer } from '../../src/controlplane/types.js';

/** A directory peer in namespace "ns" whose own address is 10.77.0.<length of name>, carrying approved `routes`. */
export const routePeer = (name: string, publicKey: string, routes: { cidr: string; approvedAt: number }[] = []): Peer => ({
  name,
  namespace: 'ns',
  publicKey,
  allowedIPs: [`10.77.0.${name.length}/32`],
  ...(routes.length ? { routes } : {}),
});
