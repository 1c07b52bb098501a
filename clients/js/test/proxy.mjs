// A test proxy in front of `ferry serve`, standing in for the network between an app and
// the hub: it forwards HTTP (streaming, so SSE works) and WebSocket upgrades, and the
// tests can
//   cut()            drop every open connection and refuse new ones (the network is gone),
//   restore()        accept again,
//   blockUpgrades    answer WebSocket upgrades with 403 while plain HTTP still passes (a
//                    proxy that blocks upgrades: the SDK must fall back to SSE),
//   stall            keep connections open but stop forwarding bytes (a dead peer that
//                    never says so: only a heartbeat notices).
// It also serves test pages under /__test/ from an in-memory map, so a browser page has
// the same origin as the hub behind it (the Host header is forwarded unchanged).
import http from "node:http";
import net from "node:net";

export async function startProxy(target, pages = {}) {
  const upstream = new URL(target);
  const sockets = new Set();
  const state = { down: false, blockUpgrades: false, stall: false, refusedUpgrades: 0 };
  const track = (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
  };
  const server = http.createServer((req, res) => {
    const page = req.url.startsWith("/__test/") ? pages[req.url.slice("/__test/".length).split("?")[0]] : undefined;
    if (page) {
      res.writeHead(200, { "content-type": page.type, "cache-control": "no-store" });
      res.end(page.body);
      return;
    }
    const forward = http.request(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path: req.url,
        headers: req.headers,
        agent: false,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.on("data", (chunk) => {
          if (!state.stall) res.write(chunk);
        });
        answer.on("end", () => res.end());
      },
    );
    forward.on("socket", track);
    forward.on("error", () => res.destroy());
    res.on("close", () => forward.destroy());
    req.pipe(forward);
  });
  server.on("connection", (socket) => {
    if (state.down) {
      socket.destroy();
      return;
    }
    track(socket);
  });
  server.on("upgrade", (req, socket, head) => {
    if (state.blockUpgrades) {
      state.refusedUpgrades++;
      socket.end("HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
      return;
    }
    const hub = net.connect(Number(upstream.port), upstream.hostname, () => {
      let lines = `${req.method} ${req.url} HTTP/1.1\r\n`;
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines += `${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}\r\n`;
      hub.write(`${lines}\r\n`);
      if (head.length) hub.write(head);
      hub.on("data", (chunk) => state.stall || socket.write(chunk));
      socket.on("data", (chunk) => state.stall || hub.write(chunk));
    });
    track(hub);
    const both = () => {
      hub.destroy();
      socket.destroy();
    };
    hub.on("close", both);
    socket.on("close", both);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    state,
    /** Drop every connection and refuse new ones until restore(). */
    cut() {
      state.down = true;
      for (const socket of sockets) socket.destroy();
    },
    restore() {
      state.down = false;
    },
    openConnections: () => sockets.size,
    close() {
      state.down = true;
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
