/** A minimal typed event emitter (no dependency on Node's `events` or the DOM). */
export class Emitter<Events extends object> {
  private handlers: { [K in keyof Events]?: Array<(value: Events[K]) => void> } = {};

  /** Call `handler` for every `event`; returns a function that removes it. */
  on<K extends keyof Events>(event: K, handler: (value: Events[K]) => void): () => void {
    (this.handlers[event] ??= []).push(handler);
    return () => this.off(event, handler);
  }

  /** Remove a handler added with `on`. */
  off<K extends keyof Events>(event: K, handler: (value: Events[K]) => void): void {
    const list = this.handlers[event];
    if (list) this.handlers[event] = list.filter((h) => h !== handler);
  }

  /** @internal */
  protected emit<K extends keyof Events>(event: K, value: Events[K]): void {
    for (const handler of this.handlers[event] ?? []) {
      try {
        handler(value);
      } catch (error) {
        // One throwing listener must not stop delivery to the others or break the client.
        setTimeout(() => {
          throw error;
        });
      }
    }
  }
}
