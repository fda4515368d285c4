import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { UsageError } from '../errors.js';
import { parseConfig, ConfigError } from '../wg/config.js';
import { policyProblemsMessage } from './inputs.js';
import { parsePolicy, denyAllPolicy, parseIp, PolicyError, type IpAddr, type Policy } from '../policy/index.js';
import { ndjsonAuditSink } from '../audit/local.js';
import { wgSandboxNetwork } from './network.js';

/**
 * Static mode (no control plane): identity, address and peers from a wg-quick style file, the
 * policy from a JSON file, overlay names from --dns-name. Every input is checked before anything
 * is created, so bad input changes nothing.
 */
/**
 * Live update without a control plane: edit the policy file, then `kill -HUP <lattice pid>`. A file
 * that does not parse is refused and the previous policy stays. Returns the function that stops listening.
 */
export function reloadPolicyOnSighup(policyFile: string, pump: { setPolicy(p: Policy): { cut: number } }, log: Logger, id: string): () => void {
  const reload = () => {
    readFile(policyFile, 'utf8')
      .then((text) => {
        const { cut } = pump.setPolicy(parsePolicy(text));
        log.warn({ id, policy: policyFile, cut }, 'policy reloaded');
      })
      .catch((err: unknown) => log.error({ id, policy: policyFile, err: (err as Error).message }, 'policy reload refused; the previous policy stays'));
  };
  process.on('SIGHUP', reload);
  return () => process.off('SIGHUP', reload);
}

/** Read and validate a policy file; bad input is a UsageError naming the file. No file: deny everything. */
export async function loadPolicyFile(file: string | undefined): Promise<Policy> {
  if (!file) return denyAllPolicy().policy;
  const text = await readFile(file, 'utf8').catch(() => {
    throw new UsageError(`--policy ${file} cannot be read; give a JSON policy file (see README)`);
  });
  try {
    return parsePolicy(text);
  } catch (err) {
    if (err instanceof PolicyError) throw new UsageError(policyProblemsMessage(`--policy ${file}`, err.problems));
    throw err;
  }
}

export async function loadStaticNetwork(opts: { wgConfig: string; policy?: string; dnsNames: string[]; auditLog?: string; stateDir: string; hostEgress?: boolean; maxFlows?: number }) {
  const wgText = await readFile(opts.wgConfig, 'utf8').catch(() => {
    throw new UsageError(`--wg-config ${opts.wgConfig} cannot be read; give a wg-quick style file ([Interface] + [Peer])`);
  });
  let wg;
  try {
    wg = parseConfig(wgText);
  } catch (err) {
    if (err instanceof ConfigError) throw new UsageError(`--wg-config ${opts.wgConfig}: ${err.message}`);
    throw err;
  }
  const policy = await loadPolicyFile(opts.policy);
  const names = opts.dnsNames.map((entry): readonly [string, IpAddr[]] => {
    const [name, addr] = entry.split('=');
    const parsed = addr ? parseIp(addr) : undefined;
    if (!name || !parsed) throw new UsageError(`--dns-name "${entry}" is not NAME=ADDRESS; write it like --dns-name web.team.lattice=10.77.0.10`);
    // The sandbox's resolver answers overlay names (*.lattice) itself; any other name goes to the policy's domain rules.
    if (!/^([a-z0-9-]+\.)+lattice$/i.test(name)) throw new UsageError(`--dns-name ${name}: overlay names end in .lattice (e.g. ${name.replace(/\.+$/, '')}.lattice); other names are resolved upstream under the policy's domain rules`);
    return [name, [parsed]];
  });
  const peers = wg.peers.map((p) => {
    if (p.endpointHost) throw new UsageError(`--wg-config ${opts.wgConfig}: Endpoint ${p.endpointHost} is a host name; use an IP address in static mode`);
    return p;
  });
  const auditFile = opts.auditLog ?? join(opts.stateDir, 'audit', 'audit.ndjson');
  const policyFile = opts.policy;
  return {
    policy,
    auditFile,
    network: (log: Logger) => {
      const audit = ndjsonAuditSink(auditFile);
      const build = wgSandboxNetwork({ iface: wg.interface, peers, policy, names, audit, log, hostEgress: opts.hostEgress, maxFlows: opts.maxFlows });
      return async (id: string, dir: string) => {
        const net = await build(id, dir);
        if (!policyFile) return net;
        const stop = reloadPolicyOnSighup(policyFile, net.pump, log, id);
        return { ...net, close: async () => { stop(); await net.close(); } };
      };
    },
  };
}
