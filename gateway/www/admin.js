/* admin.js - the cluster console (admin.html) for operators.
 *
 * Polls GET admin/cluster every 2 s (the JSON of any gateway: every node with
 * its status report, the consumers' and proxies' reports) and draws it: a
 * nodes table, the cluster's orders per second (inline SVG), delivery latency
 * percentiles, MySQL/Redis health, consumers, dead letters and proxies.
 *
 * The operator token (admin_secret or an admin JWT) comes from ?token= (then
 * taken out of the address bar) or the sign-in field, lives in sessionStorage
 * and goes out as "Authorization: Bearer"; with no token the page asks only
 * when the gateway answers 401, so on the admin listener it never asks.
 *
 * Everything shown comes from the network: it is inserted as text nodes
 * (textContent, setAttribute), never as HTML.  No framework, no build step. */
(function () {
  "use strict";

  const POLL_MS = 2000;
  const FETCH_TIMEOUT_MS = 5000;
  const STALE_MS = 10000;              // a status report older than this is stale
  const TOKEN_KEY = "pushgate.adminToken";
  const ENDPOINT = "admin/cluster";    // relative: works behind a path prefix too
  const SERIES = [["in", "received (in)"], ["pushed", "pushed"], ["forwarded", "forwarded"],
                  ["stored", "stored"], ["acked", "acked"]];
  const HISTOGRAMS = [["intake_to_push", "intake → push"], ["push_to_ack", "push → ack"]];
  const PERCENTILES = [50, 90, 99];
  const CHART_W = 300, CHART_H = 60;   // the SVG's own units (it is stretched to fit)

  const $ = (id) => document.getElementById(id);

  // ---- DOM: values only ever become text nodes or attribute values

  // el("td", {class: "num", "data-x": 1}, "text", childNode, ...)
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    setAttrs(e, attrs);
    for (const c of children) if (c !== null && c !== undefined) e.append(c);  // strings: text
    return e;
  }

  function svg(tag, attrs) {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    setAttrs(e, attrs);
    return e;
  }

  function setAttrs(e, attrs) {
    for (const [k, v] of Object.entries(attrs || {}))
      if (v !== null && v !== undefined) e.setAttribute(k, String(v));
  }

  function fill(parent, ...children) {
    parent.replaceChildren(...children.filter((c) => c));
    return parent;
  }

  function row(attrs, cells) {
    return el("tr", attrs, ...cells.map((c) => (c instanceof Node && c.nodeName === "TD" ? c : el("td", {}, c))));
  }

  function num(value, attrs) {
    return el("td", Object.assign({ class: "num" }, attrs), value);
  }

  function headRow(names) {
    return el("tr", {}, ...names.map((n) => el("th", { class: n.endsWith("/s") || n.startsWith("#") ? "num" : null },
                                              n.replace(/^#/, ""))));
  }

  function pill(kind, label, title) {
    return el("span", { class: "pill " + kind, title: title }, label);
  }

  // ok: true, false or missing
  function health(ok, title) {
    if (ok === true) return pill("ok", "ok", title);
    if (ok === false) return pill("bad", "not ok", title);
    return pill("none", "—", title);
  }

  function empty(what) {
    return el("p", { class: "empty" }, what);
  }

  function definitions(pairs) {
    const dl = el("dl");
    for (const [k, v, key] of pairs) dl.append(el("dt", {}, k), el("dd", { "data-key": key || null }, v));
    return dl;
  }

  // ---- formatting

  const pad = (n) => String(n).padStart(2, "0");

  function clock(ms) {
    const d = new Date(ms);
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  function count(n) {
    if (typeof n !== "number") return "—";
    return n < 0 ? "unknown" : n.toLocaleString("en-US");
  }

  function rate(r) {
    if (typeof r !== "number" || !isFinite(r)) return "—";
    return r < 10 ? r.toFixed(1) : Math.round(r).toLocaleString("en-US");
  }

  function age(ms) {
    if (typeof ms !== "number") return "—";
    if (ms < 1000) return Math.round(ms) + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
    return span(ms / 1000);
  }

  function span(s) {
    s = Math.round(s);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min" + (s % 60 ? " " + (s % 60) + " s" : "");
    if (s < 86400) return Math.floor(s / 3600) + " h " + pad(Math.floor(s % 3600 / 60)) + " min";
    return Math.floor(s / 86400) + " d " + Math.floor(s % 86400 / 3600) + " h";
  }

  function seconds(v) {
    if (v < 0.01) return (v * 1000).toFixed(2) + " ms";
    if (v < 1) return (v * 1000).toFixed(1) + " ms";
    return v.toFixed(2) + " s";
  }

  const round2 = (v) => Math.round(v * 100) / 100;
  const sum = (a) => a.reduce((x, y) => x + (y || 0), 0);
  const byKey = (k) => (a, b) => String(a[k]).localeCompare(String(b[k]));

  // ---- the token

  let token = "";

  function loadToken() {
    const url = new URL(location.href);
    const fromUrl = url.searchParams.get("token");
    if (fromUrl !== null) {
      url.searchParams.delete("token");
      history.replaceState(history.state, "", url.pathname + url.search + url.hash);
      if (fromUrl) saveToken(fromUrl);
    }
    if (!token) try { token = sessionStorage.getItem(TOKEN_KEY) || ""; } catch (e) { /* no storage */ }
  }

  function saveToken(t) {
    token = t;
    try {
      if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY);
    } catch (e) { /* no storage: kept for this page only */ }
  }

  function askToken(httpStatus) {
    const sent = !!token;
    const why = httpStatus === 403
      ? "This token is valid but is not an operator token (HTTP 403): it needs the admin claim."
      : sent ? "The gateway refused this token (HTTP 401)."
             : "This page needs the operator token (HTTP 401).";
    saveToken("");
    $("signin-why").textContent = why;
    $("signin").hidden = false;
    $("app").hidden = true;
    setStatus("auth", httpStatus === 403 ? "not an operator token" : "token needed");
    $("tokeninput").focus();
  }

  function onSignIn(e) {
    e.preventDefault();
    const t = $("tokeninput").value.trim();
    if (!t) return;
    $("tokeninput").value = "";
    saveToken(t);
    $("signin").hidden = true;
    setStatus("", "loading");
    poll();
  }

  // ---- polling

  let timer = null;
  let failingSince = null;

  function setStatus(kind, text) {
    const s = $("status");
    s.className = kind;
    s.textContent = text;
  }

  async function fetchCluster() {
    const ctl = new AbortController();
    const t = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
    try {
      const headers = token ? { Authorization: "Bearer " + token } : {};
      const res = await fetch(ENDPOINT, { headers, cache: "no-store", signal: ctl.signal });
      if (res.status === 401 || res.status === 403) return { auth: res.status };
      if (!res.ok) throw new Error("HTTP " + res.status);
      return { data: await res.json() };
    } catch (e) {
      throw new Error(e.name === "AbortError" ? "no answer in " + FETCH_TIMEOUT_MS / 1000 + " s" : e.message);
    } finally {
      clearTimeout(t);
    }
  }

  async function poll() {
    clearTimeout(timer);
    const started = Date.now();
    try {
      const r = await fetchCluster();
      if (r.auth) { askToken(r.auth); return; }     // polling resumes after sign-in
      render(r.data);
      failingSince = null;
      $("app").hidden = false;
      setStatus("ok", "updated " + clock(Date.now()));
    } catch (e) {
      failingSince = failingSince || Date.now();
      setStatus("error", "unreachable since " + clock(failingSince) + " (" + e.message + ")");
    }
    timer = setTimeout(poll, Math.max(0, POLL_MS - (Date.now() - started)));
  }

  // ---- rendering

  function render(data) {
    const nodes = (data.nodes || []).slice().sort(byKey("node_id"));
    const daemons = (data.daemons || []).slice().sort(byKey("daemon_id"));
    const consumers = daemons.filter((d) => d.role === "consumer");
    const proxies = daemons.filter((d) => d.role === "proxy");
    $("served").textContent = "served by " + data.served_by;
    renderNodes(nodes);
    renderRates(nodes);
    renderLatency(nodes);
    renderHealth(data, nodes, daemons);
    renderConsumers(consumers);
    renderDeadLetters(consumers);
    renderProxies(proxies);
  }

  const isStale = (node) => !node.status || node.status_age_ms === null || node.status_age_ms > STALE_MS;
  const daemonStale = (d) => !d.status || d.age_ms > STALE_MS;

  function reportCell(status, ageMs, stale) {
    if (!status) return el("td", { class: "report" }, pill("stale", "no status"));
    if (stale) return el("td", { class: "report" }, pill("stale", "stale"), " " + age(ageMs) + " old");
    return el("td", { class: "report" }, age(ageMs) + " ago");
  }

  // -- nodes

  function renderNodes(nodes) {
    const head = headRow(["node", "state", "heartbeat", "uptime", "#connections",
                          ...SERIES.map(([k]) => k + "/s"), "MySQL", "Redis", "status report"]);
    fill($("nodes"), el("thead", {}, head), el("tbody", {}, ...nodes.map(nodeRow)));
    if (!nodes.length) $("nodes").append(el("tbody", {}, row({}, ["no nodes"])));
  }

  function nodeRow(n) {
    const st = n.status;
    const stale = isStale(n);
    const rates = nodeRates(n) || {};
    return row({ class: "node" + (stale ? " stale" : ""), "data-node": n.node_id, "data-state": n.state,
                 "data-connections": st ? st.connections : null }, [
      el("td", { title: "started " + n.started_at }, n.node_id, el("span", { class: "meta" }, " ws :" + n.ws_port)),
      el("td", { class: "state" }, pill(n.state === "up" ? "up" : n.state === "draining" ? "draining" : "down", n.state)),
      num(age(n.heartbeat_age_ms)),
      num(st ? span(st.uptime) : "—"),
      num(st ? count(st.connections) : "—", { class: "num connections" }),
      ...SERIES.map(([k]) => num(rate(rates[k]), { class: "num rate-" + k })),
      el("td", { class: "mysql" }, st ? health(st.mysql && st.mysql.ok, "errors: " + count(st.mysql && st.mysql.errors)) : "—"),
      el("td", { class: "redis" }, st ? health(st.redis && st.redis.ok, "route feed link") : "—"),
      reportCell(st, n.status_age_ms, stale),
    ]);
  }

  // per-second rates of a node: its history's last step, else counter deltas between polls
  function nodeRates(n) {
    const st = n.status;
    if (!st) return null;
    const h = st.history;
    if (validHistory(h)) {
      const r = {};
      for (const [k] of SERIES) r[k] = (h[k][h[k].length - 1] || 0) / h.step_s;
      return r;
    }
    return ratesFromCounters(n.node_id, st);
  }

  const lastCounters = new Map();   // node_id -> {at, messages, rates}

  function ratesFromCounters(id, st) {
    const prev = lastCounters.get(id);
    const m = st.messages || {};
    if (prev && prev.at === st.at) return prev.rates;   // the same report as last time
    let rates = null;
    if (prev && st.at > prev.at) {
      rates = {};
      for (const [k] of SERIES) rates[k] = Math.max(0, ((m[k] || 0) - (prev.messages[k] || 0)) * 1000 / (st.at - prev.at));
    }
    lastCounters.set(id, { at: st.at, messages: m, rates });
    return rates;
  }

  function validHistory(h) {
    return !!h && h.step_s > 0 && typeof h.end === "number" &&
      SERIES.every(([k]) => Array.isArray(h[k]) && h[k].length > 0 && h[k].length === h.in.length);
  }

  // -- rates: the sum over nodes of their histories, on one time grid

  // The grid: the longest step, ending at the oldest "end" of the fresh
  // reports (so its last step is complete on every node; a node ahead by a
  // step shows it at the next poll), as long as the longest history.
  function clusterHistory(nodes) {
    const hs = nodes.filter((n) => n.status && validHistory(n.status.history))
                    .map((n) => ({ h: n.status.history, fresh: !isStale(n) }));
    if (!hs.length) return null;
    const step = Math.max(...hs.map((x) => x.h.step_s));
    const fresh = hs.filter((x) => x.fresh);
    const end = Math.min(...(fresh.length ? fresh : hs).map((x) => x.h.end));
    const steps = Math.max(1, Math.round(Math.max(...hs.map((x) => x.h.in.length * x.h.step_s)) / step));
    const sums = {};
    for (const [k] of SERIES) sums[k] = new Array(steps).fill(0);
    for (const x of hs) addHistory(sums, x.h, end, step, steps);
    return { step, end, steps, sums };
  }

  // grid step i covers (end - (steps - i) * step, end - (steps - 1 - i) * step]
  function addHistory(sums, h, end, step, steps) {
    const len = h.in.length;
    for (let k = 0; k < len; k++) {
      const stepEnd = h.end - (len - 1 - k) * h.step_s;
      const i = steps - 1 - Math.floor((end - stepEnd) / step);
      if (stepEnd > end || i < 0) continue;
      for (const [s] of SERIES) sums[s][i] += h[s][k] || 0;
    }
  }

  function renderRates(nodes) {
    const c = clusterHistory(nodes);
    if (!c) {
      $("rates-span").textContent = "";
      fill($("rates"), empty("no history in the nodes' reports"));
      return;
    }
    $("rates-span").textContent = "last " + span(c.steps * c.step) + ", " + c.step + " s steps, until " + clock(c.end * 1000);
    fill($("rates"), ...SERIES.map(([k, label]) => chart(k, label, c.sums[k].map((v) => v / c.step), c)));
  }

  function chart(key, label, perSecond, c) {
    const last = perSecond[perSecond.length - 1];
    const max = Math.max(...perSecond);
    return el("div", { class: "chart", "data-series": key, "data-last": round2(last), "data-max": round2(max),
                       "data-total": sum(c.sums[key]) },
      el("div", { class: "head" }, el("span", {}, label), el("span", { class: "last" }, rate(last) + "/s")),
      sparkline(perSecond, max),
      el("div", { class: "axis" }, el("span", {}, "−" + span(c.steps * c.step)),
         el("span", {}, "max " + rate(max) + "/s"), el("span", {}, clock(c.end * 1000))));
  }

  function sparkline(values, max) {
    const top = max > 0 ? max : 1;
    const n = values.length;
    const x = (i) => (n > 1 ? (i / (n - 1)) * CHART_W : i ? CHART_W : 0);
    const y = (v) => (CHART_H - 2 - (v / top) * (CHART_H - 4)).toFixed(2);
    const pts = (n > 1 ? values : [values[0], values[0]]).map((v, i) => x(i) + "," + y(v));
    const s = svg("svg", { viewBox: "0 0 " + CHART_W + " " + CHART_H, preserveAspectRatio: "none", role: "img" });
    s.append(svg("polygon", { points: "0," + CHART_H + " " + pts.join(" ") + " " + CHART_W + "," + CHART_H,
                              fill: "#1f2a4418" }),
             svg("polyline", { points: pts.join(" ") }));
    return s;
  }

  // -- latency: the nodes' histograms summed, percentiles inside the buckets

  function clusterLatency(nodes) {
    let acc = null;
    for (const n of nodes) {
      const l = n.status && !isStale(n) && n.status.latency;
      if (!l || !Array.isArray(l.bounds)) continue;
      if (!acc) acc = { bounds: l.bounds, window_s: l.window_s, nodes: 0, other: 0, sums: {} };
      if (l.bounds.join() !== acc.bounds.join()) { acc.other++; continue; }
      acc.nodes++;
      for (const [k] of HISTOGRAMS) addBuckets(acc.sums, k, l[k] || [], acc.bounds.length + 1);
    }
    return acc;
  }

  function addBuckets(sums, k, counts, len) {
    const s = sums[k] || (sums[k] = new Array(len).fill(0));
    counts.forEach((c, i) => { if (i < len) s[i] += c || 0; });
  }

  // {value: seconds} by linear interpolation in its bucket, {over: last bound}
  // in the +Inf bucket, null without data
  function percentile(counts, bounds, p) {
    const total = sum(counts);
    if (!total) return null;
    const rank = (p / 100) * total;
    let below = 0;
    for (let i = 0; i < counts.length; i++) {
      const c = counts[i] || 0;
      if (c > 0 && below + c >= rank) {
        if (i >= bounds.length) break;
        const lo = i === 0 ? 0 : bounds[i - 1];
        return { value: lo + (bounds[i] - lo) * (rank - below) / c };
      }
      below += c;
    }
    return { over: bounds[bounds.length - 1] };
  }

  function renderLatency(nodes) {
    const l = clusterLatency(nodes);
    const table = $("latency");
    if (!l) {
      $("latency-window").textContent = "";
      fill(table, el("tbody", {}, row({}, ["no latency in the nodes' reports"])));
      return;
    }
    $("latency-window").textContent = "last " + span(l.window_s) + ", " + l.nodes + " node" + (l.nodes === 1 ? "" : "s") +
      (l.other ? " (" + l.other + " with other buckets left out)" : "");
    fill(table, el("thead", {}, headRow(["", "#count", ...PERCENTILES.map((p) => "#p" + p)])),
         el("tbody", {}, ...HISTOGRAMS.map(([k, label]) => latencyRow(k, label, l.sums[k] || [], l.bounds))));
  }

  function latencyRow(key, label, counts, bounds) {
    const total = sum(counts);
    const attrs = { class: "latency", "data-hist": key, "data-count": total };
    if (!total) return row(attrs, [label, num("0"), el("td", { class: "nodata", colspan: PERCENTILES.length }, "no data")]);
    const cells = PERCENTILES.map((p) => {
      const q = percentile(counts, bounds, p);
      attrs["data-p" + p] = q.over !== undefined ? ">" + q.over : q.value;
      return num(q.over !== undefined ? "> " + seconds(q.over) : seconds(q.value));
    });
    return row(attrs, [label, num(count(total)), ...cells]);
  }

  // -- health: MySQL and Redis as each daemon sees them

  function renderHealth(data, nodes, daemons) {
    const serving = data.mysql || {};
    const rows = [row({ class: "health serving", "data-daemon": "served by " + data.served_by,
                        "data-mysql": serving.ok ? "ok" : "down" },
                      ["this gateway (" + data.served_by + ")", "reads the tables", health(serving.ok), "—",
                       el("td", { class: "reason" }, serving.ok ? "" : serving.error || "")])];
    for (const n of nodes) rows.push(healthRow("gateway " + n.node_id, "gateway", n.status, n.status_age_ms, isStale(n)));
    for (const d of daemons) rows.push(healthRow(d.daemon_id, d.role, d.status, d.age_ms, daemonStale(d)));
    fill($("health"), el("thead", {}, headRow(["daemon", "role", "MySQL", "Redis", "report"])), el("tbody", {}, ...rows));
  }

  function healthRow(id, role, st, ageMs, stale) {
    const mysql = st && st.mysql ? st.mysql.ok : undefined;
    const redis = st && st.redis ? st.redis.ok : undefined;
    return row({ class: "health" + (stale ? " stale" : ""), "data-daemon": id, "data-role": role },
               [id, role, health(mysql), health(redis), reportCell(st, ageMs, stale)]);
  }

  // -- consumers and their dead letters

  function renderConsumers(consumers) {
    if (!consumers.length) { fill($("consumers"), empty("no consumer reports")); return; }
    fill($("consumers"), ...consumers.map(consumerCard));
  }

  function consumerCard(d) {
    const st = d.status || {};
    const c = st.counters || {};
    const dl = st.dead_letters || {};
    const byReason = Object.entries(dl.by_reason || {}).filter(([, n]) => n).map(([r, n]) => r + " " + count(n));
    const replies = Object.entries(st.replies || {}).map(([code, n]) => code + ": " + count(n));
    return el("div", { class: "card consumer" + (daemonStale(d) ? " stale" : ""), "data-daemon": d.daemon_id,
                       "data-name": st.name || "" },
      el("h3", {}, st.name || d.daemon_id),
      el("p", { class: "meta" }, d.daemon_id + " · " + (st.stream || "?") + " / " + (st.group || "?") +
         " · up " + (typeof st.uptime === "number" ? span(st.uptime) : "?") + " · report " + age(d.age_ms) + " ago" +
         (daemonStale(d) ? " (stale)" : "")),
      definitions([
        ["lag", count(st.lag), "lag"], ["pending", count(st.pending), "pending"],
        ["in flight", count(st.in_flight), "in_flight"], ["gateways", count(st.gateways), "gateways"],
        ["read / claimed", count(c.read) + " / " + count(c.claimed), "read"],
        ["sent / acked", count(c.sent) + " / " + count(c.acked), "acked"],
        ["retried / dead", count(c.retried) + " / " + count(c.dead), "dead"],
        ["replies", replies.join(", ") || "—", "replies"],
        ["dead letters", count(dl.total), "dead_total"],
        ["by reason", byReason.join(", ") || "—", "dead_by_reason"],
      ]));
  }

  function renderDeadLetters(consumers) {
    const all = [];
    for (const d of consumers) {
      const recent = d.status && d.status.dead_letters && d.status.dead_letters.recent;
      for (const x of Array.isArray(recent) ? recent : []) all.push(Object.assign({ consumer: d.status.name || d.daemon_id }, x));
    }
    all.sort((a, b) => (b.at || 0) - (a.at || 0));
    const head = el("thead", {}, headRow(["time", "consumer", "entry id", "reason"]));
    const rows = all.map((x) => row({ class: "dead-letter", "data-id": x.id, "data-reason": x.reason }, [
      el("td", { title: new Date(x.at).toISOString() }, clock(x.at)), x.consumer, x.id,
      el("td", { class: "reason" }, x.reason)]));
    fill($("dead-letters"), head, el("tbody", {}, ...(rows.length ? rows : [row({}, ["none", "", "", ""])])));
  }

  // -- proxies

  function renderProxies(proxies) {
    if (!proxies.length) { fill($("proxies"), empty("no proxy reports")); return; }
    fill($("proxies"), ...proxies.map(proxyCard));
  }

  function proxyCard(d) {
    const st = d.status || {};
    return el("div", { class: "card proxy" + (daemonStale(d) ? " stale" : ""), "data-daemon": d.daemon_id },
      el("h3", {}, d.daemon_id),
      el("p", { class: "meta" }, "up " + (typeof st.uptime === "number" ? span(st.uptime) : "?") +
         " · report " + age(d.age_ms) + " ago" + (daemonStale(d) ? " (stale)" : "")),
      definitions([["requests", count(st.requests), "requests"], ["gateways known", count(st.nodes), "nodes"],
                   ["MySQL", health(st.mysql && st.mysql.ok), "mysql"]]),
      forwardsTable(Array.isArray(st.forwards) ? st.forwards : []));
  }

  // targets down, outcomes across ("ok" first)
  function forwardsTable(forwards) {
    if (!forwards.length) return empty("no forwards yet");
    const outcomes = [...new Set(forwards.map((f) => f.outcome))]
      .sort((a, b) => (a === "ok" ? -1 : b === "ok" ? 1 : a.localeCompare(b)));
    const targets = [...new Set(forwards.map((f) => f.target))].sort();
    const cell = (t, o) => sum(forwards.filter((f) => f.target === t && f.outcome === o).map((f) => f.count));
    return el("table", { class: "forwards" },
      el("thead", {}, headRow(["target", ...outcomes.map((o) => "#" + o)])),
      el("tbody", {}, ...targets.map((t) => row({ class: "forward", "data-target": t },
        [t, ...outcomes.map((o) => num(count(cell(t, o)), { "data-outcome": o }))]))));
  }

  // ---- start

  $("tokenform").addEventListener("submit", onSignIn);
  loadToken();
  poll();
})();
