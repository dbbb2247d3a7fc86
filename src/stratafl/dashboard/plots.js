// The four round-by-round plots, drawn with plotly.js from RoundRecords alone (so a live
// event that lacks a field costs nothing: the records are fetched again after each round).

// Okabe-Ito colours: told apart with every common kind of colour blindness.
const BLUE = "#0072B2";
const ORANGE = "#E69F00";
const GREEN = "#009E73";
const RED = "#D55E00";
const SKY = "#56B4E9";
const PURPLE = "#CC79A7";
const GREY = "#7f7f7f";
const PARTS = [BLUE, ORANGE, GREEN, PURPLE, SKY, RED];

const CONFIG = {
  displaylogo: false,
  responsive: true,
  modeBarButtonsToRemove: ["select2d", "lasso2d", "autoScale2d"],
};

function layout(yTitle, rounds, extra = {}) {
  const last = rounds.length ? rounds[rounds.length - 1].number : 1;
  return {
    margin: { l: 60, r: 60, t: 40, b: 45 },
    xaxis: { title: { text: "round" }, dtick: Math.max(1, Math.ceil(last / 12)), zeroline: false },
    yaxis: { title: { text: yTitle }, zeroline: false },
    legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom" },
    hovermode: "x unified",
    font: { family: "system-ui, sans-serif", size: 12 },
    ...extra,
  };
}

function line(name, x, y, color, more = {}) {
  return { type: "scatter", mode: "lines+markers", name, x, y, line: { color }, marker: { color }, ...more };
}

function draw(id, traces, plotLayout) {
  const element = document.getElementById(id);
  if (!globalThis.Plotly) {
    element.textContent = "plotly.js did not load: the plots cannot be drawn.";
    return;
  }
  globalThis.Plotly.react(element, traces, plotLayout, CONFIG);
}

const finished = (rounds) => rounds.filter((r) => r.status === "finished");
const number = (value) => (typeof value === "number" && Number.isFinite(value) ? value : null);

/** Mean, worst, 10th percentile (linear interpolation) and spread of some scores. */
export function spreadOf(scores) {
  if (!scores.length) return null;
  const ranked = [...scores].sort((a, b) => a - b);
  const position = (ranked.length - 1) * 0.1;
  const below = Math.floor(position);
  const above = Math.min(below + 1, ranked.length - 1);
  const p10 = ranked[below] + (ranked[above] - ranked[below]) * (position - below);
  const mean = ranked.reduce((sum, score) => sum + score, 0) / ranked.length;
  return { mean, worst: ranked[0], p10, spread: ranked[ranked.length - 1] - ranked[0] };
}

function accuracyPlot(rounds) {
  const done = finished(rounds);
  const scored = (metric) => done.filter((r) => number(r.validation?.[metric]) !== null);
  const accuracy = scored("accuracy");
  const loss = scored("loss");
  draw("accuracy-plot", [
    line("accuracy", accuracy.map((r) => r.number), accuracy.map((r) => r.validation.accuracy), BLUE),
    line("loss", loss.map((r) => r.number), loss.map((r) => r.validation.loss), ORANGE, {
      yaxis: "y2",
      line: { color: ORANGE, dash: "dot" },
    }),
  ], layout("accuracy", rounds, {
    yaxis2: { title: { text: "loss" }, overlaying: "y", side: "right", zeroline: false },
  }));
}

function fairnessPlot(rounds) {
  const points = [];
  for (const round of finished(rounds)) {
    const scores = Object.values(round.validation?.per_client || {})
      .map((metrics) => number(metrics?.accuracy))
      .filter((score) => score !== null);
    const spread = spreadOf(scores);
    if (spread) points.push({ round: round.number, ...spread });
  }
  const x = points.map((p) => p.round);
  draw("fairness-plot", [
    line("mean client", x, points.map((p) => p.mean), BLUE),
    line("10th percentile", x, points.map((p) => p.p10), GREEN),
    line("worst client", x, points.map((p) => p.worst), RED),
    line("spread (best − worst)", x, points.map((p) => p.spread), GREY, { line: { color: GREY, dash: "dot" } }),
  ], layout("client accuracy", rounds));
}

/** The named parts of each round's duration ("total" is the whole), and what is left. */
function durationPlot(rounds) {
  const names = [...new Set(rounds.flatMap((r) => Object.keys(r.timings || {})))]
    .filter((name) => name !== "total")
    .sort((a, b) => (a === "train" ? -1 : b === "train" ? 1 : a.localeCompare(b)));
  const x = rounds.map((r) => r.number);
  const parts = (round) => names.map((name) => number(round.timings?.[name]) ?? 0);
  const traces = names.map((name, i) => ({
    type: "bar", name, x, y: rounds.map((r) => parts(r)[i]), marker: { color: PARTS[i % PARTS.length] },
  }));
  traces.push({
    type: "bar",
    name: "other (validation, bookkeeping)",
    x,
    y: rounds.map((r) => Math.max(0, (number(r.duration) ?? 0) - parts(r).reduce((a, b) => a + b, 0))),
    marker: { color: "#c7ccd4" },
    customdata: rounds.map((r) => r.status),
    hovertemplate: "%{y:.3f} s (round %{customdata})<extra>other</extra>",
  });
  draw("duration-plot", traces, layout("seconds", rounds, { barmode: "stack" }));
}

function trafficPlot(rounds) {
  const x = rounds.map((r) => r.number);
  const links = [
    ["clients_up", "clients → combiners", BLUE],
    ["clients_down", "combiners → clients", SKY],
    ["combiners_up", "combiners → controller", ORANGE],
    ["combiners_down", "controller → combiners", PURPLE],
  ];
  const traces = links.map(([field, name, color]) => ({
    type: "bar", name, x, y: rounds.map((r) => number(r.traffic?.[field]) ?? 0), marker: { color },
  }));
  draw("traffic-plot", traces, layout("bytes", rounds, {
    barmode: "group",
    yaxis: { title: { text: "bytes" }, tickformat: "~s", ticksuffix: "B" },
  }));
}

/** Draw every plot from the session's rounds (oldest first). */
export function drawPlots(rounds) {
  accuracyPlot(rounds);
  fairnessPlot(rounds);
  durationPlot(rounds);
  trafficPlot(rounds);
}
