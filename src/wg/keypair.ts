/** A transport session (wireguard-go device/keypair.go): keys, counters, replay window, index. */
import { ReplayFilter } from './replay.js';

export class Keypair {
  sendNonce = 0;
  readonly replayFilter = new ReplayFilter();
  /** Transport nonce buffers, reused per packet: 4 zero bytes then the counter. */
  readonly sendNonceBuf = new Uint8Array(12);
  readonly recvNonceBuf = new Uint8Array(12);
  constructor(
    readonly send: Uint8Array,
    readonly receive: Uint8Array,
    readonly isInitiator: boolean,
    /** Monotonic ms when the session was derived. */
    readonly created: number,
    readonly localIndex: number,
    readonly remoteIndex: number,
  ) {}

  zero(): void {
    this.send.fill(0);
    this.receive.fill(0);
  }
}

/** previous / current / next: a responder's new session waits in `next` until the initiator uses it. */
export class Keypairs {
  previous?: Keypair;
  current?: Keypair;
  next?: Keypair;
}
