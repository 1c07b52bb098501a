/**
 * @ferry/client: the browser and Node SDK of the ferry hub. See README.md.
 *
 * ```js
 * import { FerryClient } from "@ferry/client"; // or "/sdk/ferry.js" from the hub
 * const client = new FerryClient({ url: "http://127.0.0.1:8080", getToken });
 * const lobby = client.subscribe("chat:lobby");
 * lobby.on("publication", (p) => console.log(p.offset, p.data));
 * await client.connect();
 * await client.publish("chat:lobby", { text: "hi" });
 * ```
 */
export { FerryClient, hubUrl, PROTOCOL } from "./client.js";
export { sharedClient } from "./tabs.js";
export type { ClientEvents, ClientOptions, WebSocketConstructor, WebSocketLike } from "./client.js";
export { Subscription } from "./subscription.js";
export type { SubscriptionEvents } from "./subscription.js";
export { FerryError } from "./errors.js";
export { backoffDelay, DEFAULT_BACKOFF } from "./backoff.js";
export type { BackoffOptions } from "./backoff.js";
export type * from "./types.js";

/** The SDK version (also in the bundle's banner and the hub's `/sdk/ferry@VERSION.js`). */
export const VERSION = "0.1.0";
