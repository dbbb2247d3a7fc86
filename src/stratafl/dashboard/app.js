// The dashboard's state and wiring: which session is shown, how it is kept live (the
// session's event stream, or polling every 2 s where the controller has none), and the
// admin's actions (start, stop, cancel, download).

import { ApiError, downloadModel, forgetToken, get, pages, post, quote, setToken, token } from "./api.js";
import {
  showClients, showCombiners, showEvents, showPicker, showSession, showTrail,
} from "./panels.js";
import { drawPlots } from "./plots.js";
import { SESSION_END, follow } from "./stream.js";

const POLL_MS = 2000;
const FEDERATION_MS = 5000;
const EVENT_PAGES = 5;
const EVENTS_KEPT = 200;
const REFRESH_KINDS = new Set(["session_started", "round_finished", "round_failed", ...SESSION_END]);

const state = {
  sessions: [],
  selected: null, // the session shown
  pinned: false, // the user picked an older session: a newer one does not take its place
  stopping: null, // the session asked to stop, until it ends
  session: null,
  rounds: [],
  models: [],
  clients: [],
  events: new Map(),
  follower: null, // aborts the event stream
  poller: null,
  mode: "idle", // "live" (stream), "polling" or "idle" (nothing running)
  generation: 0, // bumped at each selection: answers for an older one are dropped
};

const $ = (id) => document.getElementById(id);

function showConnection() {
  const modes = {
    live: "Connected · live (event stream)",
    polling: "Connected · polling every 2 s (this controller has no event stream)",
    idle: "Connected",
  };
  const insecure = token() ? "" : " · no token needed (the controller runs --insecure)";
  $("connection").textContent = modes[state.mode] + insecure;
  $("connection").className = "connection ok";
}

function showToken() {
  $("token-input").placeholder = token() ? "in use: paste another to replace" : "paste the admin token";
  $("token-forget").disabled = !token();
}

function report(error) {
  const node = $("connection");
  node.className = "connection bad";
  if (error instanceof ApiError && error.status === 401) {
    node.textContent = token()
      ? `The token was refused (${error.message}); paste a valid admin token.`
      : "This controller needs the admin token: paste it above.";
  } else if (error instanceof ApiError && error.status === 403) {
    node.textContent = `This token may not do that: ${error.message}`;
  } else {
    node.textContent = `Not connected: ${error.message}`;
  }
}

function render() {
  const running = state.session?.status === "running";
  showSession(state.session, state.rounds, running && state.stopping === state.selected);
  drawPlots(state.rounds);
  showTrail(state.models, download);
  showClients(state.clients, state.rounds);
  $("stop-session").disabled = !running || state.stopping === state.selected;
  $("cancel-session").disabled = !running;
}

/** Fetch the shown session, its rounds and models (and its events, unless they stream). */
async function refreshSelected() {
  const id = state.selected;
  const generation = state.generation;
  if (!id) return;
  const [session, rounds, models, events] = await Promise.all([
    get(`/api/v1/sessions/${quote(id)}`),
    pages(`/api/v1/sessions/${quote(id)}/rounds`),
    pages(`/api/v1/models?session_id=${quote(id)}`),
    state.mode === "live" ? [] : pages(`/api/v1/events?session_id=${quote(id)}`, EVENT_PAGES),
  ]);
  const seed = models.some((m) => m.id === session.seed_model_id)
    ? null
    : await get(`/api/v1/models/${quote(session.seed_model_id)}`).catch(() => null);
  if (generation !== state.generation) return;
  state.session = session;
  state.rounds = rounds.sort((a, b) => a.number - b.number);
  state.models = seed ? [seed, ...models] : models;
  noteEvents(events.filter((e) => e.session_id === undefined || e.session_id === id));
  if (session.status !== "running") stopFollowing();
  render();
}

let refreshing = null;
let again = false;

/** Fetch the shown session again: one fetch at a time, one more if asked meanwhile. */
function scheduleRefresh() {
  if (refreshing) {
    again = true;
    return;
  }
  refreshing = refreshSelected()
    .catch(report)
    .finally(() => {
      refreshing = null;
      if (again) {
        again = false;
        scheduleRefresh();
      }
    });
}

function stopFollowing() {
  state.follower?.abort();
  state.follower = null;
  clearInterval(state.poller);
  state.poller = null;
  state.mode = "idle";
}

function startPolling() {
  state.mode = "polling";
  state.poller = setInterval(scheduleRefresh, POLL_MS);
  showConnection();
}

