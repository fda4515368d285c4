import { describe, expect, it } from 'vitest';
import { UdpBind } from '../../src/conn/udp.js';
import { Device } from '../../src/wg/device.js';
import { systemClock } from '../../src/clock.js';
import { crypto, ipPacket } from '../wg/helpers.js';

// Loopback only: two devices over real UDP sockets on 127.0.0.1 and ::1.
describe('UdpBind (loopback)', () => {
  for (const host of ['127.0.0.1', '::1']) {
    it(`carries a handshake and data over ${host}`, async () => {
      const ba = await UdpBind.open();
      const bb = await UdpBind.open();
      try {
        if (host === '::1' && !(ba.hasIPv6 && bb.hasIPv6)) return; // host without IPv6
        const ka = crypto.generatePrivateKey();
        const kb = crypto.generatePrivateKey();
        const a = new Device({ privateKey: ka, bind: ba, clock: systemClock });
        const b = new Device({ privateKey: kb, bind: bb, clock: systemClock });
        a.addPeer({ publicKey: crypto.publicKey(kb), allowedIPs: ['10.0.0.2/32'], endpoint: { address: host, port: bb.port } });
        b.addPeer({ publicKey: crypto.publicKey(ka), allowedIPs: ['10.0.0.1/32'] });
        const got = new Promise<Uint8Array>((resolve) => {
          b.attach((p) => resolve(Uint8Array.from(p)));
        });
        a.up();
        b.up();
        const pkt = ipPacket('10.0.0.1', '10.0.0.2', new Uint8Array(500).fill(3));
        a.sendPacket(pkt);
        expect(Buffer.from(await got).equals(Buffer.from(pkt))).toBe(true);
        expect(b.peerStatus()[0].endpoint).toBe(host === '::1' ? `[::1]:${ba.port}` : `127.0.0.1:${ba.port}`);
        const back = new Promise<void>((resolve) => {
          a.attach(() => resolve());
        });
        b.sendPacket(ipPacket('10.0.0.2', '10.0.0.1'));
        await back;
        await a.close();
        await b.close();
      } finally {
        await ba.close();
        await bb.close();
      }
    });
  }
});
