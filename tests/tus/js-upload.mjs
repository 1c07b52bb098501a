// tus-js-client (npm, Node build) uploads FILE to a tus ENDPOINT, resuming an earlier
// upload of the same file recorded in STORE (tus-js-client's own FileUrlStorage).
// With ABORT_AFTER, the process exits as soon as that many bytes were confirmed by the
// server (an interruption); a second run then resumes.
// Usage: node js-upload.mjs ENDPOINT FILE STORE [ABORT_AFTER]
// Env: FERRY_TOKEN (bearer token) or FERRY_AUTH (whole Authorization value), TUS_CHUNK_SIZE.
// Prints one JSON line: {"aborted": bytes, "url"} or {"done": true, "url", "resumedFrom"}.
import fs from 'node:fs';
import path from 'node:path';
import * as tus from 'tus-js-client';

const [endpoint, file, store, abortAfter] = process.argv.slice(2);
const headers = {};
if (process.env.FERRY_TOKEN) headers.Authorization = `Bearer ${process.env.FERRY_TOKEN}`;
if (process.env.FERRY_AUTH) headers.Authorization = process.env.FERRY_AUTH; // e.g. `apikey KEY`
let resumedFrom = 0;
const upload = new tus.Upload(fs.createReadStream(file), {
  endpoint,
  chunkSize: Number(process.env.TUS_CHUNK_SIZE || 256 * 1024),
  headers,
  metadata: { filename: path.basename(file), filetype: 'application/octet-stream' },
  urlStorage: new tus.FileUrlStorage(store),
  removeFingerprintOnSuccess: true,
  retryDelays: [0, 100, 500],
  onChunkComplete(_chunk, accepted) {
    if (abortAfter && accepted >= Number(abortAfter)) {
      console.log(JSON.stringify({ aborted: accepted, url: upload.url }));
      process.exit(0); // like a killed client: no DELETE, no goodbye
    }
  },
  onSuccess() {
    console.log(JSON.stringify({ done: true, url: upload.url, resumedFrom }));
  },
  onError(error) {
    console.error(`tus-js-client failed: ${error}`);
    process.exit(1);
  },
});
const previous = await upload.findPreviousUploads();
if (previous.length > 0) {
  upload.resumeFromPreviousUpload(previous[0]);
  const head = await fetch(previous[0].uploadUrl, { method: 'HEAD', headers: { ...headers, 'Tus-Resumable': '1.0.0' } });
  resumedFrom = Number(head.headers.get('upload-offset') ?? 0);
}
upload.start();
