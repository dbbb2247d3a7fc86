// The page's tables and texts. Every value from the controller is set as textContent,
// never as HTML: an id or a reason a hostile peer chose is shown, never run.

const TRAIL_ROWS = 50;
const RECENT_OUTCOMES = 8;
const EVENT_ROWS = 40;
const OUTCOME_MARKS = { ok: "✓", rejected: "R", failed: "F", dropped: "D", timeout: "T", pending: "…" };
const LEFT_OUT_MARK = "L";

/** An outcome in words: its status, or "left out" for an update the rule did not use. */
function describe(outcome) {
  return outcome.status === "ok" && outcome.left_out ? "left out" : outcome.status;
}

const $ = (id) => document.getElementById(id);

function element(tag, text = "", className = "") {
  const node = document.createElement(tag);
  if (text !== "") node.textContent = text;
  if (className) node.className = className;
  return node;
}

function row(...cells) {
  const tr = document.createElement("tr");
  tr.append(...cells.map((cell) => (cell instanceof Node ? wrap(cell) : element("td", String(cell)))));
  return tr;
}

function wrap(node) {
  if (node.tagName === "TD") return node;
  const td = document.createElement("td");
  td.append(node);
  return td;
}

/** The class colouring a status word, made only of its letters. */
const stateClass = (status) => `state-${String(status).replace(/[^a-z_]/g, "")}`;

function state(status) {
  return element("td", String(status), stateClass(status));
}

function shortId(id) {
  if (!id) return element("td", "—");
  return element("td", id.length > 14 ? `${id.slice(0, 12)}…` : id, "id");
}

export function ago(seconds) {
  if (typeof seconds !== "number") return "—";
  const age = Math.max(0, Date.now() / 1000 - seconds);
  if (age < 90) return `${Math.round(age)} s ago`;
  if (age < 5400) return `${Math.round(age / 60)} min ago`;
  if (age < 86400 * 2) return `${Math.round(age / 3600)} h ago`;
  return new Date(seconds * 1000).toLocaleString();
}

