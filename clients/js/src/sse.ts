/**
 * Server-Sent Events over `fetch` (the fallback transport): one stream per set of
 * channels, `Last-Event-ID` chosen by the client (so recovery positions survive a switch
 * from WebSocket), a watchdog on the hub's keep-alive comments, and a WHATWG event-stream
 * parser. Works wherever `fetch` streams response bodies: browsers and Node 18+.
 */

/** One dispatched event. */
export interface SseEvent {
  event: string;
  data: string;
  id: string;
}

/** Callbacks of one stream. */
export interface SseHandlers {
  /** The response was 200 with `text/event-stream`. */
  open(): void;
  event(event: SseEvent): void;
  /** The stream ended or failed; `status` is the HTTP status when there was a response. */
  closed(reason: string, status?: number, body?: string): void;
}

/**
 * Open `url` with `lastEventId`, feed events to `handlers`, and return a function that
 * aborts the stream (after which no callback is made). `idleMs`: a stream from which
 * nothing (not even a keep-alive comment) arrives for this long is treated as dead.
 */
export function openSse(
  fetchFn: typeof fetch,
  url: string,
  lastEventId: string,
  idleMs: number,
  handlers: SseHandlers,
): () => void {
  const controller = new AbortController();
  let done = false;
  let idle: ReturnType<typeof setTimeout> | undefined;
  const finish = (reason: string, status?: number, body?: string) => {
    if (done) return;
    done = true;
    clearTimeout(idle);
    controller.abort();
    handlers.closed(reason, status, body);
  };
  const touch = () => {
    clearTimeout(idle);
    idle = setTimeout(() => finish(`nothing received for ${idleMs} ms`), idleMs);
  };
  const headers: Record<string, string> = { accept: "text/event-stream" };
  if (lastEventId) headers["last-event-id"] = lastEventId;
  touch();
  (async () => {
    const response = await fetchFn(url, { headers, signal: controller.signal, cache: "no-store" });
    if (response.status !== 200 || !response.body) {
      finish(`HTTP ${response.status}`, response.status, await response.text().catch(() => ""));
      return;
    }
    if (done) return;
    handlers.open();
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const parser = new SseParser((event) => {
      if (!done) handlers.event(event);
    });
    for (;;) {
      const { value, done: ended } = await reader.read();
      if (done) return;
      if (ended) break;
      touch();
      parser.push(decoder.decode(value, { stream: true }));
    }
    finish("the stream ended");
  })().catch((error: unknown) => finish(String((error as Error)?.message ?? error)));
  return () => {
    done = true;
    clearTimeout(idle);
    controller.abort();
  };
}

/** The WHATWG event-stream parser (`text/event-stream`, §9.2.6), fed text chunks. */
export class SseParser {
  private buffer = "";
  private data: string[] = [];
  private event = "";
  private lastId = "";
  private sawCr = false;

  constructor(private readonly dispatch: (event: SseEvent) => void) {}

  push(chunk: string): void {
    let text = chunk;
    // A CR at the end of the previous chunk already ended a line: skip its LF.
    if (this.sawCr && text.startsWith("\n")) text = text.slice(1);
    this.sawCr = text.endsWith("\r");
    this.buffer += text;
    const lines = this.buffer.split(/\r\n|\r|\n/);
    this.buffer = lines.pop() ?? "";
    // A trailing CR split off an empty last piece; that line is complete.
    for (const line of lines) this.line(line);
  }

  private line(line: string): void {
    if (line === "") {
      if (this.data.length) {
        this.dispatch({ event: this.event || "message", data: this.data.join("\n"), id: this.lastId });
      }
      this.data = [];
      this.event = "";
      return;
    }
    if (line.startsWith(":")) return;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.lastId = value;
  }
}
