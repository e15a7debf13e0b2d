// The status page: fetches dashboard/data every few seconds and renders it.
// The API key, when one is needed, is kept in this tab's sessionStorage.
"use strict";

const KEY_STORAGE = "sent-gateway.api-key";
const REFRESH_MS = 10000;
const SVG = "http://www.w3.org/2000/svg";
const SERIES = ["created", "accepted", "delivered", "failed"];
const GROUPS = {
  queued: "pending", scheduled: "pending", sending: "pending", accepted: "pending", sent: "pending",
  delivered: "done", read: "done",
  failed: "failed", blocked: "failed", filtered: "failed", cancelled: "failed",
};

const $ = (id) => document.getElementById(id);
let timer = null;

function element(tag, attributes, text) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function svgElement(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

function show(id, visible) {
  $(id).hidden = !visible;
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 120) return `${value.toFixed(1)} s`;
  return `${(value / 60).toFixed(1)} min`;
}

function time(iso) {
  if (!iso) return "–";
  const at = new Date(iso);
  return at.toLocaleString(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

function fillTable(id, rows, makeRow) {
  const table = $(id);
  const body = table.querySelector("tbody");
  body.replaceChildren(...rows.map(makeRow));
  table.hidden = rows.length === 0;
  table.parentElement.querySelector(".empty").hidden = rows.length !== 0;
}

function cell(text, attributes) {
  return element("td", attributes, text === null || text === undefined ? "–" : text);
}

function renderStatuses(data) {
  $("total").textContent = data.total;
  $("statuses").replaceChildren(...data.statuses.map(({ status, messages }) => {
    const card = element("div", {
      class: `card ${GROUPS[status] || ""}${messages === 0 ? " zero" : ""}`,
      "data-status": status,
    });
    card.append(element("span", { class: "count" }, messages), element("span", { class: "label" }, status));
    return card;
  }));
}

function renderThroughput(minutes) {
  const width = 600;
  const height = 160;
  const max = Math.max(1, ...minutes.flatMap((m) => SERIES.map((s) => m[s])));
  const step = minutes.length > 1 ? width / (minutes.length - 1) : width;
  const nodes = [];
  for (const fraction of [0.25, 0.5, 0.75]) {
    const y = (height * fraction).toFixed(1);
    nodes.push(svgElement("line", { class: "grid", x1: 0, x2: width, y1: y, y2: y }));
  }
  for (const series of SERIES) {
    const points = minutes.map((m, i) => {
      const x = (i * step).toFixed(1);
      const y = (height - 4 - (m[series] / max) * (height - 8)).toFixed(1);
      return `${x},${y}`;
    });
    nodes.push(svgElement("polyline", {
      class: `series ${series}`, points: points.join(" "), "vector-effect": "non-scaling-stroke",
    }));
  }
  $("throughput").replaceChildren(...nodes);
  $("throughput-max").textContent = `max ${max}/min`;
  $("throughput-totals").replaceChildren(...SERIES.map((series) => {
    const total = minutes.reduce((sum, m) => sum + m[series], 0);
    const item = element("li", { class: series, "data-series": series });
    item.append(element("span", { class: "swatch" }), element("span", { class: "value" }, total), ` ${series}`);
    return item;
  }));
}

function renderLatency(latency) {
  $("latency-p50").textContent = seconds(latency.p50_seconds);
  $("latency-p90").textContent = seconds(latency.p90_seconds);
  $("latency-p99").textContent = seconds(latency.p99_seconds);
  $("latency-delivered").textContent = latency.delivered;
  $("latency-queue").textContent = seconds(latency.p50_queue_seconds);
}

// Forwarding per source and destination: in every client's view only (an
// admin key's, or a public page's); a tenant's data has none.
function renderForwarding(rows) {
  show("forwarding-panel", Array.isArray(rows));
  if (!Array.isArray(rows)) return;
  fillTable("forwarding", rows, (f) => {
    const stuck = f.failing > 0 || f.dead > 0;
    const row = element("tr", { "data-forward": `${f.source}/${f.destination}`, class: stuck ? "stuck" : "" });
    row.append(cell(f.source), cell(f.destination, { class: "code" }),
      cell(f.received_24h, { class: "num received" }), cell(f.forwarded_24h, { class: "num forwarded" }),
      cell(f.pending, { class: "num pending" }), cell(f.failing, { class: "num failing" }),
      cell(f.dead, { class: "num dead" }),
      cell(f.pending > 0 ? seconds(f.oldest_pending_seconds) : "–", { class: "num oldest" }));
    return row;
  });
}

function render(data) {
  // Whose messages: one client's (a tenant key) or every client's.
  $("scope").textContent = data.client ? `Messages of ${data.client}` : "All clients";
  $("scope").dataset.client = data.client || "";
  show("scope", true);
  renderStatuses(data);
  renderThroughput(data.throughput);
  renderLatency(data.latency);
  fillTable("failure-reasons", data.failure_reasons, (r) => {
    const row = element("tr", { "data-error-code": r.error_code });
    row.append(cell(r.error_code, { class: "code" }), cell(r.status), cell(r.messages, { class: "num" }),
      cell(time(r.last_seen), { title: r.last_seen || "" }), cell(r.latest_error, { class: "wrap" }));
    return row;
  });
  fillTable("recent-failures", data.recent_failures, (f) => {
    const row = element("tr", { "data-message-id": f.message_id });
    const status = f.dead_lettered ? `${f.status} (dead-lettered)` : f.status;
    row.append(cell(time(f.failed_at), { title: f.failed_at || "" }), cell(f.message_id, { class: "code" }),
      cell(f.client), cell(status, { class: "status" }), cell(f.last_error_code, { class: "code" }),
      cell(f.last_error, { class: "wrap" }), cell(f.attempts, { class: "num" }));
    return row;
  });
  renderForwarding(data.forwarding);
  $("updated").textContent = `Updated ${time(data.generated_at)} · refreshes every ${REFRESH_MS / 1000} s`;
  show("error", false);
  show("key-form", false);
  show("content", true);
}

function askForKey(problem) {
  clearTimeout(timer);
  show("content", false);
  show("scope", false);
  show("forget", false);
  $("updated").textContent = "An API key is needed.";
  $("key-error").textContent = problem || "";
  show("key-error", Boolean(problem));
  show("key-form", true);
  $("key").focus();
}

function showError(message) {
  $("error").textContent = message;
  show("error", true);
}

async function load() {
  clearTimeout(timer);
  const key = sessionStorage.getItem(KEY_STORAGE);
  const headers = { Accept: "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  let response;
  try {
    response = await fetch("dashboard/data", { headers, cache: "no-store" });
  } catch (error) {
    showError("The gateway does not answer; retrying.");
    timer = setTimeout(load, REFRESH_MS);
    return;
  }
  if (response.status === 401) {
    sessionStorage.removeItem(KEY_STORAGE);
    askForKey(key ? "That key was refused." : "");
    return;
  }
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    body = null;
  }
  if (!response.ok || !body) {
    const reason = body && body.error ? body.error : `HTTP ${response.status}`;
    showError(`Could not load the numbers: ${reason}. Retrying.`);
  } else {
    show("forget", Boolean(key));
    render(body);
  }
  timer = setTimeout(load, REFRESH_MS);
}

// The lookup: a message by id, or a phone number's newest messages, with
// their timelines and callbacks (dashboard/lookup, which always needs a key).
function renderLookup(body) {
  const results = $("lookup-results");
  results.replaceChildren();
  const found = body.messages.length;
  $("lookup-status").textContent = found ? `${found} message(s)` : "Nothing found.";
  show("lookup-status", true);
  for (const message of body.messages) {
    const article = element("article", { class: "lookup-message" });
    article.append(element("h3", {}, `${message.message_id} · ${message.status}`));
    article.append(element("p", { class: "muted" },
      `${message.client} · ${message.phone_number} · created ${time(message.created_at)} · ${message.attempts} attempt(s)`));
    const timeline = element("table", {});
    timeline.append(element("thead", {}));
    timeline.tHead.append(element("tr", {}));
    for (const name of ["at", "status", "source", "attempt", "detail"]) timeline.tHead.rows[0].append(element("th", {}, name));
    const rows = element("tbody", {});
    for (const event of message.events) {
      const row = element("tr", {});
      row.append(cell(time(event.at)), cell(event.status), cell(event.source), cell(event.attempt),
        cell(event.detail ? JSON.stringify(event.detail) : null));
      rows.append(row);
    }
    timeline.append(rows);
    article.append(element("h4", {}, "Timeline"), timeline);
    article.append(element("h4", {}, message.callbacks.length ? "Callbacks" : "No callbacks"));
    for (const callback of message.callbacks) {
      const attempts = callback.attempts
        .map((a) => `#${a.attempt} ${a.status_code ?? "–"} ${a.error ?? ""} (${a.duration_ms} ms)`)
        .join("; ");
      article.append(element("p", {}, `${callback.status} → ${callback.state} · ${attempts || "no attempt yet"}`));
    }
    results.append(article);
  }
}

async function lookup(q) {
  const key = sessionStorage.getItem(KEY_STORAGE);
  const headers = { Accept: "application/json" };
  if (key) headers.Authorization = `Bearer ${key}`;
  show("lookup-status", true);
  $("lookup-status").textContent = "Looking…";
  try {
    const response = await fetch(`dashboard/lookup?q=${encodeURIComponent(q)}`, { headers, cache: "no-store" });
    const body = await response.json();
    if (response.status === 401) {
      $("lookup-status").textContent = "The lookup needs an API key (even on a public status page).";
      askForKey("");
    } else if (!response.ok) {
      const problems = body.messages && body.messages.q ? body.messages.q.join(" ") : body.error;
      $("lookup-status").textContent = problems;
    } else {
      renderLookup(body);
    }
  } catch (error) {
    $("lookup-status").textContent = "The gateway does not answer.";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("lookup-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const q = $("lookup-q").value.trim();
    if (q) lookup(q);
  });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    $("key").value = "";
    load();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    load();
  });
  load();
});