export function size(bytes) {
  if (typeof bytes !== "number") return "—";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

const percent = (value) => (typeof value === "number" ? `${(100 * value).toFixed(1)} %` : "—");

/** The session picker, newest first. */
export function showPicker(sessions, selected) {
  const picker = $("session-picker");
  picker.replaceChildren(...sessions.map((s) => {
    const option = element("option", `${new Date(s.created_at * 1000).toLocaleString()} · ${s.status} · ${s.id}`);
    option.value = s.id;
    return option;
  }));
  picker.value = selected ?? "";
}

/** The session's status line, its progress and the promise check. */
export function showSession(session, rounds, stopping) {
  const status = $("session-status");
  const progress = $("session-progress");
  if (!session) {
    status.textContent = "No session yet: start one below.";
    progress.value = 0;
    $("session-progress-text").textContent = "";
    $("promise-table").hidden = true;
    return;
  }
  const planned = Number(session.config?.rounds) || Math.max(1, session.rounds_done);
  const failed = rounds.filter((r) => r.status === "failed").length;
  const parts = [`${session.status}`, session.reason ? `: ${session.reason}` : ""];
  status.replaceChildren(element("strong", parts.join(""), stateClass(session.status)));
  const when = session.finished_at ? `ended ${ago(session.finished_at)}` : `started ${ago(session.created_at)}`;
  if (stopping) status.append(" (stopping after the round in flight)");
  status.append(` — ${when}, seed model ${session.seed_model_id}`);
  progress.max = planned;
  progress.value = Math.min(session.rounds_done, planned);
  const failures = failed ? `, ${failed} failed round${failed > 1 ? "s" : ""} run again` : "";
  $("session-progress-text").textContent = `${session.rounds_done} of ${planned} rounds${failures}`;
  showPromise(session.promise);
}

function showPromise(promise) {
  const table = $("promise-table");
  table.hidden = !promise;
  if (!promise) return;
  const line = (label, value) => row(element("th", label), element("td", value, "number"));
  const gain = promise.federated_accuracy - promise.client_alone_best;
  const gap = promise.centralized_accuracy - promise.federated_accuracy;
  $("promise-rows").replaceChildren(
    line("Epochs budget", String(promise.epochs_budget)),
    line("Centralized (pooled data)", percent(promise.centralized_accuracy)),
    line("Federated", percent(promise.federated_accuracy)),
    line("Best client alone", percent(promise.client_alone_best)),
    line("Mean client alone", percent(promise.client_alone_mean)),
    line("Federated − best client alone", `${(100 * gain).toFixed(1)} points`),
    line("Centralized − federated", `${(100 * gap).toFixed(1)} points`),
  );
}

/** The session's models, newest first, each downloadable unless retention pruned it. */
export function showTrail(models, onDownload) {
  const newest = [...models].sort((a, b) => b.created_at - a.created_at).slice(0, TRAIL_ROWS);
  const rows = newest.map((model) => {
    const button = element("button", model.pruned_at ? "pruned" : "Download", "link");
    button.type = "button";
    button.disabled = Boolean(model.pruned_at);
    button.setAttribute("aria-label", `download model ${model.id}`);
    button.addEventListener("click", () => onDownload(model.id));
    const id = shortId(model.id);
    id.title = model.id;
    return row(
      element("td", model.round ?? "seed", "number"), id, shortId(model.parent_id),
      element("td", model.num_parameters.toLocaleString(), "number"),
      element("td", size(model.size_bytes), "number"), ago(model.created_at), button,
    );
  });
  if (models.length > newest.length) {
    const note = element("td", `… and ${models.length - newest.length} older models`);
    note.colSpan = 7;
    rows.push(row(note));
  }
  $("model-trail").tBodies[0].replaceChildren(...rows);
}

export function showCombiners(combiners) {
  const rows = combiners.map((c) => {
    const meter = element("meter");
    meter.max = Math.max(1, c.max_clients);
    meter.value = c.num_clients;
    const load = element("td", "", "number");
    load.append(meter, ` ${c.num_clients} / ${c.max_clients}`);
    return row(element("td", c.id, "id"), element("td", c.address, "id"), state(c.status), load,
      ago(c.last_heartbeat));
  });
  $("combiners-table").tBodies[0].replaceChildren(...rows);
}

/** Clients with their outcomes in the selected session's last rounds (oldest left). */
export function showClients(clients, rounds) {
  const recent = new Map();
  for (const round of rounds.slice(-RECENT_OUTCOMES)) {
    for (const outcome of round.outcomes || []) {
      if (!recent.has(outcome.client_id)) recent.set(outcome.client_id, []);
      recent.get(outcome.client_id).push({ round: round.number, ...outcome });
    }
  }
  const rows = clients.map((client) => {
    const outcomes = element("td", "", "outcomes");
    const mine = recent.get(client.id) || [];
    for (const o of mine) {
      // an accepted update the rule left out of the model is marked apart from one that counted
      const leftOut = o.status === "ok" && o.left_out;
      const mark = leftOut
        ? element("span", LEFT_OUT_MARK, "state-left-out")
        : element("span", OUTCOME_MARKS[o.status] || "?", stateClass(o.status));
      const why = leftOut ? o.left_out : o.reason;
      mark.title = `round ${o.round}: ${describe(o)}${why ? ` (${why})` : ""}`;
      outcomes.append(mark);
    }
    outcomes.setAttribute("aria-label", mine.map((o) => `round ${o.round} ${describe(o)}`).join(", ") || "none");
    return row(element("td", client.id, "id"), element("td", client.combiner_id || "—", "id"),
      state(client.status), ago(client.last_seen), outcomes);
  });
  $("clients-table").tBodies[0].replaceChildren(...rows);
}

/** The newest events first; `events` maps event id to EventRecord. */
export function showEvents(events) {
  const newest = [...events.values()].sort((a, b) => b.id - a.id).slice(0, EVENT_ROWS);
  $("event-log").replaceChildren(...newest.map((event) => {
    const item = element("li");
    const time = element("time", new Date(event.time * 1000).toLocaleTimeString());
    time.dateTime = new Date(event.time * 1000).toISOString();
    item.append(time, element("span", event.kind, "kind"), `${event.source}: ${event.message}`);
    return item;
  }));
}
