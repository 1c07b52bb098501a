// The same chat with the React hooks (bundle it with your app's bundler):
//   import { FerryClient } from "@ferry/client";
//   import { useChannel, usePresence, useConnectionState } from "@ferry/client/react";
import { useState } from "react";
import { FerryClient } from "@ferry/client";
import { useChannel, useConnectionState, usePresence } from "@ferry/client/react";

const client = new FerryClient({
  url: "http://127.0.0.1:8080",
  getToken: () => fetch("/my-app/ferry-token").then((r) => r.text()),
});
client.connect();

export function Chat() {
  const state = useConnectionState(client);
  const { publications, error } = useChannel(client, "chat:lobby", { limit: 50 });
  const { count } = usePresence(client, "chat:lobby");
  const [text, setText] = useState("");
  const send = (e) => {
    e.preventDefault();
    client.publish("chat:lobby", { text });
    setText("");
  };
  return (
    <section>
      <header>
        {state.status} · {count} here {error && `· ${error.message}`}
      </header>
      <ul>
        {publications.map((p) => (
          <li key={p.offset}>
            {p.info?.user}: {p.data.text}
          </li>
        ))}
      </ul>
      <form onSubmit={send}>
        <input value={text} onChange={(e) => setText(e.target.value)} />
      </form>
    </section>
  );
}
