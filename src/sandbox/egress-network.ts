/**
 * `sandbox run --policy FILE` without WireGuard: a sandbox whose only way out is the pump, and whose
 * allowed flows leave through the host's own network (src/egress/host.ts), source-NATed.
 *
 *   agent -> gVisor netstack -> TUN (100.77.x.y/32) -> pump: anti-spoof, DNS (domain rules resolved
 *   upstream), flow table, policy, host-services guard -> egress TUN -> host kernel: forward + masquerade
 *
 * Every input is checked before anything is created, so bad input changes nothing.
 */
import { join } from 'node:path';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../clock.js';
import { writeFileAtomic } from '../fsutil.js';
import { UsageError } from '../errors.js';
import { setupSandboxNetwork } from '../netns/sandbox-net.js';
import { Pump, type AuditSink, type PacketDevice, type UpstreamResolver } from '../dataplane/pump.js';
import { MapDirectory } from '../dataplane/dns.js';
import { parseIp, type Policy } from '../policy/index.js';
import { openHostEgress } from '../egress/host.js';
import type { SandboxNetwork } from './lifecycle.js';
import { SANDBOX_GATEWAY, SANDBOX_RESOLVER, systemResolver } from './network.js';
import { loadPolicyFile, reloadPolicyOnSighup } from './static-network.js';
import { ndjsonAuditSink } from '../audit/local.js';

/** No WireGuard peers: every allowed packet goes to host egress. */
const NO_PEERS: PacketDevice = { sendPacket: () => false, attach: () => undefined };

/** The sandbox's MTU: no tunnel overhead on this path. */
const HOST_EGRESS_MTU = 1500;

export interface HostEgressNetworkOptions {
  policy: Policy;
  /** The policy's file: `kill -HUP` the launcher to reload it live. */
  policyFile?: string;
  audit: AuditSink;
  log: Logger;
  clock?: Clock;
  /** Upstream DNS servers for domain rules ("ADDR" or "ADDR:PORT"); default: the host's resolv.conf. */
  dnsUpstream?: string[];
  resolveUpstream?: UpstreamResolver;
  /** Bound of the pump's flow table (`--max-flows`); unset keeps the default. */
  maxFlows?: number;
}

export interface HostEgressSandboxNetwork extends SandboxNetwork {
  pump: Pump;
}

/** "203.0.113.53", "203.0.113.53:5353", "[2001:db8::1]:53": what node's Resolver.setServers takes. */
export function checkDnsUpstream(addr: string): string {
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([0-9.]+))(?::(\d{1,5}))?$/.exec(addr) ?? /^([0-9a-fA-F:]+)$/.exec(addr);
  const host = m ? (m[1] ?? m[2]) : undefined;
  const port = m?.[3] === undefined ? 53 : Number(m[3]);
  if (!host || !parseIp(host) || port < 1 || port > 65535) {
    throw new UsageError(`--dns-upstream ${addr} is not a resolver address; use ADDR or ADDR:PORT, e.g. --dns-upstream 192.0.2.53 or [2001:db8::53]:53`);
  }
  return addr;
}

export function hostEgressNetwork(opts: HostEgressNetworkOptions): (id: string, dir: string) => Promise<HostEgressSandboxNetwork> {
  return async (id, dir) => {
    const clock = opts.clock ?? systemClock;
    const egress = await openHostEgress({ id, log: opts.log });
    let net;
    try {
      net = await setupSandboxNetwork({ id, overlayAddrs: [`${egress.address}/32`], gateway: SANDBOX_GATEWAY, mtu: HOST_EGRESS_MTU });
    } catch (err) {
      await egress.close();
      throw err;
    }
    const pump = new Pump({
      tun: net.tun,
      device: NO_PEERS,
      clock,
      addresses: [parseIp(egress.address)!],
      resolverAddresses: [parseIp(SANDBOX_RESOLVER)!],
      policy: opts.policy,
      policySource: { id: opts.policyFile ?? 'local', version: 1 },
      directory: new MapDirectory([]),
      resolveUpstream: opts.resolveUpstream ?? systemResolver(opts.dnsUpstream),
      ...(opts.maxFlows !== undefined && { flows: { maxFlows: opts.maxFlows } }),
      audit: opts.audit,
      sandboxId: id,
      hostEgress: { tun: egress.tun, vet: (flow, decision, policy, now) => egress.guard.vet(flow, decision, policy, now) },
    });
    pump.start();
    const ticker = setInterval(() => pump.tick(), 1000);
    ticker.unref();
    const stopReload = opts.policyFile ? reloadPolicyOnSighup(opts.policyFile, pump, opts.log, id) : () => undefined;

    const resolvConf = join(dir, 'resolv.conf');
    await writeFileAtomic(resolvConf, `nameserver ${SANDBOX_RESOLVER}\noptions ndots:1 timeout:2 attempts:2\n`, 0o644);
    opts.log.info({ id, netns: net.netnsName, address: egress.address, egressTun: egress.tun.name }, 'sandbox network up (host egress)');

    let closed = false;
    return {
      mode: 'sandbox',
      netnsName: net.netnsName,
      netnsPath: net.netnsPath,
      address: `${egress.address}/32`,
      mounts: [{ destination: '/etc/resolv.conf', type: 'bind', source: resolvConf, options: ['rbind', 'ro'] }],
      pump,
      close: async () => {
        if (closed) return;
        closed = true;
        stopReload();
        clearInterval(ticker);
        pump.tick(Number.MAX_SAFE_INTEGER); // close every flow: flow.closed lines for all of them
        await net.teardown();
        await egress.close();
      },
    };
  };
}

/** Check the flags and read the policy; nothing is created until `network(log)` is called by the run. */
export async function loadHostEgressNetwork(opts: { policy?: string; dnsUpstream: string[]; auditLog?: string; stateDir: string; maxFlows?: number }) {
  const policy = await loadPolicyFile(opts.policy);
  const dnsUpstream = opts.dnsUpstream.map(checkDnsUpstream);
  const auditFile = opts.auditLog ?? join(opts.stateDir, 'audit', 'audit.ndjson');
  return {
    policy,
    auditFile,
    network: (log: Logger) => hostEgressNetwork({ policy, policyFile: opts.policy, audit: ndjsonAuditSink(auditFile), log, dnsUpstream, maxFlows: opts.maxFlows }),
  };
}
