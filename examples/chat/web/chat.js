// examples/chat: the whole client. Each room or conversation is a channel: its history is
// read when it is opened, live messages arrive through a subscription that the SDK keeps
// across reconnects (recovering what was missed), presence lists who is in the room, and
// typing indicators are publications on a namespace without history.
import { FerryClient } from "/sdk/ferry.js";

const $ = (id) => document.getElementById(id);
const token = new URLSearchParams(location.search).get("token");
const me = token ? JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/"))).sub : "";
$("me").textContent = me ? `you are ${me}` : "add ?token=JWT to the address";

const client = new FerryClient({ getToken: async () => token });
client.on("state", (s) => ($("state").textContent = s.status));

let current = null; // { channel, typing, sub, typingSub }
const seen = new Set(); // offsets shown in the current channel (history and live meet)

function line(text, cls) {
  const li = document.createElement("li");
  li.textContent = text;
  if (cls) li.className = cls;
  $("log").append(li);
  li.scrollIntoView();
}

function show(p) {
  if (seen.has(p.offset)) return;
  seen.add(p.offset);
  const who = p.info?.user ?? "server";
  line(`${who}: ${p.data.text}`, who === me ? "me" : "");
}

const dmChannel = (other) => `dm:pair#${[me, other].sort().join(",")}`;

async function refreshPeople() {
  if (!current || !current.channel.startsWith("room:")) return;
  const presence = await client.presence(current.channel);
  const users = [...new Set(Object.values(presence.clients).map((c) => c.user))].sort();
  $("people").replaceChildren(...users.map((u) => {
    const li = document.createElement("li");
    if (u === me) {
      li.textContent = `${u} (you)`;
    } else {
      const b = document.createElement("button");
      b.textContent = u;
      b.title = "private conversation";
      b.onclick = () => open(dmChannel(u), `@${u}`);
      li.append(b);
    }
    return li;
  }));
}

async function open(channel, title) {
  if (current?.channel === channel) return;
  if (current) {
    await current.sub.unsubscribe().catch(() => {});
    await current.typingSub?.unsubscribe().catch(() => {});
  }
  document.querySelectorAll("button.channel").forEach((b) => b.classList.toggle("active", b.dataset.channel === channel));
  $("title").textContent = title;
  $("log").replaceChildren();
  $("people").replaceChildren();
  $("typing").textContent = "";
  seen.clear();
  const typing = channel.startsWith("room:") ? `typing:${channel.slice(5)}` : null;
  current = { channel, typing };
  // The last 50 messages, then live ones from exactly where that page ends: the server
  // sends whatever was published in between, once and in order.
  const page = await client.history(channel, { limit: 50, reverse: true });
  page.publications.reverse().forEach(show);
  const sub = client.subscribe(channel, { since: { offset: page.offset, epoch: page.epoch } });
  current.sub = sub;
  sub.on("publication", show);
  sub.on("recovered", (r) => r.recovered || line("(some messages were lost while you were away)", "system"));
  sub.on("join", (info) => { line(`${info.user} joined`, "system"); refreshPeople(); });
  sub.on("leave", (info) => { line(`${info.user} left`, "system"); refreshPeople(); });
  if (typing) {
    const typingSub = client.subscribe(typing);
    current.typingSub = typingSub;
    let clear;
    typingSub.on("publication", (p) => {
      const who = p.info?.user;
      if (!who || who === me) return;
      $("typing").textContent = `${who} is typing…`;
      clearTimeout(clear);
      clear = setTimeout(() => ($("typing").textContent = ""), 3000);
    });
  }
  refreshPeople();
}

document.querySelectorAll("button.channel").forEach((b) => (b.onclick = () => open(b.dataset.channel, b.textContent)));

let lastTyping = 0;
$("say").text.oninput = () => {
  if (!current?.typing || Date.now() - lastTyping < 1000) return;
  lastTyping = Date.now();
  client.publish(current.typing, { typing: true }).catch(() => {});
};

$("say").onsubmit = async (e) => {
  e.preventDefault();
  const input = $("say").text;
  const text = input.value.trim();
  if (!text || !current) return;
  input.value = "";
  try {
    await client.publish(current.channel, { text });
  } catch (error) {
    line(`not sent: ${error.message}`, "system");
  }
};

client.connect();
open("room:general", "#general");
window.chat = { open, client }; // for the browser test
