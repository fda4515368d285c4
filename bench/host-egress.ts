/**
 * Host egress throughput: `npx tsx bench/host-egress.ts` (root; build first: npm run build).
 *
 * TCP throughput (iperf3, sandbox -> an "upstream" network namespace) from inside a gVisor sandbox, two
 * ways, in one run:
 *   egress  `lattice sandbox run --policy` (no WireGuard): runsc -> TUN -> pump (policy, flows) -> egress
 *           TUN -> host kernel forwarding + nftables masquerade -> veth -> upstream netns
 *   veth    runsc on a plain veth straight into the same upstream netns: gVisor's netstack without the
 *           pump or host forwarding (the ceiling)
 * Both talk to the same iperf3 server. Prints each figure and the ratio egress / veth. ROUNDS (1) and SECS (5).
 * Everything lives in namespaces/links with a random suffix; all are removed in finally.
 */
import { execa, type ResultPromise } from 'execa';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildSpec } from '../src/oci/spec.js';
import { writeBundle } from '../src/oci/bundle.js';
import { Runsc } from '../src/runsc/client.js';
import { REPO, CLI } from '../e2e/support/env.js';
import { startInternet, WEB, type Internet } from '../e2e/egress/internet.js';
import { addIperf3, iperfArgs as iperfClientArgs, parseIperf, type Iperf } from './support/iperf.js';

const ROUNDS = Number(process.env.ROUNDS ?? 1);
const SECS = Number(process.env.SECS ?? 5);

if (process.getuid?.() !== 0) {
  console.log('host-egress bench: needs root (netns, runsc, nftables); skipped');
  process.exit(0);
}

const iperfArgs = (server: string) => iperfClientArgs(server, SECS);


const sfx = randomBytes(3).toString('hex');
const VS = `ltbe-vs-${sfx}`;
const VETH_S = '10.131.0.1';
const VETH_P = '10.131.0.2';
const work = await mkdtemp(join(tmpdir(), 'lt-bench-egress-'));
const runsc = new Runsc({ root: join(work, 'runsc'), network: 'sandbox' });
let inet: Internet | undefined;
let server: ResultPromise | undefined;

try {
  const rootfs = join(work, 'rootfs');
  await execa('sh', [join(REPO, 'bundles/demo/build-rootfs.sh'), rootfs]);
  await addIperf3(rootfs);
  inet = await startInternet();
  server = execa('ip', ['netns', 'exec', inet.ns, 'iperf3', '-s'], { reject: false, stdout: 'ignore', stderr: 'ignore' });

  // The ceiling: a sandbox netns whose veth goes straight into the upstream namespace.
  const sh = (cmd: string) => execa('sh', ['-c', cmd]);
  await sh(
    [
      `ip netns add ${VS}`,
      `ip -n ${VS} link add vs${sfx} type veth peer name vp${sfx} netns ${inet.ns}`,
      `ip -n ${VS} link set lo up`,
      `ip -n ${inet.ns} addr add ${VETH_P}/30 dev vp${sfx}`,
      `ip -n ${inet.ns} link set vp${sfx} up`,
    ].join(' && '),
  );
  for (let i = 0; i < 50 && (await execa('ip', ['netns', 'exec', inet.ns, 'sh', '-c', 'ss -ltn | grep -q :5201'], { reject: false })).exitCode !== 0; i++) {
    await new Promise((r) => setTimeout(r, 100)); // iperf3 -s listening
  }

  const policyFile = join(work, 'policy.json');
  await writeFile(policyFile, JSON.stringify({ version: 1, egress: [{ id: 'iperf', action: 'allow', cidrs: [`${WEB}/32`], ports: [5201], protocol: 'tcp' }] }));
  const state = join(work, 'state');

  async function egressRun(): Promise<Iperf> {
    const r = await execa(process.execPath, [CLI, '--state-dir', state, 'sandbox', 'run', '--rootfs', rootfs, '--policy', policyFile,
      '--audit-log', join(work, 'audit.ndjson'), '--', ...iperfArgs(WEB)], { reject: false, timeout: (SECS + 60) * 1000 });
    return parseIperf(String(r.stdout), `egress (exit ${r.exitCode}, ${String(r.stderr).slice(-300)})`);
  }

  let seq = 0;
  async function vethRun(): Promise<Iperf> {
    const id = `ltbe-veth-${sfx}-${seq++}`;
    const bundle = join(work, 'bundles', id);
    // runsc moves the veth's address into its netstack and removes it from the link: give it back per run.
    await execa('ip', ['-n', VS, 'addr', 'replace', `${VETH_S}/30`, 'dev', `vs${sfx}`]);
    await execa('ip', ['-n', VS, 'link', 'set', `vs${sfx}`, 'up']);
    await writeBundle(bundle, buildSpec({ args: iperfArgs(VETH_P), rootfs, netnsPath: `/var/run/netns/${VS}` }));
    try {
      const { child } = await runsc.run(id, bundle, { stdin: 'ignore', stdout: 'pipe', stderr: 'pipe' });
      const r = await child;
      return parseIperf(String(r.stdout), `veth (exit ${r.exitCode}, ${String(r.stderr).slice(-300)})`);
    } finally {
      await runsc.delete(id, { force: true }).catch(() => undefined);
    }
  }

  const egress: Iperf[] = [];
  const veth: Iperf[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    egress.push(await egressRun());
    veth.push(await vethRun());
    console.log(`round ${i + 1}: egress ${egress.at(-1)!.mbps.toFixed(0)} Mbit/s (retr ${egress.at(-1)!.retransmits})  veth ${veth.at(-1)!.mbps.toFixed(0)} Mbit/s (retr ${veth.at(-1)!.retransmits})`);
  }
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const mE = med(egress.map((x) => x.mbps));
  const mV = med(veth.map((x) => x.mbps));
  console.log('');
  console.log(`TCP throughput, sandbox -> upstream netns, median of ${ROUNDS} x ${SECS} s (iperf3 receiver side):`);
  console.log(`  egress  (runsc -> TUN -> pump -> egress TUN -> host forward + masquerade)  ${mE.toFixed(0).padStart(6)} Mbit/s`);
  console.log(`  veth    (runsc on a plain veth into the same netns: ceiling)              ${mV.toFixed(0).padStart(6)} Mbit/s`);
  console.log(`  ratio egress / veth  ${(mE / mV).toFixed(3)}`);
} finally {
  server?.kill('SIGKILL');
  await server?.catch(() => undefined);
  await execa('ip', ['netns', 'del', VS], { reject: false });
  await inet?.stop();
  await rm(work, { recursive: true, force: true });
}
