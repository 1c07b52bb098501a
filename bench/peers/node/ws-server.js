// Node `ws` peer for the ferry benchmarks, speaking the `plain` protocol:
//   /echo       every message is sent back to its sender;
//   any path    every message is sent to every *other* client.
// Binds 127.0.0.1 only. Usage: node ws-server.js [PORT]   (0 = any free port)
// Prints "node-ws listening on http://127.0.0.1:PORT" once bound.
'use strict';
const http = require('http');
const { WebSocketServer, WebSocket } = require('ws');

const server = http.createServer((req, res) => {
  res.writeHead(426, { 'content-type': 'text/plain' });
  res.end('WebSocket only\n');
});
// perMessageDeflate is off by default on the server; said here to make it obvious.
const wss = new WebSocketServer({ server, perMessageDeflate: false, maxPayload: 1 << 20 });
const clients = new Set();

wss.on('connection', (ws, req) => {
  if (req.url === '/echo') {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    return;
  }
  clients.add(ws);
  ws.on('message', (data, isBinary) => {
    for (const c of clients) {
      if (c !== ws && c.readyState === WebSocket.OPEN) c.send(data, { binary: isBinary });
    }
  });
  ws.on('close', () => clients.delete(ws));
  ws.on('error', () => clients.delete(ws));
});

server.listen(Number(process.argv[2] || 0), '127.0.0.1', 4096, () => {
  console.log(`node-ws listening on http://127.0.0.1:${server.address().port}`);
});
process.on('SIGTERM', () => process.exit(0));
