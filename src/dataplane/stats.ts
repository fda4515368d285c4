/**
 * Counters of a parser of hostile input (packet.ts for IP packets, dns.ts for DNS queries): how many
 * inputs parsed, how many were dropped, and why. Parsers return `stats.drop(reason)` (null) instead of
 * throwing, so garbage from the network is counted, never thrown.
 */
export class ParseStats<Reason extends string> {
  /** Inputs that parsed. */
  parsed = 0;
  /** Inputs dropped, whatever the reason (the sum of `reasons`). */
  dropped = 0;
  readonly reasons = new Map<Reason, number>();

  /** Count one dropped input; returns null for the parser to return. */
  drop(reason: Reason): null {
    this.dropped++;
    this.reasons.set(reason, (this.reasons.get(reason) ?? 0) + 1);
    return null;
  }

  /** Inputs dropped for `reason` so far. */
  count(reason: Reason): number {
    return this.reasons.get(reason) ?? 0;
  }
}
