// Socket.IO peer for the ferry benchmarks (WebSocket transport only, no compression):
//   event "msg"   is broadcast to every *other* socket (socket.broadcast.emit);
//   event "echo"  is emitted back to its sender.
// Binds 127.0.0.1 only. Usage: node socketio-server.js [PORT]   (0 = any free port)
// Prints "socketio listening on http://127.0.0.1:PORT" once bound.
'use strict';
const http = require('http');
const { Server } = require('socket.io');

const server = http.createServer();
const io = new Server(server, {
  transports: ['websocket'],
  perMessageDeflate: false,
  httpCompression: false,
  serveClient: false,
  maxHttpBufferSize: 1 << 20,
});

io.on('connection', (socket) => {
  socket.on('msg', (data) => socket.broadcast.emit('msg', data));
  socket.on('echo', (data) => socket.emit('echo', data));
});

server.listen(Number(process.argv[2] || 0), '127.0.0.1', 4096, () => {
  console.log(`socketio listening on http://127.0.0.1:${server.address().port}`);
});
process.on('SIGTERM', () => process.exit(0));
