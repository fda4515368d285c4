import dgram from 'node:dgram';

/**
 * A bad network for UDP, in userspace: a relay between two UDP endpoints that drops, delays, reorders and
 * duplicates datagrams, each decision drawn from the caller's seeded `random`. It stands in for
 * `tc qdisc ... netem` where the kernel has no sch_netem (CONFIG_NET_SCH_NETEM unset, as on this project's
 * test machines), with the same knobs and meanings as netem's:
 *
 *   left endpoint  <-->  [socket L]  relay  [socket R]  <-->  right endpoint
 *
 *   per datagram, each direction:  loss%      dropped;
 *                                  reorder%   sent at once (overtaking the delayed ones), else after
 *                                             delayMs + a uniform [0, jitterMs) jitter;
 *                                  duplicate% sent twice.
 * What arrives on L from anyone goes to `right`; what arrives on R goes to `left`. Both sockets bind `host`
 * on a free port; point the two endpoints at `leftPort` and `rightPort`.
 */
export interface UdpImpairment {
  /** Loss, reorder and duplicate in percent (0-100); delays in milliseconds. */
  lossPct: number;
  reorderPct: number;
  delayMs: number;
  jitterMs: number;
  duplicatePct: number;
}

export interface ImpairStats {
  received: number;
  dropped: number;
  reordered: number;
  duplicated: number;
  /** Datagrams the relay failed to send (a send error), counted rather than thrown. */
  sendErrors: number;
}

export interface StartedRelay {
  readonly leftPort: number;
  readonly rightPort: number;
  readonly stats: Readonly<ImpairStats>;
  /** Close both sockets; datagrams still delayed are dropped. */
  close(): Promise<void>;
}

/** netem's argument words for `i` (for messages), e.g. "delay 2ms 1ms reorder 25% loss 1% duplicate 0.5%". */
export function describeImpairment(i: UdpImpairment): string {
  return `delay ${i.delayMs}ms ${i.jitterMs}ms reorder ${i.reorderPct}% loss ${i.lossPct}% duplicate ${i.duplicatePct}%`;
}

export async function startUdpRelay(o: {
  host: string;
  left: { address: string; port: number };
  right: { address: string; port: number };
  impair: UdpImpairment;
  /** A float in [0, 1): the test's seeded generator (test/support/random.ts). */
  random: () => number;
}): Promise<StartedRelay> {
  const stats: ImpairStats = { received: 0, dropped: 0, reordered: 0, duplicated: 0, sendErrors: 0 };
  const timers = new Set<NodeJS.Timeout>();
  let closed = false;
  const open = async (): Promise<dgram.Socket> => {
    const s = dgram.createSocket({ type: 'udp4', recvBufferSize: 8 << 20, sendBufferSize: 8 << 20 });
    await new Promise<void>((res, rej) => {
      s.once('error', rej);
      s.bind(0, o.host, () => {
        s.off('error', rej);
        res();
      });
    });
    s.on('error', () => stats.sendErrors++);
    return s;
  };
  const l = await open();
  const r = await open();
  const pct = (p: number) => o.random() * 100 < p;
  const forward = (via: dgram.Socket, to: { address: string; port: number }) => (msg: Buffer) => {
    stats.received++;
    if (pct(o.impair.lossPct)) {
      stats.dropped++;
      return;
    }
    const copies = pct(o.impair.duplicatePct) ? 2 : 1;
    if (copies === 2) stats.duplicated++;
    const send = () => {
      if (closed) return;
      for (let i = 0; i < copies; i++) via.send(msg, to.port, to.address, (err) => err && stats.sendErrors++);
    };
    if (pct(o.impair.reorderPct)) {
      stats.reordered++;
      send();
      return;
    }
    const t = setTimeout(() => {
      timers.delete(t);
      send();
    }, o.impair.delayMs + o.random() * o.impair.jitterMs);
    timers.add(t);
  };
  l.on('message', forward(r, o.right));
  r.on('message', forward(l, o.left));
  return {
    leftPort: l.address().port,
    rightPort: r.address().port,
    stats,
    close: async () => {
      closed = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      await Promise.all([l, r].map((s) => new Promise<void>((res) => s.close(() => res()))));
    },
  };
}
