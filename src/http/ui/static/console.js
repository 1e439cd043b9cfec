// The mcpgw console: one page, hash routes (#/overview, #/upstream/NAME, #/certificates,
// #/sessions), data from /ui/api and live snapshots over SSE read with fetch() (which, unlike
// EventSource, can send the Authorization header).
//
// Rule: everything the gateway relays from an upstream (names, descriptions, errors, server
// names) is untrusted. It only ever reaches the page through textContent or setAttribute on
// a fixed attribute name, never as markup; see el() below.
"use strict";

(function () {
  const TOKEN_KEY = "mcpgw.token";
  const view = document.getElementById("view");
  const live = document.getElementById("live");
  let overview = null;      // the last snapshot
  let route = { page: "overview" };
  let detail = null;        // the upstream page's data
  let probeResult = null;   // { name, report } of the last probe on the upstream page
  let confirming = null;    // the upstream whose removal is being confirmed
  let flash = null;         // one message for the next render
  let removing = null;      // the upstream whose removal this page asked for

  // ----- DOM helpers -------------------------------------------------------------------------

  // el("td", {class: "x"}, child, "text", ...): strings become text nodes; attributes are set
  // one by one, and event-handler attributes are refused.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (/^on/i.test(k)) throw new Error("event handler attributes are not set: " + k);
      node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      node.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function on(node, event, handler) {
    node.addEventListener(event, handler);
    return node;
  }

  function text(v) {
    return v === null || v === undefined || v === "" ? "–" : String(v);
  }

  // ----- time and expiry -----------------------------------------------------------------------

  function nowSecs() {
    return overview && overview.now ? overview.now : Math.floor(Date.now() / 1000);
  }

  function ago(rfc3339) {
    if (!rfc3339) return "never";
    const secs = Math.round(Date.now() / 1000 - Date.parse(rfc3339) / 1000);
    if (secs < 2) return "just now";
    if (secs < 120) return secs + " s ago";
    if (secs < 7200) return Math.round(secs / 60) + " min ago";
    return Math.round(secs / 3600) + " h ago";
  }

  // "expires in 12 days" with its class by days left; null when there is no date.
  function expiry(notAfterUnix) {
    if (notAfterUnix === null || notAfterUnix === undefined) return null;
    const secs = notAfterUnix - nowSecs();
    const days = Math.floor(secs / 86400);
    let words, cls;
    if (secs <= 0) {
      const late = Math.floor(-secs / 86400);
      words = late === 0 ? "expired today" : "expired " + late + (late === 1 ? " day ago" : " days ago");
      cls = "days-expired";
    } else {
      words = days === 0 ? "expires in less than a day" : "expires in " + days + (days === 1 ? " day" : " days");
      cls = days <= 7 ? "days-bad" : days <= 30 ? "days-warn" : "days-ok";
    }
    return el("span", { class: "badge " + cls, "data-days": days }, words);
  }

  function unixOf(rfc3339) {
    return rfc3339 ? Math.floor(Date.parse(rfc3339) / 1000) : null;
  }

  // ----- health in words ---------------------------------------------------------------------

  function healthWord(up) {
    if (!up.enabled) return "disabled";
    return (up.health && up.health.status) || "unknown";
  }

  function healthBadge(up) {
    const word = healthWord(up);
    return el("span", { class: "badge state-" + word, "data-health": word }, word);
  }

  // ----- API ---------------------------------------------------------------------------------

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) h["Authorization"] = "Bearer " + token;
    return h;
  }

  async function api(path, options) {
    const opts = Object.assign({ credentials: "same-origin", cache: "no-store" }, options || {});
    opts.headers = headers(opts.headers);
    const res = await fetch(path, opts);
    if (res.status === 204) return null;
    let body = null;
    const type = res.headers.get("content-type") || "";
    if (type.includes("json")) body = await res.json();
    if (!res.ok) {
      const why = body && body.error && body.error.message ? body.error.message : res.status + " " + res.statusText;
      const err = new Error(why);
      err.status = res.status;
      throw err;
    }
    return body;
  }

  function explain(err) {
    if (err.status === 401) return "The gateway asked for a token: paste an admin bearer token in the field above.";
    if (err.status === 403) return "This token is not an administrator's: the console needs the admin role.";
    return err.message;
  }

  // ----- live snapshots (SSE over fetch) -----------------------------------------------------

  let liveAbort = null;
  let retry = 1000;

  async function connectLive() {
    if (liveAbort) liveAbort.abort();
    const abort = new AbortController();
    liveAbort = abort;
    try {
      const res = await fetch("/ui/api/events", { headers: headers({ Accept: "text/event-stream" }), cache: "no-store", signal: abort.signal });
      if (!res.ok) {
        const err = new Error(res.status + " " + res.statusText);
        err.status = res.status;
        throw err;
      }
      live.textContent = "Live: connected.";
      retry = 1000;
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const frame = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          onFrame(frame);
        }
      }
      live.textContent = "Live: the stream ended; reconnecting…";
    } catch (err) {
      if (abort.signal.aborted) return;
      live.textContent = "Live: " + explain(err) + " Retrying…";
      if (err.status === 401 || err.status === 403) renderProblem(explain(err));
    }
    if (liveAbort !== abort) return;
    setTimeout(connectLive, retry);
    retry = Math.min(retry * 2, 15000);
  }

  function onFrame(frame) {
    let event = "message";
    const data = [];
    for (const line of frame.split("\n")) {
      if (line.startsWith(":")) continue;
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (event !== "snapshot" || !data.length) return;
    overview = JSON.parse(data.join("\n"));
    live.textContent = "Live: updated " + new Date().toLocaleTimeString() + ".";
    if (route.page !== "upstream") return render();
    // An upstream removed meanwhile (here or elsewhere) is not asked for again.
    if (overview.upstreams.some((u) => u.name === route.name)) refreshDetail();
    else if (route.name !== removing) show("Upstream " + route.name, el("p", { class: "notice", role: "alert" }, route.name + " is no longer registered."), el("p", null, el("a", { href: "#/overview" }, "Back to the overview")));
  }

  // ----- routing -----------------------------------------------------------------------------

  function parseRoute() {
    const hash = location.hash.replace(/^#\/?/, "");
    const [page, ...rest] = hash.split("/");
    if (page === "upstream" && rest.length) return { page: "upstream", name: decodeURIComponent(rest.join("/")) };
    if (page === "certificates" || page === "sessions") return { page };
    return { page: "overview" };
  }

  function onRoute() {
    route = parseRoute();
    detail = null;
    probeResult = null;
    confirming = null;
    for (const id of ["overview", "certificates", "sessions"]) {
      const link = document.getElementById("nav-" + id);
      if (route.page === id) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    if (route.page === "upstream") refreshDetail();
    else render();
    view.focus({ preventScroll: true });
  }

  // Re-rendering replaces the view; keyboard focus is put back on the control with the same id,
  // and a schema the reader opened stays open.
  function show(title, ...children) {
    const focused = document.activeElement && view.contains(document.activeElement) ? document.activeElement.id : null;
    const opened = new Set([...view.querySelectorAll("details[open]")].map((d) => d.dataset.key));
    document.title = title + " · mcpgw console";
    const parts = [el("h1", null, title), flash ? el("p", { class: "notice", role: "alert" }, flash) : null, children]
      .flat(Infinity)
      .filter((c) => c !== null && c !== undefined && c !== false);
    view.replaceChildren(...parts);
    flash = null;
    view.setAttribute("data-page", route.page);
    if (focused) {
      const again = document.getElementById(focused);
      if (again) again.focus({ preventScroll: true });
    }
    for (const d of view.querySelectorAll("details[data-key]")) if (opened.has(d.dataset.key)) d.open = true;
  }

  function renderProblem(message) {
    show("mcpgw console", el("p", { class: "notice", role: "alert", id: "problem" }, message));
  }

  function render() {
    if (route.page === "certificates") return renderCertificates();
    if (!overview) return show("Overview", el("p", { class: "muted" }, "Waiting for the first snapshot…"));
    if (route.page === "sessions") return renderSessions();
    return renderOverview();
  }

  // ----- overview ----------------------------------------------------------------------------

  function nearestClientExpiry() {
    let best = null;
    for (const up of overview.upstreams) {
      if (up.client_not_after !== null && up.client_not_after !== undefined && (best === null || up.client_not_after < best.at)) {
        best = { at: up.client_not_after, name: up.name };
      }
    }
    return best;
  }

  function renderOverview() {
    const serving = overview.status && overview.status.certificate;
    const nearest = nearestClientExpiry();
    const cards = el("div", { class: "cards" },
      el("section", { class: "card", "aria-labelledby": "card-serving" },
        el("h2", { id: "card-serving" }, "Serving certificate"),
        serving ? el("p", { id: "serving-expiry" }, expiry(serving.not_after_unix)) : el("p", { id: "serving-expiry" }, "plain HTTP: no certificate"),
        serving ? el("p", { class: "muted" }, "not after " + serving.not_after) : null),
      el("section", { class: "card", "aria-labelledby": "card-client" },
        el("h2", { id: "card-client" }, "Nearest upstream client certificate"),
        nearest ? el("p", { id: "client-expiry" }, expiry(nearest.at), " ", el("span", { class: "muted" }, "(" + nearest.name + ")")) : el("p", { id: "client-expiry" }, "no upstream presents a client certificate")),
      el("section", { class: "card", "aria-labelledby": "card-health" },
        el("h2", { id: "card-health" }, "Health checks"),
        el("p", null, "every " + overview.health_check.interval_s + " s; offline after " + overview.health_check.threshold + " failed in a row"),
        el("p", { class: "muted" }, "mcpgw " + overview.status.version + ", up " + Math.round(overview.status.uptime_s / 60) + " min")));
    const rows = overview.upstreams.map((up) => {
      const charts = Charts.traffic(up.traffic);
      const lastCheck = up.health.last_success && (!up.health.last_error || up.health.status === "online") ? up.health.last_success : up.health.since;
      return el("tr", { "data-upstream": up.name },
        el("th", { scope: "row" }, el("a", { href: "#/upstream/" + encodeURIComponent(up.name), class: "upstream-link", id: "link-" + up.name }, up.name)),
        el("td", { class: "health" }, healthBadge(up), up.health.consecutive_failures ? el("div", { class: "muted" }, up.health.consecutive_failures + " failed checks in a row") : null),
        el("td", { class: "transport" }, up.transport),
        el("td", { class: "era" }, text(up.era), up.protocol_version ? el("div", { class: "muted" }, up.protocol_version) : null),
        el("td", { class: "last-check" }, ago(lastCheck)),
        el("td", { class: "last-error" }, up.health.last_error ? el("span", { class: "error-text" }, up.health.last_error) : el("span", { class: "muted" }, "none")),
        el("td", null, charts.calls),
        el("td", null, charts.errors),
        el("td", null, charts.latency));
    });
    const table = overview.upstreams.length
      ? el("table", { id: "upstreams" },
          el("caption", { class: "muted" }, "Upstreams; charts cover the last 15 minutes in 10-second steps."),
          el("thead", null, el("tr", null, ["Upstream", "Health", "Transport", "Era", "Last check", "Last error", "Calls/s", "Errors", "Latency"].map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", null, rows))
      : el("p", null, "No upstream is registered. Add one with mcpgw gateway add NAME URL.");
    show("Overview", cards, el("h2", null, "Upstreams"), table);
  }

  // ----- upstream ----------------------------------------------------------------------------

  async function refreshDetail() {
    const name = route.name;
    try {
      const got = await api("/ui/api/upstreams/" + encodeURIComponent(name));
      if (route.page !== "upstream" || route.name !== name) return;
      detail = got;
      renderUpstream();
    } catch (err) {
      if (route.page !== "upstream" || route.name !== name) return;
      show("Upstream " + name, el("p", { class: "notice", role: "alert" }, explain(err)), el("p", null, el("a", { href: "#/overview" }, "Back to the overview")));
    }
  }

  function certList(list) {
    if (!list || !list.length) return el("span", { class: "muted" }, "none");
    return el("ul", null, list.map((c) => c.error
      ? el("li", { class: "error-text" }, c.error)
      : el("li", null, el("div", null, c.subject), el("div", { class: "muted" }, "SANs: " + (c.sans && c.sans.length ? c.sans.join(", ") : "none")), el("div", null, "not after " + c.not_after + " ", expiry(c.not_after_unix)))));
  }

  function renderTls(tls) {
    if (!tls.used) return el("p", { class: "muted" }, "No TLS: " + tls.reason + ".");
    if (tls.error) return el("p", { class: "error-text" }, tls.error);
    return el("dl", { class: "facts", id: "tls" },
      el("dt", null, "Trusted CA"), el("dd", null, tls.ca ? certList(tls.ca) : "the system trust store"),
      el("dt", null, "Client certificate"), el("dd", null, tls.client ? certList(tls.client) : "none presented"),
      el("dt", null, "Verified name"), el("dd", null, tls.server_name ? tls.server_name + " (override)" : "the URL's host"));
  }

  function renderCatalog(catalog) {
    const tools = catalog.tools.length
      ? el("table", { id: "tools" },
          el("thead", null, el("tr", null, el("th", { scope: "col" }, "Tool"), el("th", { scope: "col" }, "Description"), el("th", { scope: "col" }, "Input schema"))),
          el("tbody", null, catalog.tools.map((t) => el("tr", { class: "tool" },
            el("td", { class: "tool-name mono" }, text(t.name)),
            el("td", { class: "tool-description" }, text(t.description)),
            el("td", null, el("details", { "data-key": "schema:" + t.name }, el("summary", null, "schema"), el("pre", null, JSON.stringify(t.inputSchema || {}, null, 2))))))))
      : el("p", { class: "muted" }, "No tools.");
    const simple = (list, key, label) => list.length
      ? el("ul", null, list.map((p) => el("li", null, el("span", { class: "mono" }, text(p[key])), p.description ? " — " + p.description : "")))
      : el("p", { class: "muted" }, "No " + label + ".");
    return [el("h2", null, "Tools (" + catalog.tools.length + ")"), tools,
      el("h2", null, "Prompts (" + catalog.prompts.length + ")"), simple(catalog.prompts, "name", "prompts"),
      el("h2", null, "Resources (" + catalog.resources.length + ")"), simple(catalog.resources, "uri", "resources")];
  }

  function renderProbe() {
    if (!probeResult || probeResult.name !== route.name) return null;
    const r = probeResult.report;
    if (r.error) return el("section", { id: "probe-result", "aria-live": "polite" }, el("h2", null, "Probe"), el("p", { class: "error-text" }, r.error));
    return el("section", { id: "probe-result", "aria-live": "polite", "data-ok": r.ok ? "true" : "false" },
      el("h2", null, "Probe: " + (r.ok ? "every phase passed" : "failed at " + r.failure.phase)),
      el("ol", { class: "phases" }, r.phases.map((p) => el("li", { "data-phase": p.phase },
        el("span", { class: "mono" }, p.phase), " ",
        el("span", { class: p.ok ? "phase-ok" : "phase-failed" }, p.ok ? "ok" : "FAILED"), " ",
        el("span", { class: "muted" }, p.ms + " ms"), " ", p.summary,
        p.notes && p.notes.length ? el("ul", null, p.notes.map((n) => el("li", { class: "muted" }, n))) : null))),
      r.failure ? el("p", { class: "error-text" }, r.failure.diagnosis) : null);
  }

  async function runProbe(button) {
    const name = route.name;
    button.disabled = true;
    button.textContent = "Probing…";
    let report;
    try {
      report = await api("/ui/api/upstreams/" + encodeURIComponent(name) + "/probe", { method: "POST" });
    } catch (err) {
      report = { error: explain(err) };
    }
    probeResult = { name, report };
    if (route.page === "upstream" && route.name === name) renderUpstream();
  }

  async function setEnabled(enabled) {
    const name = route.name;
    try {
      await api("/ui/api/upstreams/" + encodeURIComponent(name) + "/enabled", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ enabled }) });
      flash = name + (enabled ? " is enabled." : " is disabled: calls to it are refused.");
    } catch (err) {
      flash = explain(err);
    }
    await refreshDetail();
  }

  async function remove() {
    const name = route.name;
    removing = name;
    try {
      await api("/gateways/" + encodeURIComponent(name), { method: "DELETE" });
      flash = name + " was removed.";
      location.hash = "#/overview";
    } catch (err) {
      flash = explain(err);
      confirming = null;
      renderUpstream();
    }
  }

  function renderUpstream() {
    const d = detail;
    const up = d.view;
    const actions = el("div", { class: "actions" },
      on(el("button", { type: "button", id: "action-probe" }, "Probe"), "click", (e) => runProbe(e.currentTarget)),
      on(el("button", { type: "button", id: "action-toggle", "data-enabled": up.enabled ? "true" : "false" }, up.enabled ? "Disable" : "Enable"), "click", () => setEnabled(!up.enabled)),
      on(el("button", { type: "button", id: "action-remove", class: "danger" }, "Remove…"), "click", () => { confirming = up.name; renderUpstream(); const yes = document.getElementById("confirm-remove"); if (yes) yes.focus(); }));
    const confirm = confirming === up.name
      ? el("section", { class: "confirm", role: "alertdialog", "aria-labelledby": "confirm-title" },
          el("p", { id: "confirm-title" }, "Remove " + up.name + "? Its registration is deleted and its sessions end. This cannot be undone from here."),
          on(el("button", { type: "button", id: "confirm-remove", class: "danger" }, "Yes, remove " + up.name), "click", remove), " ",
          on(el("button", { type: "button", id: "confirm-cancel" }, "Cancel"), "click", () => { confirming = null; renderUpstream(); document.getElementById("action-remove").focus(); }))
      : null;
    const server = up.server_info && typeof up.server_info === "object" ? [up.server_info.name, up.server_info.version].filter(Boolean).join(" ") : null;
    const facts = el("dl", { class: "facts", id: "facts" },
      el("dt", null, "Health"), el("dd", null, healthBadge(up), up.health.last_error ? el("div", { class: "error-text" }, "last error: " + up.health.last_error) : null),
      el("dt", null, "Since"), el("dd", null, text(up.health.since) + " (" + ago(up.health.since) + ")"),
      el("dt", null, "Last successful check"), el("dd", null, text(up.health.last_success)),
      el("dt", null, "Transport"), el("dd", null, up.transport),
      el("dt", null, up.command ? "Command" : "URL"), el("dd", { class: "mono" }, up.command ? [up.command.program].concat(up.command.args || []).join(" ") : up.url),
      el("dt", null, "Era"), el("dd", null, text(up.era) + (up.protocol_version ? " (" + up.protocol_version + ")" : "") + ", setting " + up.era_setting),
      el("dt", null, "Server"), el("dd", { id: "server-name" }, text(server)),
      el("dt", null, "Client sessions"), el("dd", null, String(up.client_sessions)),
      up.warnings.length ? [el("dt", null, "Warnings"), el("dd", { class: "error-text" }, up.warnings.join("; "))] : null);
    const charts = Charts.traffic(d.traffic);
    const errors = d.errors.length
      ? el("ol", { id: "recent-errors", reversed: true }, d.errors.slice().reverse().map((e) => el("li", null, el("span", { class: "muted" }, e.at + " "), el("span", { class: "error-text" }, e.error))))
      : el("p", { class: "muted", id: "recent-errors" }, "No failed health check recorded since the gateway started.");
    show("Upstream " + up.name,
      el("p", null, el("a", { href: "#/overview" }, "← Overview")),
      actions, confirm, renderProbe(), facts,
      el("h2", null, "Traffic, last 15 minutes"), el("div", { class: "actions" }, charts.calls, charts.errors, charts.latency),
      el("h2", null, "TLS identity"), renderTls(d.tls),
      renderCatalog(d.catalog),
      el("h2", null, "Recent errors"), errors);
  }

  // ----- certificates ------------------------------------------------------------------------

  async function renderCertificates() {
    let c;
    try {
      c = await api("/ui/api/certificates");
    } catch (err) {
      return show("Certificates", el("p", { class: "notice", role: "alert" }, explain(err)));
    }
    if (route.page !== "certificates") return;
    const s = c.serving;
    const serving = s
      ? el("dl", { class: "facts", id: "serving" },
          el("dt", null, "Subject"), el("dd", null, s.subject),
          el("dt", null, "Issuer"), el("dd", null, s.issuer),
          el("dt", null, "SHA-256"), el("dd", { class: "mono fingerprint", id: "serving-sha256" }, s.sha256),
          el("dt", null, "SANs"), el("dd", { id: "serving-sans" }, s.sans.length ? s.sans.join(", ") : "none"),
          el("dt", null, "Not before"), el("dd", null, s.not_before),
          el("dt", null, "Not after"), el("dd", null, s.not_after + " ", expiry(s.not_after_unix)),
          c.files ? [el("dt", null, "Files"), el("dd", { class: "mono" }, c.files.cert + " · " + c.files.key)] : null,
          c.reloads ? [el("dt", null, "Reloads"), el("dd", null, c.reloads.ok + " succeeded, " + c.reloads.failed + " refused")] : null)
      : el("p", null, "The listener serves plain HTTP: there is no serving certificate.");
    const history = c.history.length
      ? el("table", { id: "rotations" },
          el("thead", null, el("tr", null, ["When", "Trigger", "Outcome", "Certificate", "Upstream identities changed"].map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", null, c.history.slice().reverse().map((r) => el("tr", null,
            el("td", null, r.at), el("td", null, r.trigger),
            el("td", null, el("span", { class: "badge " + (r.outcome === "refused" ? "days-bad" : "days-ok") }, r.outcome)),
            el("td", { class: "mono fingerprint" }, r.outcome === "swapped" ? (r.old_sha256 === r.new_sha256 ? "the same certificate, re-read: " + r.new_sha256.slice(0, 16) + "…" : r.old_sha256.slice(0, 16) + "… → " + r.new_sha256.slice(0, 16) + "…") : r.reason ? el("span", { class: "error-text" }, r.reason) : "unchanged"),
            el("td", null, r.upstreams_changed.length ? r.upstreams_changed.join(", ") : "none")))))
      : el("p", { class: "muted", id: "rotations" }, "No reload since the gateway started.");
    const clients = c.upstream_clients.length
      ? el("table", { id: "client-certs" },
          el("thead", null, el("tr", null, ["Upstream", "Client certificate", "Expiry"].map((h) => el("th", { scope: "col" }, h)))),
          el("tbody", null, c.upstream_clients.map((u) => el("tr", null, el("td", null, u.upstream), el("td", null, text(u.subject)), el("td", null, expiry(u.not_after_unix))))))
      : el("p", { class: "muted" }, "No upstream presents a client certificate now.");
    show("Certificates", el("h2", null, "Serving certificate"), serving, el("h2", null, "Rotation history"), history, el("h2", null, "Upstream client certificates"), clients);
  }

  // ----- sessions ----------------------------------------------------------------------------

  function countTable(id, title, counts) {
    const entries = Object.entries(counts || {});
    return entries.length
      ? el("table", { id, class: "narrow" },
          el("thead", null, el("tr", null, el("th", { scope: "col" }, title), el("th", { scope: "col" }, "Open"))),
          el("tbody", null, entries.map(([k, v]) => el("tr", null, el("td", { class: "mono" }, k), el("td", { class: "num" }, String(v))))))
      : el("p", { class: "muted", id }, "None open.");
  }

  function renderSessions() {
    const s = overview.sessions;
    const transports = el("table", { id: "transports", class: "narrow" },
      el("thead", null, el("tr", null, el("th", { scope: "col" }, "Transport"), el("th", { scope: "col" }, "Open"))),
      el("tbody", null, s.transports.map((t) => el("tr", { "data-transport": t.transport }, el("td", null, t.transport), el("td", { class: "num" }, String(t.open))))));
    const upstreams = el("table", { id: "upstream-sessions", class: "narrow" },
      el("thead", null, el("tr", null, ["Upstream", "Open for clients", "Opened since start"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", null, s.upstream_sessions.map((u) => el("tr", null, el("td", null, u.upstream), el("td", { class: "num" }, String(u.open)), el("td", { class: "num" }, String(u.opened))))));
    show("Sessions",
      el("h2", null, "By transport"), transports,
      el("h2", null, "By principal, every transport"), countTable("by-principal", "Principal", s.by_principal),
      el("h2", null, "Streamable HTTP sessions by principal"), countTable("streamable-by-principal", "Principal", s.streamable_http),
      el("h2", null, "SSE streams by principal"), countTable("sse-by-principal", "Principal", s.sse),
      el("h2", null, "WebSocket sessions by principal"), countTable("websocket-by-principal", "Principal", s.websocket),
      el("h2", null, "Listen streams by principal"), countTable("listen-by-principal", "Principal", s.listen),
      el("h2", null, "Upstream sessions held for clients"), upstreams);
  }

  // ----- token form --------------------------------------------------------------------------

  on(document.getElementById("token-form"), "submit", (e) => {
    e.preventDefault();
    const input = document.getElementById("token-input");
    const token = input.value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    input.value = "";
    live.textContent = token ? "Token kept for this tab." : "No token entered.";
    connectLive();
    onRoute();
  });
  on(document.getElementById("token-forget"), "click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    live.textContent = "Token forgotten.";
    connectLive();
  });

  window.addEventListener("hashchange", onRoute);
  onRoute();
  connectLive();
})();
