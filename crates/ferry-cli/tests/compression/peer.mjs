// A permessage-deflate peer nobody here wrote: npm `ws` (clients/js's lockfile) with
// compression on, for crates/ferry-cli/tests/compression.rs.
//   node peer.mjs echo URL                      messages of many sizes, text and binary,
//                                               compressed, each echoed back unchanged
//   node peer.mjs subscribe URL CHANNEL COUNT   subscribe on /ws (ferry.json), print every
//                                               publication's data (one JSON line each),
//                                               then {"extensions","bytes_read"}
//   node peer.mjs publish URL CHANNEL SIZE      publish one compressible message of SIZE
//                                               bytes through /ws and wait for the reply
//   node peer.mjs bomb URL                      send a message that inflates past the limit,
//                                               print the close code
//   node peer.mjs server                        a compressing server: prints its port, then
//                                               sends messages of many sizes to a client
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, '../../../../clients/js/package.json'));
const WebSocket = require('ws');

const [mode, url, ...rest] = process.argv.slice(2);
const fail = (why) => { console.error(why); process.exit(1); };
setTimeout(() => fail('timed out'), 60_000).unref();

function text(n, seed) {
  let s = '';
  while (s.length < n) s += `ferry ${seed} compresses repeated words well. `;
  return s.slice(0, n);
}

if (mode === 'echo') {
  const ws = new WebSocket(url, { perMessageDeflate: { threshold: 0 } });
  const sizes = [0, 1, 125, 126, 5000, 65535, 65536, 300000];
  let i = 0;
  const next = () => {
    if (i === sizes.length * 2) { console.log(JSON.stringify({ echoed: i, extensions: ws.extensions })); ws.close(1000); return; }
    const binary = i >= sizes.length;
    const n = sizes[i % sizes.length];
    const data = binary ? Buffer.from(text(n, i)) : text(n, i);
    ws.once('message', (got, isBinary) => {
      const same = isBinary === binary && (binary ? Buffer.compare(got, data) === 0 : got.toString() === data);
      if (!same) fail(`message ${i} (${n} bytes, binary ${binary}) came back different`);
      i += 1;
      next();
    });
    ws.send(data, { binary });
  };
  ws.on('open', next);
  ws.on('error', (e) => fail(e.message));
} else if (mode === 'subscribe') {
  const [channel, count] = rest;
  const ws = new WebSocket(url, 'ferry.json', { perMessageDeflate: true });
  let seen = 0;
  ws.on('message', (raw) => {
    const frame = JSON.parse(raw.toString());
    if (frame.type === 'auth_success') {
      ws.send(JSON.stringify({ type: 'subscribe', id: '1', payload: { channel } }));
    } else if (frame.type === 'reply' && frame.id === '1') {
      console.log(JSON.stringify({ subscribed: true }));
    } else if (frame.type === 'message') {
      console.log(JSON.stringify({ data: frame.payload.data }));
      seen += 1;
      if (seen === Number(count)) {
        console.log(JSON.stringify({ extensions: ws.extensions, bytes_read: ws._socket.bytesRead }));
        ws.close(1000);
      }
    }
  });
  ws.on('error', (e) => fail(e.message));
} else if (mode === 'publish') {
  const [channel, size] = rest;
  const ws = new WebSocket(url, 'ferry.json', { perMessageDeflate: { threshold: 0 } });
  ws.on('message', (raw) => {
    const frame = JSON.parse(raw.toString());
    if (frame.type === 'auth_success') {
      ws.send(JSON.stringify({ type: 'publish', id: '1', payload: { channel, data: { text: text(Number(size), 'p') } } }));
    } else if (frame.type === 'reply' && frame.id === '1') {
      console.log(JSON.stringify({ published: frame.payload, extensions: ws.extensions, bytes_written: ws._socket.bytesWritten }));
      ws.close(1000);
    } else if (frame.type === 'error') {
      fail(JSON.stringify(frame));
    }
  });
  ws.on('error', (e) => fail(e.message));
} else if (mode === 'bomb') {
  // 4 MiB of one letter: a few KiB compressed, four times the echo's limit inflated.
  const ws = new WebSocket(url, { perMessageDeflate: { threshold: 0 } });
  ws.on('open', () => ws.send('a'.repeat(4 << 20)));
  ws.on('close', (code, reason) => console.log(JSON.stringify({ code, reason: reason.toString(), written: ws._socket?.bytesWritten })));
  ws.on('error', () => {});
} else if (mode === 'server') {
  // A server that compresses everything it sends: print the port, then send each size
  // as text and as binary, in order, to the first client.
  const wss = new WebSocket.WebSocketServer({ host: '127.0.0.1', port: 0, perMessageDeflate: { threshold: 0 } });
  wss.on('listening', () => console.log(wss.address().port));
  wss.on('connection', (ws) => {
    if (!ws.extensions.includes('permessage-deflate')) fail(`not negotiated: ${ws.extensions}`);
    [0, 10, 125, 126, 5000, 65536, 400000].forEach((n, i) => {
      ws.send(text(n, i), { binary: false });
      ws.send(Buffer.from(text(n, i)), { binary: true });
    });
  });
} else {
  fail(`unknown mode ${mode}`);
}
