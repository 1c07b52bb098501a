// npm @tus/server with @tus/file-store: a tus 1.0 server nobody here wrote, for ferry's
// client to upload to (tests) and for the side-by-side benchmark (bench/tus).
// Usage: node tus-server.mjs DIR   → prints {"port": N} once listening on 127.0.0.1.
import { Server } from '@tus/server';
import { FileStore } from '@tus/file-store';

const directory = process.argv[2];
const server = new Server({ path: '/files', datastore: new FileStore({ directory }) });
const http = server.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ port: http.address().port }));
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
