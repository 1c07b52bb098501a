// The React test app (bundled by esbuild when the browser test starts): two components
// share one channel through useChannel/usePresence; a button unmounts them.
import { useState } from "react";
import { createRoot } from "react-dom/client";
import { FerryClient } from "../../src/index.ts";
import { useChannel, useConnectionState, usePresence } from "../../src/react.ts";

const params = new URLSearchParams(location.search);
const client = new FerryClient({ token: params.get("token") });
const channel = params.get("channel");
client.connect();

function Messages() {
  const { publications, subscribed, error } = useChannel(client, channel);
  return (
    <div>
      <p id="subscribed">{String(subscribed)}</p>
      <p id="error">{error ? error.code : ""}</p>
      <ul id="messages">
        {publications.map((p) => (
          <li key={p.offset}>{`${p.offset}:${p.data.text}`}</li>
        ))}
      </ul>
    </div>
  );
}

function Presence() {
  const { count } = usePresence(client, channel);
  return <p id="count">{count}</p>;
}

function App() {
  const state = useConnectionState(client);
  const [shown, setShown] = useState(true);
  return (
    <main>
      <p id="state">{state.status}</p>
      <button id="toggle" onClick={() => setShown(!shown)}>toggle</button>
      {shown && <Messages />}
      {shown && <Presence />}
    </main>
  );
}

createRoot(document.getElementById("root")).render(<App />);
