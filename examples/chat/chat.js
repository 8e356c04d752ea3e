// A chat room on STOMP, in the browser, with @stomp/stompjs (loaded by index.html
// from node_modules as the global `StompJs`). The page is served by stompbox itself
// (http.static_dir), so the broker is at ws://<this host>/ws. How presence stays
// honest is explained in README.md next to this file.
'use strict';

(() => {
  const ROOM = '/topic/chat.room';
  const PRESENCE = '/topic/chat.room.presence';
  // Everyone says "here" this often...
  const ANNOUNCE_MS = 5000;
  // ...and is dropped from the list after this long without a word: two missed
  // announcements and then some, so one late timer in a background tab is not a leave.
  const EXPIRE_MS = 12000;

  const params = new URLSearchParams(location.search);
  const me = {
    // Per tab: two tabs of one person are two connections, and each counts.
    id: crypto.randomUUID(),
    name: (params.get('name') ?? localStorage.getItem('chat.name') ?? `guest-${Math.floor(1000 + Math.random() * 9000)}`).slice(0, 40),
  };

  const $ = (id) => document.getElementById(id);
  const present = new Map(); // id → { name, seen (ms) }
  let lastAnnounce = 0;

  // --- the page --------------------------------------------------------------

  $('name').value = me.name;
  $('name').addEventListener('change', () => {
    me.name = $('name').value.trim().slice(0, 40) || me.name;
    $('name').value = me.name;
    localStorage.setItem('chat.name', me.name);
    announce('here');
  });

  function render() {
    $('count').textContent = `users connected: ${present.size}`;
    const users = $('users');
    users.replaceChildren(
      ...[...present.values()]
        .sort((a, b) => a.name.localeCompare(b.name))
        .map(({ name }) => Object.assign(document.createElement('li'), { textContent: name })),
    );
  }

  // textContent only: other people's text never becomes markup.
  function show(line) {
    const list = $('messages');
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    const item = document.createElement('li');
    if (line.notice) {
      item.className = 'notice';
      item.textContent = line.notice;
    } else {
      item.className = line.id === me.id ? 'message mine' : 'message';
      const time = document.createElement('time');
      time.textContent = new Date(line.at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
      const name = Object.assign(document.createElement('span'), { className: 'name', textContent: line.name });
      const text = Object.assign(document.createElement('span'), { className: 'text', textContent: line.text });
      item.append(time, name, text);
    }
    list.append(item);
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  function status(online, text) {
    $('status').className = `status ${online ? 'online' : 'offline'}`;
    $('status').textContent = text;
  }

  // --- presence --------------------------------------------------------------

  function seen(id, name) {
    const known = present.has(id);
    present.set(id, { name, seen: Date.now() });
    if (!known && id !== me.id) show({ notice: `${name} joined` });
    render();
  }

  function gone(id, why) {
    const who = present.get(id);
    if (!who || id === me.id) return;
    present.delete(id);
    show({ notice: `${who.name} ${why}` });
    render();
  }

  // hello: "I just came, who is here?" (everyone answers with here)
  // here:  "I am still here" (periodic, and the answer to hello)
  // bye:   "I am leaving" (pagehide)
  function announce(type) {
    if (!client.connected) return;
    lastAnnounce = Date.now();
    client.publish({
      destination: PRESENCE,
      body: JSON.stringify({ type, id: me.id, name: me.name }),
      headers: { 'content-type': 'application/json' },
    });
  }

  function onPresence(message) {
    let p;
    try {
      p = JSON.parse(message.body);
    } catch {
      return;
    }
    if (typeof p.id !== 'string' || typeof p.name !== 'string') return;
    if (p.type === 'bye') {
      gone(p.id, 'left');
      return;
    }
    seen(p.id, p.name.slice(0, 40));
    if (p.type === 'hello' && p.id !== me.id) announce('here');
    // Network events are not throttled in background tabs, timers are: a hidden tab
    // keeps itself alive by answering the visible tabs' announcements when due.
    if (Date.now() - lastAnnounce >= ANNOUNCE_MS) announce('here');
  }

  setInterval(() => {
    if (Date.now() - lastAnnounce >= ANNOUNCE_MS) announce('here');
    const cutoff = Date.now() - EXPIRE_MS;
    for (const [id, { seen: at }] of present) {
      if (at < cutoff) gone(id, 'went away');
    }
  }, 1000);

  // --- the connection --------------------------------------------------------

  const client = new StompJs.Client({
    brokerURL: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`,
    reconnectDelay: 1000,
  });

  client.onConnect = () => {
    status(true, 'connected');
    client.subscribe(ROOM, (message) => {
      try {
        const line = JSON.parse(message.body);
        if (typeof line.text === 'string' && typeof line.name === 'string') show(line);
      } catch {
        // Not ours; ignore.
      }
    });
    client.subscribe(PRESENCE, onPresence);
    // Our own hello comes back through the topic too, which is what puts us in
    // the list: the count is what the broker delivered, not what we assumed.
    announce('hello');
  };

  client.onWebSocketClose = () => {
    status(false, 'reconnecting…');
    // Who is here is re-learnt on reconnect (hello); until then nobody is known.
    present.clear();
    render();
  };
  client.onStompError = (frame) => show({ notice: `broker error: ${frame.headers.message}` });

  $('say').addEventListener('submit', (event) => {
    event.preventDefault();
    const text = $('input').value.trim();
    if (!text || !client.connected) return;
    client.publish({
      destination: ROOM,
      body: JSON.stringify({ id: me.id, name: me.name, text, at: Date.now() }),
      headers: { 'content-type': 'application/json' },
    });
    $('input').value = '';
  });

  // The prompt way out: a tab being closed or navigated away says so. (pagehide,
  // unlike unload, also fires when the page goes into the back/forward cache.)
  addEventListener('pagehide', () => {
    announce('bye');
    client.deactivate();
  });
  // Back from the back/forward cache, or visible again after a long time hidden:
  // ask again who is here.
  addEventListener('pageshow', (event) => {
    if (event.persisted) client.activate();
  });
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') announce('hello');
  });

  render();
  client.activate();
})();