function startFollowing() {
  const follower = new AbortController();
  state.follower = follower;
  const seen = [...state.events.keys()];
  follow(state.selected, {
    after: seen.length ? Math.max(...seen) : null,
    signal: follower.signal,
    onOpen: () => {
      state.mode = "live";
      showConnection();
    },
    onEvent: ({ kind, record }) => {
      noteEvents([record]);
      if (REFRESH_KINDS.has(kind)) scheduleRefresh();
    },
  }).then(
    (outcome) => {
      if (follower.signal.aborted) return;
      state.follower = null;
      if (outcome === "missing") startPolling();
      else scheduleRefresh();
    },
    (error) => {
      if (follower.signal.aborted) return;
      state.follower = null; // followed again at the next tick that can (a new token, say)
      report(error);
    },
  );
}

async function select(id) {
  stopFollowing();
  state.generation += 1;
  state.selected = id;
  state.session = null;
  state.rounds = [];
  state.models = [];
  state.events = new Map();
  showEvents(state.events);
  $("session-picker").value = id ?? "";
  render();
  if (!id) return;
  await refreshSelected();
  if (state.session?.status === "running" && state.selected === id) startFollowing();
}

let eventsShown = true;

/** Keep the newest events (a bounded map) and redraw their list soon, once. */
function noteEvents(events) {
  for (const event of events) {
    if (typeof event.id === "number") state.events.set(event.id, event);
  }
  if (state.events.size > 2 * EVENTS_KEPT) {
    const newest = [...state.events.keys()].sort((a, b) => b - a).slice(0, EVENTS_KEPT);
    state.events = new Map(newest.map((id) => [id, state.events.get(id)]));
  }
  if (eventsShown) {
    eventsShown = false;
    setTimeout(() => {
      eventsShown = true;
      showEvents(state.events);
    }, 100);
  }
}

async function refreshFederation() {
  const [sessions, combiners, clients] = await Promise.all([
    pages("/api/v1/sessions"),
    pages("/api/v1/combiners"),
    pages("/api/v1/clients"),
  ]);
  state.sessions = sessions.sort((a, b) => b.created_at - a.created_at);
  state.clients = clients;
  showCombiners(combiners);
  showPicker(state.sessions, state.selected);
  const newest = state.sessions[0]?.id ?? null;
  const known = state.sessions.some((s) => s.id === state.selected);
  if (!known || (!state.pinned && newest !== state.selected)) {
    await select(newest);
  } else {
    if (state.session?.status === "running" && !state.follower && !state.poller) startFollowing();
    render();
  }
  if (!state.follower && !state.poller) state.mode = "idle";
  showConnection();
}

let ticking = false;

async function tick() {
  if (ticking) return;
  ticking = true;
  try {
    await refreshFederation();
  } catch (error) {
    report(error);
  } finally {
    ticking = false;
  }
}

function download(modelId) {
  $("action-error").textContent = "";
  downloadModel(modelId).catch((error) => {
    $("action-error").textContent = `Could not download model ${modelId}: ${error.message}`;
  });
}

async function act(verb) {
  const id = state.selected;
  $("action-error").textContent = "";
  try {
    state.session = await post(`/api/v1/sessions/${quote(id)}/${verb}`);
    if (verb === "stop") state.stopping = id;
    render();
    scheduleRefresh();
  } catch (error) {
    $("action-error").textContent = `Could not ${verb} the session: ${error.message}`;
  }
}

async function startSession(event) {
  event.preventDefault();
  $("start-error").textContent = "";
  const config = {
    rounds: Number($("start-rounds").value),
    min_clients: Number($("start-min-clients").value),
    aggregator: $("start-aggregator").value.trim(),
  };
  try {
    const session = await post("/api/v1/sessions", config);
    state.pinned = false;
    await select(session.id);
    await tick();
  } catch (error) {
    $("start-error").textContent = `The session was not started: ${error.message}`;
  }
}

function wire() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    setToken($("token-input").value);
    $("token-input").value = "";
    showToken();
    tick();
  });
  $("token-forget").addEventListener("click", () => {
    forgetToken();
    showToken();
    state.sessions = [];
    state.clients = [];
    showPicker(state.sessions, null);
    showCombiners([]);
    select(null).then(tick);
  });
  $("session-picker").addEventListener("change", (event) => {
    state.pinned = event.target.value !== state.sessions[0]?.id;
    select(event.target.value).catch(report);
  });
  $("stop-session").addEventListener("click", () => act("stop"));
  $("cancel-session").addEventListener("click", () => act("cancel"));
  $("start-form").addEventListener("submit", startSession);
}

wire();
showToken();
tick();
setInterval(tick, FEDERATION_MS);
