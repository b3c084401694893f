// Live updates over the API's WebSockets, reconnecting with backoff after a drop.
//
// `Live` keeps one socket open: when it drops (the network, a restart of the service, a close
// with 1013 for a follower that fell behind) it opens a new one after a growing delay. The URL
// is asked for anew each time, so a follower resumes from the last seq it saw and a fresh
// ticket is used when auth is on.

import {get, socketUrl} from "./api.js";
import {TERMINAL_EVENTS} from "./dom.js";

const open = new Set();
// For tests and for the curious: `workflowd.dropConnections()` in the console drops every live
// socket the page has, as a network failure would; each one reconnects by itself.
globalThis.workflowd = {
  dropConnections() {
    for (const live of open) live.drop();
    return open.size;
  },
};

const BACKOFF_MS = [250, 500, 1000, 2000, 4000, 8000];

export class Live {
  // url(): the URL to open now; onMessage(data); onState("connecting" | "live" |
  // "reconnecting" | "closed"); done(code): true when a close with this code ends the follow.
  constructor({url, onMessage, onState = () => {}, done = () => false}) {
    Object.assign(this, {url, onMessage, onState, done});
    this.socket = null;
    this.stopped = false;
    this.failures = 0;
    this.connects = 0;
    this.timer = null;
  }

  start() {
    open.add(this);
    this.connect();
    return this;
  }

  async connect() {
    this.timer = null;
    if (this.stopped) return;
    this.onState(this.connects ? "reconnecting" : "connecting");
    let url;
    try {
      url = await this.url();
    } catch {
      this.retry();
      return;
    }
    if (this.stopped) return;
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.onopen = () => {
      this.connects += 1;
      this.onState("live");
    };
    socket.onmessage = (msg) => {
      this.failures = 0;
      let data;
      try { data = JSON.parse(msg.data); } catch { return; }
      this.onMessage(data);
    };
    socket.onclose = (ev) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.stopped) return;
      if (this.done(ev.code)) {
        this.stop();
        return;
      }
      this.retry();
    };
  }

  retry() {
    if (this.stopped) return;
    this.onState("reconnecting");
    const base = BACKOFF_MS[Math.min(this.failures, BACKOFF_MS.length - 1)];
    this.failures += 1;
    // Jitter, so many pages do not all come back at the same moment after a restart.
    this.timer = setTimeout(() => this.connect(), base * (0.75 + Math.random() / 2));
  }

  // Close the socket as a drop would: the follow goes on with a new one.
  drop() {
    if (this.socket) this.socket.close(4000, "dropped by the page");
  }

  stop() {
    this.stopped = true;
    open.delete(this);
    if (this.timer !== null) clearTimeout(this.timer);
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close(1000);
    this.onState("closed");
  }
}

// Follow one execution over `WS /executions/{id}/ws?after=SEQ`: a snapshot of its live status,
// then every event after the last one seen, in order. After a drop it resumes with `after=`;
// events are taken by `seq` only, so none is shown twice, and a gap (which the server never
// leaves) would be filled from `GET /events` before going on.
export class Follower {
  constructor(executionId, {onSnapshot, onEvent, onState}) {
    Object.assign(this, {executionId, onSnapshot, onEvent});
    this.seq = 0;
    this.terminal = false;
    this.chain = Promise.resolve();
    this.live = new Live({
      url: () => socketUrl(`/executions/${encodeURIComponent(executionId)}/ws`,
                           {after: String(this.seq)}),
      onMessage: (data) => {
        // Known at once (the close that follows may come before the chain reaches it).
        if (data.status?.is_terminal || TERMINAL_EVENTS.has(data.type)) this.terminal = true;
        this.chain = this.chain.then(() => this.take(data));
      },
      onState,
      // 1000 follows the terminal event (or a terminal execution's snapshot): nothing more.
      done: (code) => code === 1000 && this.terminal,
    });
  }

  start() {
    this.live.start();
    return this;
  }

  stop() {
    this.live.stop();
  }

  get connects() {
    return this.live.connects;
  }

  async take(data) {
    if (data.type === "pong") return;
    if (data.type === "snapshot") {
      this.onSnapshot(data.status);
      return;
    }
    if (typeof data.seq !== "number" || data.seq <= this.seq) return;  // seen already
    if (data.seq > this.seq + 1) await this.fill(data.seq);
    this.deliver(data);
  }

  async fill(upTo) {
    while (this.seq + 1 < upTo) {
      const page = await get(`/executions/${encodeURIComponent(this.executionId)}/events` +
                             `?after=${this.seq}&limit=${Math.min(1000, upTo - this.seq - 1)}`);
      const items = page.items.filter((e) => e.seq > this.seq && e.seq < upTo);
      if (!items.length) return;
      for (const event of items) this.deliver(event);
    }
  }

  deliver(event) {
    this.seq = event.seq;
    this.onEvent(event);
  }
}

// What the header says about the page's live connection.
export function showConnection(state) {
  const el = document.getElementById("conn");
  if (!el) return;
  const words = {connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…",
                 closed: ""}[state] ?? "";
  el.textContent = words;
  el.dataset.state = state;
}
