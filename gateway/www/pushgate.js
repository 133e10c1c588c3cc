/* pushgate.js - the browser side of pushgate.
 *
 *   const pg = new Pushgate({ urls: ["ws://node1:9501/ws", "ws://node2:9501/ws"],
 *                             token: "<JWT>" });
 *   pg.on("WorksheetMsg", (msg) => ...);   // {event, response, id}
 *   pg.on("NEW_MSG", (data) => ...);        // {from, msg, id}
 *   pg.on("state", (s) => ...);             // "connecting" | "online" | "offline"
 *   pg.chat("agent-2", "hello");
 *   pg.connect();
 *
 * It reconnects with exponential backoff and jitter, moving to the next node
 * of the list when one does not answer; sends HEART_BEAT; acknowledges every
 * message with an id (the server redelivers what is not acknowledged) and
 * drops duplicates by id, so the page sees each message once. */
(function (root) {
  "use strict";

  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 15000;
  const HEARTBEAT_MS = 25000;
  const SEEN_MAX = 2000;          // ids remembered for de-duplication

  class Pushgate {
    constructor(options) {
      this.urls = options.urls;
      this.token = options.token;
      this.handlers = {};
      this.node = 0;
      this.backoff = BACKOFF_MIN_MS;
      this.seen = new Set();
      this.seenOrder = [];
      this.ws = null;
      this.stopped = false;
      this.heartbeat = null;
    }

    on(event, fn) {
      (this.handlers[event] = this.handlers[event] || []).push(fn);
      return this;
    }

    emit(event, arg) {
      (this.handlers[event] || []).forEach((fn) => fn(arg));
    }

    connect() {
      this.stopped = false;
      const url = this.urls[this.node % this.urls.length];
      this.emit("state", "connecting");
      const ws = new WebSocket(url + (url.includes("?") ? "&" : "?") + "token=" +
                               encodeURIComponent(this.token));
      this.ws = ws;
      ws.onopen = () => { this.backoff = BACKOFF_MIN_MS; };
      ws.onmessage = (e) => this.receive(e.data);
      ws.onclose = (e) => this.closed(e);
    }

    close() {
      this.stopped = true;
      clearInterval(this.heartbeat);
      if (this.ws) this.ws.close(1000, "bye");
    }

    send(event, data) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN)
        this.ws.send(JSON.stringify({ event: event, data: data || {} }));
    }

    chat(to, msg) {
      this.send("NEW_MSG", { to: to, msg: msg });
    }

    receive(text) {
      let m;
      try { m = JSON.parse(text); } catch (e) { return; }
      if (m.event === "ONLINE") {
        this.online = m.data;
        this.startHeartbeat();
        this.emit("state", "online");
        this.emit("ONLINE", m.data);
        return;
      }
      const id = m.id || (m.data && m.data.id);
      if (id && (m.event === "WorksheetMsg" || m.event === "NEW_MSG")) {
        this.send("ACK", { id: id });
        if (this.seen.has(id)) return;        // a redelivery: already shown
        this.remember(id);
      }
      if (m.event) this.emit(m.event, m.event === "WorksheetMsg" ? m : m.data);
      else if (m.code) this.emit("error", m);
    }

    remember(id) {
      this.seen.add(id);
      this.seenOrder.push(id);
      if (this.seenOrder.length > SEEN_MAX) this.seen.delete(this.seenOrder.shift());
    }

    startHeartbeat() {
      clearInterval(this.heartbeat);
      this.heartbeat = setInterval(() => this.send("HEART_BEAT"), HEARTBEAT_MS);
    }

    closed(e) {
      clearInterval(this.heartbeat);
      this.emit("state", "offline");
      if (this.stopped) return;
      if (e.code === 4001) { this.emit("error", { code: 4001, msg: e.reason }); return; }
      // A node that stops (1001) or cannot be reached: try the next one.
      this.node++;
      const jitter = Math.random() * this.backoff * 0.5;
      setTimeout(() => this.connect(), this.backoff + jitter);
      this.backoff = Math.min(this.backoff * 2, BACKOFF_MAX_MS);
    }
  }

  root.Pushgate = Pushgate;
})(typeof window !== "undefined" ? window : globalThis);
