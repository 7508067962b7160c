// The operator's console: plain JavaScript, no framework, nothing fetched from elsewhere.
//
// Everything shown is built with createElement and textContent, never parsed as markup: provider text
// (errors, references, event types) is untrusted. The API key lives in sessionStorage (this tab
// only) and leaves the page only in the Authorization header of requests to this host.
"use strict";

(function () {
  const STORE = "gatehouse.console.key";
  const PAGE_SIZE = 25;
  const STATES = ["", "sending", "pending", "unknown", "needs_operator", "succeeded", "failed"];
  let whoami = null;

  // --- DOM helpers: every text goes through a text node. ---
  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "onclick" || name === "onsubmit") node.addEventListener(name.slice(2), value);
      else if (name === "className") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const $ = (id) => document.getElementById(id);
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function table(headers, rows, id) {
    return el("table", { id },
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
      el("tbody", {}, rows));
  }
  function stateText(state) { return el("span", { className: "state state-" + state }, state); }
  function time(unix) {
    if (unix === null || unix === undefined) return "";
    return new Date(unix * 1000).toISOString().replace(".000Z", "Z");
  }
  function money(amount) {
    if (!amount) return "";
    return amount.minor_units + " " + amount.currency + " (minor units)";
  }
  function can(scope) { return whoami && whoami.scopes.indexOf(scope) >= 0; }

  // --- The API: the key only in the Authorization header. ---
  async function api(method, path, body) {
    const key = sessionStorage.getItem(STORE);
    const options = { method, headers: { Authorization: "Bearer " + key }, cache: "no-store",
                      credentials: "omit", redirect: "error" };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    let json = null;
    try { json = await response.json(); } catch (_) { json = null; }
    if (!response.ok) {
      const error = new Error(json && json.error ? json.error.code + ": " + json.error.message
                                                 : "HTTP " + response.status);
      error.status = response.status;
      error.code = json && json.error ? json.error.code : null;
      throw error;
    }
    return json;
  }

  function showMessage(text) {
    const message = $("message");
    message.textContent = text || "";
    message.hidden = !text;
  }

  async function guarded(work) {
    showMessage("");
    try { await work(); } catch (error) { showMessage(error.message); }
  }

  // --- Signing in and out. ---
  async function signIn(key) {
    sessionStorage.setItem(STORE, key);
    try {
      whoami = await api("GET", "/v1/whoami");
    } catch (error) {
      sessionStorage.removeItem(STORE);
      whoami = null;
      $("sign-in-error").textContent = error.message;
      return;
    }
    $("sign-in").hidden = true;
    $("key").value = "";
    $("sign-in-error").textContent = "";
    $("nav").hidden = false;
    $("who").hidden = false;
    $("who-name").textContent = whoami.name;
    let reach = whoami.unlimited ? "every account"
      : whoami.providers.concat(whoami.accounts).join(", ");
    $("who-scopes").textContent = "scopes: " + whoami.scopes.join(", ") + " · " + reach;
    route();
  }

  function signOut() {
    sessionStorage.removeItem(STORE);
    whoami = null;
    $("nav").hidden = true;
    $("who").hidden = true;
    $("sign-in").hidden = false;
    clear($("page"));
    showMessage("");
  }

  // --- Pages, chosen by the location's hash (never carrying the key). ---
  function route() {
    if (!whoami) return;
    const hash = location.hash.replace(/^#/, "");
    const [page, argument] = hash.split("/");
    for (const button of document.querySelectorAll("nav button")) {
      button.classList.toggle("current", button.dataset.page === (page || "plugins"));
    }
    const pages = { plugins: pluginsPage, accounts: accountsPage, ledger: ledgerPage,
                    entry: () => entryPage(decodeURIComponent(argument || "")), events: eventsPage,
                    fleet: fleetPage };
    guarded(() => (pages[page] || pluginsPage)());
  }

  function page(title, id, ...content) {
    const section = $("page");
    clear(section);
    section.appendChild(el("div", { id }, el("h2", {}, title), content));
  }

  async function pluginsPage() {
    const answer = await api("GET", "/v1/plugins");
    const rows = answer.plugins.map((plugin) => el("tr", { className: "plugin" },
      el("td", { className: "provider" }, plugin.provider),
      el("td", {}, plugin.display_name),
      el("td", { className: "mono" }, plugin.plugin_version),
      el("td", { className: "mono" }, plugin.contract_version),
      el("td", {}, plugin.operations.join(", ")),
      el("td", {}, time(plugin.loaded_at_unix)),
      el("td", { className: "mono" }, plugin.signed_by || "")));
    const failures = answer.load_errors.map((failure) => el("tr", { className: "load-error" },
      el("td", { className: "mono" }, failure.file), el("td", {}, failure.error)));
    page("Plugins", "plugins-page",
      table(["Provider", "Name", "Version", "Contract", "Operations", "Loaded", "Signed by"], rows,
            "plugins-table"),
      el("h3", {}, "Load errors and refusals"),
      failures.length ? table(["File", "Why"], failures, "load-errors")
                      : el("p", { className: "muted", id: "no-load-errors" }, "None: every file loaded."),
      answer.config_error ? el("p", { className: "error", id: "config-error" },
                               "plugins.toml refused (the previous one serves): " + answer.config_error)
                          : null);
  }

  async function accountsPage() {
    const answer = await api("GET", "/v1/plugins");
    const rows = answer.paused_accounts.map((pause) => el("tr", { className: "paused" },
      el("td", { className: "account" }, pause.provider + "/" + pause.account),
      el("td", {}, pause.reason),
      el("td", {}, time(pause.until_unix)),
      el("td", {}, can("operate") ? el("button", {
        type: "button", className: "action resume",
        "data-account": pause.provider + "/" + pause.account,
        onclick: () => guarded(async () => {
          await api("POST", "/v1/" + encodeURIComponent(pause.provider) + "/" +
                    encodeURIComponent(pause.account) + "/resume", {});
          await accountsPage();
        }),
      }, "Resume") : "")));
    page("Accounts", "accounts-page",
      el("p", { className: "muted" },
         "Accounts the host paused after the provider refused their credentials or limited their rate."),
      rows.length ? table(["Account", "Why paused", "Until", ""], rows, "paused-table")
                  : el("p", { id: "no-paused", className: "muted" }, "No account is paused."));
  }

  const ledgerFilters = { provider: "", account: "", state: "", from: "", to: "" };
  let ledgerCursors = [];

  async function ledgerPage() {
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    for (const name of ["provider", "account", "state"]) {
      if (ledgerFilters[name]) query.set(name, ledgerFilters[name]);
    }
    if (ledgerFilters.from) query.set("created_after", new Date(ledgerFilters.from).toISOString().replace(".000Z", "Z"));
    if (ledgerFilters.to) query.set("created_before", new Date(ledgerFilters.to).toISOString().replace(".000Z", "Z"));
    const cursor = ledgerCursors[ledgerCursors.length - 1];
    if (cursor) query.set("starting_after", cursor);
    const answer = await api("GET", "/v1/ledger?" + query.toString());
    const input = (name, label, type) => el("label", {}, label,
      el("input", { id: "filter-" + name, name, type: type || "text", value: ledgerFilters[name] }));
    const stateSelect = el("select", { id: "filter-state", name: "state" },
      STATES.map((state) => el("option", { value: state, selected: state === ledgerFilters.state },
                               state || "any state")));
    const filters = el("form", { className: "filters", id: "ledger-filters", onsubmit: (event) => {
      event.preventDefault();
      for (const name of Object.keys(ledgerFilters)) ledgerFilters[name] = $("filter-" + name).value;
      ledgerCursors = [];
      guarded(ledgerPage);
    } },
      input("provider", "Provider"), input("account", "Account"),
      el("label", {}, "State", stateSelect),
      input("from", "Created from", "datetime-local"), input("to", "Created before", "datetime-local"),
      el("button", { type: "submit", className: "action", id: "apply-filters" }, "Apply"));
    const rows = answer.entries.map((entry) => el("tr", { className: "entry", "data-id": entry.id },
      el("td", {}, el("button", { type: "button", className: "link open-entry",
                                  onclick: () => { location.hash = "entry/" + encodeURIComponent(entry.id); } },
                      entry.id)),
      el("td", {}, time(entry.created_at_unix)),
      el("td", {}, entry.provider + "/" + entry.account),
      el("td", {}, entry.operation),
      el("td", {}, money(entry.amount)),
      el("td", {}, stateText(entry.state)),
      el("td", {}, entry.actor || "")));
    const pager = el("div", { className: "pager" },
      ledgerCursors.length ? el("button", { type: "button", id: "first-page",
        onclick: () => { ledgerCursors = []; guarded(ledgerPage); } }, "First page") : null,
      answer.has_more && answer.entries.length ? el("button", { type: "button", id: "next-page",
        onclick: () => { ledgerCursors.push(answer.entries[answer.entries.length - 1].id); guarded(ledgerPage); } },
        "Next page") : null);
    page("Ledger", "ledger-page", filters,
      rows.length ? table(["Entry", "Created", "Account", "Operation", "Amount", "State", "Asked by"], rows, "ledger-table")
                  : el("p", { className: "muted", id: "no-entries" }, "No entry matches."),
      pager);
  }

  async function entryPage(id) {
    const answer = await api("GET", "/v1/ledger/" + encodeURIComponent(id));
    const entry = answer.entry;
    const field = (name, value) => [el("dt", {}, name), el("dd", {}, value)];
    const details = el("dl", { className: "entry", id: "entry-details" },
      field("Entry", el("span", { className: "mono", id: "entry-id" }, entry.id)),
      field("State", el("span", { id: "entry-state" }, stateText(entry.state))),
      field("Account", entry.provider + "/" + entry.account),
      field("Operation", entry.operation),
      field("Amount", money(entry.amount)),
      field("Description", el("span", { id: "entry-description" },
                              (entry.command && entry.command.description) || "")),
      field("Provider reference", el("span", { className: "mono", id: "entry-provider-reference" },
                                     entry.provider_reference || "")),
      field("Idempotency key", el("span", { className: "mono" }, entry.idempotency_key || "")),
      field("Asked by", entry.actor || ""),
      field("Created", time(entry.created_at_unix)),
      field("Updated", time(entry.updated_at_unix)),
      entry.refusal ? field("Refused", entry.refusal.code + ": " + entry.refusal.message) : [],
      entry.outcome && entry.outcome.error
        ? field("Provider said", entry.outcome.error.kind + ": " + entry.outcome.error.message) : []);
    const reason = answer.needs_operator
      ? el("div", { className: "reason", id: "operator-reason" },
           el("strong", {}, "Needs an operator: "), answer.needs_operator.reason) : null;
    const history = answer.history.map((event) => el("tr", { className: "history-event" },
      el("td", {}, time(event.at_unix)), el("td", {}, stateText(event.state)),
      el("td", { className: "detail" }, event.detail), el("td", { className: "actor" }, event.actor || "")));
    const settleable = ["needs_operator", "unknown", "pending"].indexOf(entry.state) >= 0;
    let actions = null;
    if (can("operate") && settleable) {
      actions = el("form", { className: "settle", id: "settle-form", onsubmit: (event) => {
        event.preventDefault();
        guarded(async () => {
          const body = { state: $("settle-state").value, reason: $("settle-reason").value };
          const reference = $("settle-reference").value.trim();
          if (reference) body.provider_reference = reference;
          await api("POST", "/v1/ledger/" + encodeURIComponent(entry.id) + "/settle", body);
          await entryPage(entry.id);
        });
      } },
        el("label", {}, "Settle as", el("select", { id: "settle-state" },
          el("option", { value: "succeeded" }, "succeeded"), el("option", { value: "failed" }, "failed"))),
        el("label", {}, "Provider reference (if known)", el("input", { id: "settle-reference", type: "text" })),
        el("label", {}, "Reason (what you saw)", el("textarea", { id: "settle-reason", required: true })),
        el("button", { type: "submit", className: "action", id: "settle" }, "Settle"),
        el("button", { type: "button", id: "reconcile", onclick: () => guarded(async () => {
          await api("POST", "/v1/ledger/" + encodeURIComponent(entry.id) + "/reconcile", {});
          await entryPage(entry.id);
        }) }, "Ask the provider again"));
    }
    page("Ledger entry", "entry-page",
      el("p", {}, el("button", { type: "button", className: "link", id: "back-to-ledger",
                                 onclick: () => { location.hash = "ledger"; } }, "← ledger")),
      details, reason, actions,
      el("h3", {}, "History"),
      table(["At", "State", "What happened", "By"], history, "history-table"));
  }

  let eventCursors = [];

  async function eventsPage() {
    const cursor = eventCursors[eventCursors.length - 1];
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (cursor !== undefined) query.set("starting_after", String(cursor));
    const [answer, forwarder] = await Promise.all([
      api("GET", "/v1/events?" + query.toString()), api("GET", "/v1/events/forwarder")]);
    const rows = answer.events.map((stored) => el("tr", { className: "event" },
      el("td", { className: "mono" }, String(stored.sequence)),
      el("td", {}, time(stored.received_at_unix)),
      el("td", {}, stored.provider + "/" + stored.account),
      el("td", {}, stored.event.event_type),
      el("td", { className: "mono" }, stored.event.event_id),
      el("td", {}, stored.event.status),
      el("td", { className: "mono" }, stored.event.reference || stored.event.provider_reference || "")));
    const position = el("p", { id: "forwarder" },
      forwarder.configured
        ? "Forwarder: delivered through event #" + forwarder.position + ", " + forwarder.waiting +
          (forwarder.waiting_capped ? " or more" : "") + " waiting."
        : "Forwarder: not configured (webhooks.forward_url); events are stored only.");
    const pager = el("div", { className: "pager" },
      eventCursors.length ? el("button", { type: "button", id: "events-first-page",
        onclick: () => { eventCursors = []; guarded(eventsPage); } }, "First page") : null,
      answer.has_more && answer.events.length ? el("button", { type: "button", id: "events-next-page",
        onclick: () => { eventCursors.push(answer.events[answer.events.length - 1].sequence); guarded(eventsPage); } },
        "Next page") : null);
    page("Webhook events", "events-page", position,
      rows.length ? table(["#", "Received", "Account", "Type", "Event id", "Status", "Reference"], rows, "events-table")
                  : el("p", { className: "muted", id: "no-events" }, "No event stored yet."),
      pager);
  }

  // The hosts sharing the ledger (just this one on SQLite), live or gone, and which version of
  // each plugin each serves: a rolling deploy shows here host by host.
  async function fleetPage() {
    const answer = await api("GET", "/v1/fleet");
    const rows = answer.hosts.map((host) => el("tr", { className: "fleet-host host-" + host.state },
      el("td", { className: "mono instance" }, host.instance_id + (host.this_host ? " (this host)" : "")),
      el("td", { className: "mono" }, host.listen_address),
      el("td", { className: "mono" }, host.version),
      el("td", { className: "host-state" }, stateText(host.state)),
      el("td", {}, time(host.started_at_unix)),
      el("td", {}, time(host.heartbeat_at_unix)),
      el("td", { className: "mono host-plugins" }, host.plugins.map((plugin) =>
        plugin.provider + " " + plugin.version + " (" + plugin.sha256.slice(0, 12) + ")").join(", "))));
    const versions = answer.versions.map((row) => el("tr", { className: "fleet-version" },
      el("td", { className: "provider" }, row.provider),
      el("td", { className: "mono" }, row.version),
      el("td", { className: "mono" }, row.sha256.slice(0, 12)),
      el("td", { className: "mono" }, String(row.instances.length))));
    page("Fleet", "fleet-page",
      el("p", { id: "fleet-shared" }, answer.shared
        ? "Hosts sharing this PostgreSQL ledger; a host whose heartbeat stopped shows as gone."
        : "The ledger is a SQLite file: this host alone."),
      table(["Instance", "Listen", "Gatehouse", "State", "Started", "Heartbeat", "Plugins"], rows, "fleet-table"),
      el("h3", {}, "Plugin versions served"),
      table(["Provider", "Version", "SHA-256", "Live hosts"], versions, "fleet-versions"));
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("sign-in").addEventListener("submit", (event) => {
      event.preventDefault();
      signIn($("key").value.trim());
    });
    $("sign-out").addEventListener("click", signOut);
    for (const button of document.querySelectorAll("nav button")) {
      button.addEventListener("click", () => {
        if (location.hash === "#" + button.dataset.page) route();
        else location.hash = button.dataset.page;
      });
    }
    window.addEventListener("hashchange", route);
    const key = sessionStorage.getItem(STORE);
    if (key) signIn(key);
  });
})();
