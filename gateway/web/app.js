// The chat of the Phoenix channels guide, on the unmodified phoenix.js client.
(function () {
  "use strict";
  const { Socket, Presence } = window.Phoenix;
  const messages = document.getElementById("messages");
  const input = document.getElementById("chat-input");
  const statusEl = document.getElementById("status");
  const login = document.getElementById("login");
  const userName = document.getElementById("user-name");
  const roomInput = document.getElementById("room-input");
  const roomName = document.getElementById("room-name");
  const onlineList = document.getElementById("online-list");
  const onlineCount = document.getElementById("online-count");

  let socket = null;
  let channel = null;
  const placeholder = input.placeholder;

  // The input sends to the room's channel; it is off while there is none.
  function setInput(enabled, hint) {
    input.disabled = !enabled;
    input.placeholder = enabled ? placeholder : hint;
  }

  function setStatus(text, cls) {
    statusEl.textContent = text;
    statusEl.className = "status " + (cls || "");
  }

  // append adds a line: the time, who said it (if known), and the text.
  // Lines of the room's history say "earlier": their time is not known.
  function append(text, cls, from, earlier) {
    const p = document.createElement("p");
    p.className = [cls, earlier && "history"].filter(Boolean).join(" ");
    const time = document.createElement("time");
    if (earlier) {
      time.textContent = "earlier";
    } else {
      const now = new Date();
      time.dateTime = now.toISOString();
      time.textContent = now.toLocaleTimeString();
    }
    p.appendChild(time);
    if (from) {
      const who = document.createElement("b");
      who.className = "from";
      who.textContent = from;
      p.appendChild(who);
    }
    p.appendChild(document.createTextNode(text));
    messages.appendChild(p);
    messages.scrollTop = messages.scrollHeight;
  }

  // showOnline lists who is in the room: each logged-in user once, with
  // the number of their sockets (devices) there. Anonymous sockets are not
  // tracked, so never listed.
  function showOnline(presence) {
    const users = presence ? presence.list((id, { metas }) => ({ id, devices: metas.length })) : [];
    users.sort((a, b) => a.id.localeCompare(b.id));
    onlineList.replaceChildren(...users.map(({ id, devices }) => {
      const li = document.createElement("li");
      li.dataset.user = id;
      const count = document.createElement("small");
      count.className = "devices";
      count.textContent = devices + (devices === 1 ? " device" : " devices");
      li.append(id + " ", count);
      return li;
    }));
    onlineCount.textContent = presence ? "(" + users.length + ")" : "";
  }

  async function tokenFor(name) {
    if (!name) return null;
    const res = await fetch("/token?user_id=" + encodeURIComponent(name));
    const body = await res.json();
    if (!res.ok) throw new Error(body.error || ("HTTP " + res.status));
    return body.token;
  }

  async function connect(name, room) {
    if (socket) socket.disconnect();
    channel = null;
    showOnline(null);
    setInput(true);
    let token = null;
    try {
      token = await tokenFor(name);
    } catch (e) {
      append("login failed: " + e.message, "notice");
      setStatus("login failed", "error");
      setInput(false, "Not in a room: log in above");
      return;
    }
    const sock = new Socket("/socket", { params: token ? { token } : {} });
    socket = sock;
    const lost = () => { if (socket === sock) setStatus("connection lost, reconnecting…", "error"); };
    sock.onOpen(() => { if (socket === sock) setStatus("connected", "ok"); });
    sock.onError(lost);
    sock.onClose(lost);
    sock.connect();

    const topic = "rooms:" + room;
    roomName.textContent = room;
    // History (proto/history.go): the position of the last message shown.
    // phoenix.js calls the params function on every rejoin, so a rejoin
    // after a lost connection asks for what came after it.
    let last = null;
    // Beyond the channels guide, each asked for (see the README's join
    // parameters): who sent each message, who joins, the user's ignore
    // list, who is online (Presence), and the room's last 50 messages, or
    // those since the last one shown.
    const ch = sock.channel(topic, () => ({
      sender: true, joins: true, ignore: true, presence: true,
      history: last ? { since: last } : { last: 50 },
    }));
    channel = ch;
    // phoenix.js's Presence keeps the list in step with presence_state and
    // presence_diff, across rejoins too.
    const presence = new Presence(ch);
    presence.onSync(() => { if (socket === sock) showOnline(presence); });
    // Live broadcasts carry their position as the frame's ref.
    ch.on("new_msg", (payload, pos) => { show("new_msg", payload); if (pos) last = pos; });
    ch.on("user_joined", (payload, pos) => { show("user_joined", payload); if (pos) last = pos; });
    let joined = false;
    ch.join()
      .receive("ok", (resp) => {
        const missed = resp.messages || [];
        missed.forEach((m) => show(m.event, m.payload, true));
        if (resp.seq) last = resp.seq;
        if (!joined) {
          append("joined " + topic + (name ? " as " + name : " anonymously"), "notice");
        } else {
          append("rejoined " + topic + ", " + missed.length + " missed message" + (missed.length === 1 ? "" : "s"), "notice");
        }
        if (resp.recovered === false) append("some messages could not be recovered", "notice lost");
        joined = true;
      })
      .receive("error", (resp) => {
        append("cannot join " + topic + ": " + (resp && resp.reason), "notice");
        // A refused join is final for this page: stop phoenix.js's rejoin loop,
        // and take no more messages (they could only time out).
        ch.leave();
        if (socket === sock) showOnline(null);
        if (channel === ch) {
          channel = null;
          setInput(false, "Not in " + topic + ": pick another room above");
        }
      })
      .receive("timeout", () => append("join timed out, retrying…", "notice"));
  }

  // show displays a broadcast, live or (earlier) from the room's history.
  function show(event, payload, earlier) {
    if (event === "user_joined") {
      append(payload.user_id + " joined", "notice", null, earlier);
    } else if (payload instanceof ArrayBuffer) {
      append("(" + payload.byteLength + " bytes of binary data)", "notice");
    } else if (event === "new_msg") {
      append(payload.body, "", payload.user_id || "anonymous", earlier);
    }
  }

  input.addEventListener("keypress", (event) => {
    if (event.key !== "Enter" || !channel) return;
    const body = input.value;
    if (body.trim() === "") return;
    // "/ignore NAME" and "/unignore NAME": the guide's ignore list.
    const command = body.match(/^\/(ignore|unignore)\s+(\S.*)$/);
    if (command) {
      const [, event, who] = command;
      channel.push(event, { user_id: who.trim() })
        .receive("ok", (resp) => append("ignoring: " + (resp.ignored.join(", ") || "nobody"), "notice"))
        .receive("error", (resp) => append(event + " failed: " + (resp && resp.reason), "notice"));
      input.value = "";
      return;
    }
    channel.push("new_msg", { body })
      .receive("error", (resp) => append("not sent: " + (resp && resp.reason), "notice"))
      .receive("timeout", () => append("not sent: timeout", "notice"));
    input.value = "";
  });

  login.addEventListener("submit", (event) => {
    event.preventDefault();
    connect(userName.value.trim(), roomInput.value.trim() || "lobby");
  });

  const params = new URLSearchParams(window.location.search);
  userName.value = params.get("user") || "";
  roomInput.value = params.get("room") || "lobby";
  connect(userName.value.trim(), roomInput.value.trim() || "lobby");
})();
