// A chat room on STOMP, in the browser, with @stomp/stompjs (loaded by index.html
// from node_modules as the global `StompJs`). The page is served by stompbox itself
// (http.static_dir), so the broker is at ws://<this host>/ws. Who is here comes from
// the broker's presence topic for the room; README.md next to this file explains it.
'use strict';

(() => {
  const ROOM = '/topic/chat.room';
  // The broker publishes here who is subscribed to ROOM: a snapshot on SUBSCRIBE,
  // then one event per subscription that comes or goes.
  const PRESENCE = `/sys/presence${ROOM}`;
  // How long a tab whose last room subscription ended stays listed in case the same
  // session subscribes again: a client that renames by unsubscribing first would
  // otherwise show as leaving and joining. Short next to the 2 s a crashed tab may take.
  const RENAME_GRACE_MS = 300;
  // Lines already shown, by id: while this tab renames, two of its subscriptions
  // receive the room for a moment.
  const SEEN_KEPT = 500;

  const params = new URLSearchParams(location.search);
  const me = {
    name: (params.get('name') ?? localStorage.getItem('chat.name') ?? `guest-${Math.floor(1000 + Math.random() * 9000)}`).slice(0, 40),
  };
  // The broker's name for this tab's connection (CONNECTED `session`); a new one on
  // every reconnect, so lines from before it are recognised by any of them.
  let session = null;
  const mySessions = new Set();
  let lineSeq = 0;
  let roomSubscription = null;

  const $ = (id) => document.getElementById(id);
  // session → Map(subscription id → name), newest subscription last: one tab is one
  // session, and it goes by the name of its newest subscription.
  const members = new Map();
  // session → { timer, subscription } for tabs within RENAME_GRACE_MS of leaving.
  const leaving = new Map();
  const seen = new Set();

  // --- the page --------------------------------------------------------------

  $('name').value = me.name;
  $('name').addEventListener('change', () => {
    me.name = $('name').value.trim().slice(0, 40) || me.name;
    $('name').value = me.name;
    localStorage.setItem('chat.name', me.name);
    if (client.connected) joinRoom();
  });

  const nameOf = (s) => [...(members.get(s)?.values() ?? [])].at(-1);

  function render() {
    // Distinct sessions, as the broker reports them: two tabs are two users.
    $('count').textContent = `users connected: ${members.size}`;
    $('users').replaceChildren(
      ...[...members.keys()]
        .map((s) => ({ s, name: nameOf(s) }))
        .sort((a, b) => a.name.localeCompare(b.name))
        .map(({ s, name }) => Object.assign(document.createElement('li'), {
          textContent: s === session ? `${name} (you)` : name,
          className: s === session ? 'me' : '',
        })),
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
      item.className = mySessions.has(line.session) ? 'message mine' : 'message';
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

  // --- presence, from the broker ---------------------------------------------

  function memberName(m) {
    try {
      const info = JSON.parse(m.info);
      if (typeof info?.name === 'string' && info.name.trim()) return info.name.trim().slice(0, 40);
    } catch {
      // No info, or not ours: fall back to the login.
    }
    return typeof m.login === 'string' ? m.login : 'anonymous';
  }

  function add(m) {
    if (!members.has(m.session)) members.set(m.session, new Map());
    members.get(m.session).set(m.subscription, memberName(m));
  }

  function forgetAll() {
    for (const { timer } of leaving.values()) clearTimeout(timer);
    leaving.clear();
    members.clear();
  }

  function onPresence(message) {
    let p;
    try {
      p = JSON.parse(message.body);
    } catch {
      return;
    }
    if (p.event === 'snapshot') {
      forgetAll();
      for (const m of p.members ?? []) if (m?.session) add(m);
      render();
      return;
    }
    const m = p.member;
    if (!m?.session) return;
    if (p.event === 'subscribed') {
      const before = nameOf(m.session);
      const pending = leaving.get(m.session);
      if (pending) {
        // Unsubscribed, then subscribed again: a rename, not a leave and a join.
        clearTimeout(pending.timer);
        leaving.delete(m.session);
        members.get(m.session)?.delete(pending.subscription);
      }
      add(m);
      const after = nameOf(m.session);
      if (before === undefined) {
        if (m.session !== session) show({ notice: `${after} joined` });
      } else if (before !== after) {
        show({ notice: `${before} is now ${after}` });
      }
      render();
    } else if (p.event === 'unsubscribed') {
      const subs = members.get(m.session);
      if (!subs?.has(m.subscription) || leaving.has(m.session)) return;
      if (subs.size > 1) {
        // The tab keeps another room subscription (a rename that subscribed first).
        subs.delete(m.subscription);
        render();
        return;
      }
      const timer = setTimeout(() => {
        leaving.delete(m.session);
        const name = nameOf(m.session);
        members.delete(m.session);
        show({ notice: `${name} left` });
        render();
      }, RENAME_GRACE_MS);
      leaving.set(m.session, { timer, subscription: m.subscription });
    }
  }

  // The room subscription carries this tab's name (presence-info) for everyone's
  // member list. A rename subscribes anew before dropping the old subscription, so
  // no line published in between is missed; the overlap's doubles are filtered by id.
  function joinRoom() {
    const old = roomSubscription;
    roomSubscription = client.subscribe(ROOM, onLine, { 'presence-info': JSON.stringify({ name: me.name }) });
    old?.unsubscribe();
  }

  function onLine(message) {
    let line;
    try {
      line = JSON.parse(message.body);
    } catch {
      return; // Not ours; ignore.
    }
    if (typeof line?.text !== 'string' || typeof line.name !== 'string') return;
    if (typeof line.id === 'string') {
      if (seen.has(line.id)) return;
      seen.add(line.id);
      if (seen.size > SEEN_KEPT) seen.delete(seen.values().next().value);
    }
    show(line);
  }

  // --- the connection --------------------------------------------------------

  const client = new StompJs.Client({
    brokerURL: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`,
    reconnectDelay: 1000,
  });

  client.onConnect = (frame) => {
    session = frame.headers.session ?? null;
    if (session) mySessions.add(session);
    status(true, 'connected');
    // Presence first: the snapshot comes before this tab is in the room, and this
    // tab's own `subscribed` event, through the broker, is what lists it.
    client.subscribe(PRESENCE, onPresence);
    roomSubscription = null;
    joinRoom();
  };

  client.onWebSocketClose = () => {
    status(false, 'reconnecting…');
    // Re-learnt from the snapshot on reconnect; until then nobody is known.
    roomSubscription = null;
    forgetAll();
    render();
  };
  client.onStompError = (frame) => show({ notice: `broker error: ${frame.headers.message}` });

  $('say').addEventListener('submit', (event) => {
    event.preventDefault();
    const text = $('input').value.trim();
    if (!text || !client.connected) return;
    lineSeq += 1;
    client.publish({
      destination: ROOM,
      body: JSON.stringify({ id: `${session}/${lineSeq}`, session, name: me.name, text, at: Date.now() }),
      headers: { 'content-type': 'application/json' },
    });
    $('input').value = '';
  });

  // A tab closed or navigated away disconnects, and the broker tells the others at
  // once. (pagehide, unlike unload, also fires when the page goes into the
  // back/forward cache; pageshow brings it back.)
  addEventListener('pagehide', () => client.deactivate());
  addEventListener('pageshow', (event) => {
    if (event.persisted) client.activate();
  });

  render();
  client.activate();
})();
