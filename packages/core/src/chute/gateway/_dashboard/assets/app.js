// chute dashboard: polls the gateway's /ui/api every 2 s. Everything shown goes through
// textContent (never innerHTML): what a container returned is displayed, never interpreted.
"use strict";

(function () {
  const POLL_MS = 2000;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const isProtected = document.querySelector('meta[name="chute-protected"]').content === "true";
  const $ = (id) => document.getElementById(id);
  const state = { api: null, status: "", cursor: null, paged: false, detail: null, dead: null, apis: [] };

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function say(text, bad) {
    const m = $("message");
    m.textContent = text;
    m.className = bad ? "error" : "";
  }

  async function call(path, options) {
    const init = { credentials: "same-origin", headers: {} };
    if (options && options.method === "POST") {
      init.method = "POST";
      init.headers["X-CSRF-Token"] = csrf;
      init.headers["Content-Type"] = "application/json";
      init.body = options.body === undefined ? "" : JSON.stringify(options.body);
    }
    const reply = await fetch(path, init);
    if (reply.status === 401) {
      window.location.reload(); // the session ended: the page shows the sign-in form
      throw new Error("signed out");
    }
    const data = await reply.json();
    if (!reply.ok) throw new Error((data.error && data.error.message) || reply.statusText);
    return data;
  }

  const apiPath = (api) => "/ui/api/apis/" + encodeURIComponent(api);

  function when(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return d.toLocaleString(undefined, { hour12: false });
  }

  function seconds(value) {
    if (value === null || value === undefined) return "–";
    if (value < 1) return Math.round(value * 1000) + " ms";
    return value.toFixed(value < 10 ? 2 : 1) + " s";
  }

  function reason(err) {
    if (!err) return "";
    let text = err.type + ": " + err.message;
    if (err.status_code !== undefined) text += " (HTTP " + err.status_code + ")";
    return text;
  }

  function cell(row, text, cls) {
    const td = el("td", text, cls);
    row.appendChild(td);
    return td;
  }

  // -- overview -------------------------------------------------------------------------

  function renderOverview(data) {
    $("store").textContent = data.store + (data.listing ? "" : " (cannot list requests)");
    $("updated").textContent = "updated " + new Date().toLocaleTimeString(undefined, { hour12: false });
    const body = $("apis").querySelector("tbody");
    body.replaceChildren();
    for (const api of data.apis) {
      const row = el("tr");
      row.dataset.api = api.name;
      if (api.name === state.api) row.className = "selected";
      const th = el("th");
      th.scope = "row";
      const pick = el("button", api.name, "link");
      pick.type = "button";
      pick.addEventListener("click", () => select(api.name));
      th.appendChild(pick);
      row.appendChild(th);
      const d = api.depth;
      for (const key of ["queued", "in_flight", "delayed", "dead"]) {
        const td = cell(row, d ? d[key] : "?", "num");
        td.dataset.count = key;
        if (!d) td.title = api.depth_error || "";
      }
      const r = api.rates;
      const figures = r
        ? [(r.at_least ? "≥ " : "") + r.per_minute, r.failed, seconds(r.latency_p50), seconds(r.latency_p95)]
        : ["n/a", "n/a", "n/a", "n/a"];
      ["per_minute", "failed", "p50", "p95"].forEach((name, i) => {
        const td = cell(row, figures[i], "num");
        td.dataset.rate = name;
        if (!r) td.title = api.rates_error || "the store cannot list requests";
      });
      body.appendChild(row);
    }
    const select_ = $("api-select");
    if (select_.options.length !== data.apis.length) {
      select_.replaceChildren(...data.apis.map((a) => el("option", a.name)));
    }
    if (state.api === null && data.apis.length) select(data.apis[0].name);
    const mine = data.apis.find((a) => a.name === state.api);
    const dead = mine && mine.depth ? mine.depth.dead : null;
    if (dead !== state.dead) {
      state.dead = dead;
      loadDead();
    }
  }

  async function loadOverview() {
    try {
      renderOverview(await call("/ui/api/overview"));
    } catch (e) {
      $("updated").textContent = "not updated: " + e.message;
    }
  }

  // -- requests ---------------------------------------------------------------------------

  function select(api) {
    state.api = api;
    state.cursor = null;
    state.paged = false;
    state.dead = undefined;
    $("api-select").value = api;
    for (const n of document.querySelectorAll(".api-name")) n.textContent = api;
    for (const row of $("apis").querySelectorAll("tbody tr")) {
      row.className = row.dataset.api === api ? "selected" : "";
    }
    closeDetail();
    loadRequests(false);
    loadDead();
  }

  function requestRow(r) {
    const row = el("tr");
    row.dataset.id = r.id;
    cell(row, when(r.created_at));
    const td = el("td");
    const open = el("button", r.id, "link id");
    open.type = "button";
    open.setAttribute("aria-label", "Show request " + r.id);
    open.addEventListener("click", () => openDetail(r.id));
    td.appendChild(open);
    row.appendChild(td);
    cell(row, r.status, "status status-" + r.status).dataset.status = r.status;
    cell(row, r.attempts, "num");
    cell(row, reason(r.error), "reason");
    return row;
  }

  async function loadRequests(more) {
    if (!state.api) return;
    const params = new URLSearchParams({ limit: "50" });
    if (state.status) params.set("status", state.status);
    if (more && state.cursor) params.set("cursor", state.cursor);
    let data;
    try {
      data = await call(apiPath(state.api) + "/requests?" + params);
    } catch (e) {
      say("Could not list the requests: " + e.message, true);
      return;
    }
    const note = $("listing-note");
    const body = $("requests").querySelector("tbody");
    if (!data.listing) {
      note.textContent = data.reason;
      note.hidden = false;
      body.replaceChildren();
      $("more").hidden = true;
      return;
    }
    note.hidden = true;
    const rows = data.records.map(requestRow);
    if (more) body.append(...rows);
    else body.replaceChildren(...rows);
    state.cursor = data.cursor;
    $("more").hidden = !data.cursor;
  }

  // -- one request ------------------------------------------------------------------------

  function field(list, name, value) {
    list.appendChild(el("dt", name));
    list.appendChild(el("dd", value === null || value === undefined || value === "" ? "–" : value));
  }

  async function openDetail(id) {
    state.detail = id;
    await loadDetail(true);
  }

  function closeDetail() {
    state.detail = null;
    $("detail").hidden = true;
  }

  async function loadDetail(focus) {
    const id = state.detail;
    if (!id) return;
    let r;
    try {
      r = await call(apiPath(state.api) + "/requests/" + encodeURIComponent(id));
    } catch (e) {
      say("Could not read request " + id + ": " + e.message, true);
      return;
    }
    if (state.detail !== id) return;
    $("detail-id").textContent = r.id;
    const list = $("detail-fields");
    list.replaceChildren();
    field(list, "Status", r.status);
    field(list, "Attempts", r.attempts);
    field(list, "Created", when(r.created_at));
    field(list, "Started", when(r.started_at));
    field(list, "Finished", when(r.finished_at));
    field(list, "Expires", when(r.expires_at));
    field(list, "Payload", r.payload_size + " bytes" + (r.content_type ? ", " + r.content_type : ""));
    field(list, "Headers", r.header_names.join(", "));
    if (r.error) {
      field(list, "Error", reason(r.error));
      if (r.error.body !== undefined) field(list, "Container said", r.error.body);
    }
    if (r.webhook) {
      const w = r.webhook;
      let text = w.event + ": " + w.status + " after " + w.attempts + " attempt(s)";
      if (w.status_code !== undefined) text += ", HTTP " + w.status_code;
      if (w.error) text += ", " + w.error;
      field(list, "Webhook", text);
    }
    if (r.cancel_requested) field(list, "Cancel", "requested");
    const result = $("detail-result");
    if (r.result) {
      result.textContent = r.result.preview !== null
        ? r.result.preview + (r.result.truncated ? "\n… (" + r.result.size + " bytes in all)" : "")
        : "(" + r.result.type + ", " + r.result.size + " bytes)";
    } else if (["failed", "cancelled", "expired"].includes(r.status)) {
      result.textContent = "(none: the request ended " + r.status + ")";
    } else {
      result.textContent = "(none yet)";
    }
    const link = $("payload-link");
    link.href = r.payload_url;
    link.setAttribute("download", r.id + ".payload");
    $("cancel").hidden = ["completed", "failed", "cancelled", "expired"].includes(r.status);
    $("detail").hidden = false;
    if (focus) $("detail-h").focus();
  }

  async function cancelRequest() {
    const id = state.detail;
    if (!id || !window.confirm("Cancel request " + id + "?")) return;
    try {
      await call(apiPath(state.api) + "/requests/" + encodeURIComponent(id) + "/cancel", { method: "POST" });
      say("Request " + id + " cancelled.");
    } catch (e) {
      say("Could not cancel: " + e.message, true);
    }
    await Promise.all([loadDetail(false), loadRequests(false), loadOverview()]);
  }

  // -- dead letter -----------------------------------------------------------------------

  async function loadDead() {
    if (!state.api) return;
    let data;
    try {
      data = await call(apiPath(state.api) + "/dead");
    } catch (e) {
      $("dead-note").textContent = "Could not read the dead letter: " + e.message;
      return;
    }
    const body = $("dead").querySelector("tbody");
    if (!data.supported) {
      $("dead-note").textContent = data.reason;
      body.replaceChildren();
      return;
    }
    $("dead-note").textContent = data.total === 0
      ? "Empty."
      : data.total + " dead letter(s)" + (data.total > data.items.length ? ", the oldest " + data.items.length + " shown" : "") + ".";
    body.replaceChildren(...data.items.map((d) => {
      const row = el("tr");
      row.dataset.id = d.id;
      cell(row, d.id, "id");
      cell(row, when(d.dead_at));
      cell(row, d.attempts, "num");
      cell(row, d.reason, "reason");
      const td = el("td");
      const button = el("button", "Requeue");
      button.type = "button";
      button.setAttribute("aria-label", "Requeue " + d.id);
      button.addEventListener("click", () => requeue([d.id]));
      td.appendChild(button);
      row.appendChild(td);
      return row;
    }));
    $("requeue-all").disabled = $("purge").disabled = data.total === 0;
  }

  async function requeue(ids) {
    const what = ids ? "request " + ids[0] : "every dead letter of " + state.api;
    if (!window.confirm("Requeue " + what + "? It runs again with a fresh retry budget.")) return;
    try {
      const done = await call(apiPath(state.api) + "/dead/requeue", { method: "POST", body: ids ? { ids } : {} });
      say("Requeued " + done.requeued + "." + (done.notes.length ? " " + done.notes.join(" ") : ""));
    } catch (e) {
      say("Could not requeue: " + e.message, true);
    }
    state.dead = undefined;
    await Promise.all([loadOverview(), loadRequests(false)]);
  }

  async function purge() {
    if (!window.confirm("Delete every dead letter of " + state.api + " for good?")) return;
    try {
      const done = await call(apiPath(state.api) + "/dead/purge", { method: "POST" });
      say("Purged " + done.purged + " dead letter(s).");
    } catch (e) {
      say("Could not purge: " + e.message, true);
    }
    state.dead = undefined;
    await loadOverview();
  }

  // -- wiring ----------------------------------------------------------------------------

  function tick() {
    if (document.visibilityState === "hidden") return;
    loadOverview();
    if (!state.paged) loadRequests(false);
    if (state.detail) loadDetail(false);
  }

  $("api-select").addEventListener("change", (e) => select(e.target.value));
  $("status-filter").addEventListener("change", (e) => {
    state.status = e.target.value;
    state.paged = false;
    loadRequests(false);
  });
  $("more").addEventListener("click", () => {
    state.paged = true;
    loadRequests(true);
  });
  $("cancel").addEventListener("click", cancelRequest);
  $("close-detail").addEventListener("click", closeDetail);
  $("requeue-all").addEventListener("click", () => requeue(null));
  $("purge").addEventListener("click", purge);
  $("logout").hidden = !isProtected;
  loadOverview();
  setInterval(tick, POLL_MS);
})();
