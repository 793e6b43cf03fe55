// qgjob dashboard: runs, one run, a job, the device timeline, devices.
// Each view reads its JSON route (/dashboard/..., /jobs/...) and reads it again whenever
// /dashboard/changes says the projections moved on. Views are addressed by the URL's
// fragment (#/runs/ID, #/jobs/ID, #/timeline?window=3600, #/devices), so links can be
// shared; ?org= (local mode) is kept. Text is always inserted as text, never as markup.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const ENDED = ["passed", "failed", "error", "cancelled", "timed_out"];
const SEGMENTS = ["passed", "failed", "error", "timed_out", "cancelled", "running",
                  "assigned", "retrying"];
const OUTCOMES = ["install", "running", "passed", "failed", "error", "retried",
                  "handed_back", "lease_expired", "cancelled", "timed_out"];
const WINDOWS = [["15 min", 900], ["1 h", 3600], ["6 h", 21600], ["24 h", 86400]];
const org = new URLSearchParams(location.search).get("org");

// ---- plumbing ------------------------------------------------------------------------

function adoptTokenFromLink() {
  // A link may carry ?token= in its fragment (never sent to the server): keep it in this
  // browser and take it out of the address, so the address can be shared.
  const [path, query] = location.hash.split("?");
  const params = new URLSearchParams(query || "");
  const token = params.get("token");
  if (!token) return;
  localStorage.setItem("qgjob-token", token);
  params.delete("token");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + location.search + path + (rest ? "?" + rest : ""));
}

function headers() {
  const token = localStorage.getItem("qgjob-token");
  return token ? { "Authorization": "Bearer " + token } : {};
}

function withOrg(path) {
  if (!org) return path;
  return path + (path.includes("?") ? "&" : "?") + "org=" + encodeURIComponent(org);
}

class Unauthorized extends Error {}

async function getJson(path) {
  const response = await fetch(withOrg(path), { headers: headers() });
  if (response.status === 401) throw new Unauthorized();
  if (response.status === 404) return null;
  if (!response.ok) throw new Error("HTTP " + response.status + " from " + path);
  return response.json();
}

function el(tag, attributes, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value !== null && value !== undefined && value !== false) element.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

function svg(tag, attributes, ...children) {
  const element = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value !== null && value !== undefined) element.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined) element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

function table(columns, rows, emptyText, id) {
  const head = el("tr", {}, columns.map(([title, , className]) =>
    el("th", { class: className === "num" ? "num" : null }, title)));
  const body = el("tbody");
  if (rows.length === 0) {
    body.append(el("tr", {}, el("td", { class: "empty", colspan: columns.length }, emptyText)));
  }
  for (const row of rows) {
    body.append(el("tr", {}, columns.map(([, render, className]) => el("td", { class: className }, render(row)))));
  }
  return el("table", { id }, el("thead", {}, head), body);
}

function seconds(value) {
  if (value === null || value === undefined) return "";
  if (value < 60) return value.toFixed(1) + " s";
  const minutes = Math.floor(value / 60);
  if (minutes < 60) return minutes + " m " + Math.round(value % 60) + " s";
  return Math.floor(minutes / 60) + " h " + (minutes % 60) + " m";
}

function since(start, end) {
  if (!start) return null;
  return ((end ? Date.parse(end) : Date.now()) - Date.parse(start)) / 1000;
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "";
}

function time(iso) {
  return iso ? new Date(iso).toLocaleTimeString() : "";
}

function short(id) {
  return id ? String(id).slice(0, 8) : "";
}

function status(value) {
  return el("span", { class: "status " + value }, value);
}

function profile(job) {
  return [job.target, job.platform, job.device, job.os_version].filter(Boolean).join(" · ");
}

function progressBar(counts, total, big) {
  const bar = el("div", { class: "progress" + (big ? " big" : ""), role: "img" });
  const labels = [];
  for (const name of SEGMENTS) {
    const n = counts[name] || 0;
    if (!n) continue;
    bar.append(el("span", { class: "seg-" + name, style: "width:" + (100 * n / total) + "%", title: n + " " + name }));
    labels.push(n + " " + name);
  }
  bar.setAttribute("aria-label", labels.join(", ") || "nothing yet");
  return bar;
}

function ended(counts) {
  return ENDED.reduce((sum, name) => sum + (counts[name] || 0), 0);
}

function percent(share) {
  return Math.floor(share * 100) + " %";
}

// ---- the device timeline (SVG) ----------------------------------------------------------

// The chart spans the window, or only its part with activity when *fit* is set.
function timelineChart(data, width, fit) {
  const end = Date.parse(data.until);
  const starts = data.bars.map((bar) => Date.parse(bar.start));
  const first = fit && starts.length ? Math.min(...starts) : Date.parse(data.since);
  const start = Math.max(Date.parse(data.since), first - (end - first) * 0.02);
  const labelWidth = 190, laneHeight = 26, top = 26, right = 12;
  const lanes = data.lanes;
  const height = top + Math.max(lanes.length, 1) * laneHeight + 6;
  const span = Math.max(end - start, 1000);
  const x = (iso) => labelWidth + (Math.min(Math.max(Date.parse(iso), start), end) - start) / span * (width - labelWidth - right);
  const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
                             "aria-label": "device timeline", id: "timeline-svg" });
  const axis = svg("g", { class: "axis" });
  for (let i = 0; i <= 6; i++) {
    const t = start + span * i / 6;
    const px = labelWidth + (width - labelWidth - right) * i / 6;
    axis.append(svg("line", { class: "grid", x1: px, x2: px, y1: top - 4, y2: height }));
    axis.append(svg("text", { x: px, y: top - 9, "text-anchor": i === 0 ? "start" : i === 6 ? "end" : "middle" },
                    new Date(t).toLocaleTimeString()));
  }
  chart.append(axis);
  const laneOf = new Map();
  lanes.forEach((lane, index) => {
    laneOf.set(lane.device_id, index);
    const y = top + index * laneHeight;
    chart.append(svg("rect", { class: index % 2 ? "lane-odd" : "lane-even", x: 0, y, width, height: laneHeight,
                               fill: index % 2 ? null : "transparent" }));
    chart.append(svg("text", { x: 6, y: y + 17, "data-device": lane.device_id },
                     svg("title", {}, lane.device_id), lane.name + "  (" + lane.target + ")"));
  });
  if (lanes.length === 0) {
    chart.append(svg("text", { x: labelWidth, y: top + 17, class: "empty" }, "nothing ran on a device in this window"));
  }
  for (const bar of data.bars) {
    const index = laneOf.get(bar.device_id);
    if (index === undefined) continue;
    const y = top + index * laneHeight + 4;
    const x0 = x(bar.start);
    const x1 = x(bar.end || new Date(end).toISOString());
    const w = Math.max(x1 - x0, 2);
    const install = bar.kind === "install";
    const title = install
      ? `install ${bar.app_version_id} (${seconds(since(bar.start, bar.end))})`
      : `${bar.test_path || bar.job_id} · attempt ${bar.attempt} · ${bar.outcome}` +
        (bar.retried ? " (retried)" : "") + ` · ${seconds(since(bar.start, bar.end))}`;
    const rect = svg("rect", {
      class: "bar " + bar.outcome, x: x0, y, width: w, height: laneHeight - 8, rx: 2,
      "data-kind": bar.kind, "data-device": bar.device_id, "data-outcome": bar.outcome,
      "data-app-version": bar.app_version_id, "data-job": bar.job_id, "data-attempt": bar.attempt,
    }, svg("title", {}, title));
    // Labelled only where the words fit inside the bar (about 6 px a character).
    const words = (install ? ["install " + bar.app_version_id, bar.app_version_id, "install"]
                           : [(bar.test_path || "").split("/").pop()]).find((text) => text.length * 6 + 8 < w);
    const label = words ? svg("text", { class: "bar-label", x: x0 + 4, y: y + 12 }, words) : null;
    if (install) {
      chart.append(rect, label);
    } else {
      chart.append(svg("a", { href: withOrg("/") + "#/jobs/" + bar.job_id }, rect, label));
    }
  }
  return chart;
}

function legend() {
  return el("div", { class: "legend" }, OUTCOMES.map((name) =>
    el("span", {}, el("i", { style: `background: var(--${name})` }), name.replace("_", " "))));
}

function contentWidth() {
  const main = document.getElementById("view");
  const style = getComputedStyle(main);
  return main.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight) - 2;
}

function timelineBlock(data, fit) {
  const holder = el("div", { class: "chart", id: "timeline" });
  holder.append(timelineChart(data, Math.max(contentWidth(), 700), fit));
  holder.dataset.installs = String(data.bars.filter((bar) => bar.kind === "install").length);
  holder.dataset.attempts = String(data.bars.filter((bar) => bar.kind === "attempt").length);
  return [holder, legend()];
}

// ---- views ---------------------------------------------------------------------------

async function runsView() {
  const data = await getJson("/dashboard/runs");
  const rows = data.runs;
  return [
    el("h2", {}, "Runs"),
    table([
      ["run", (r) => el("a", { href: "#/runs/" + r.run_id, class: "mono" }, short(r.run_id))],
      ["org", (r) => r.org_id],
      ["app version", (r) => r.app_version_id],
      ["source", (r) => [r.repo, r.commit && short(r.commit)].filter(Boolean).join(" @ ") || r.build || ""],
      ["progress", (r) => el("div", { class: "progress-row" }, progressBar(r.counts, r.jobs),
                             el("span", { class: "percent" }, percent(ended(r.counts) / r.jobs)))],
      ["jobs", (r) => r.jobs, "num"],
      ["duration", (r) => seconds(since(r.submitted_at, ended(r.counts) === r.jobs ? r.finished_at : null)), "num"],
      ["submitted", (r) => when(r.submitted_at)],
    ], rows, "no runs yet", "runs"),
  ];
}

function casesList(tests) {
  if (!tests || tests.length === 0) return null;
  return el("ul", { class: "cases" }, tests.map((c) => el("li", {},
    status(c.status), " ", (c.title_path || []).join(" › "), " ",
    el("span", { class: "mono" }, seconds(c.duration_s)),
    c.error ? el("div", { class: "case-error" },
                 c.error.message + (c.error.file ? ` (${c.error.file}${c.error.line ? ":" + c.error.line : ""})` : "")) : null)));
}

async function runView(runId) {
  const [run, timeline] = await Promise.all([
    getJson("/dashboard/runs/" + encodeURIComponent(runId)),
    getJson("/dashboard/timeline?run=" + encodeURIComponent(runId)),
  ]);
  if (run === null) return [el("h2", {}, "Run " + runId), el("p", { class: "empty" }, "no such run for this organisation")];
  const total = run.jobs.length;
  return [
    el("h2", {}, "Run ", el("span", { class: "mono" }, run.run_id)),
    el("div", { class: "meta" },
       el("span", {}, "org ", el("b", {}, run.org_id)),
       run.repo ? el("span", {}, "repo ", el("b", {}, run.repo)) : null,
       run.commit ? el("span", {}, "commit ", el("b", { class: "mono" }, run.commit)) : null,
       run.build ? el("span", {}, "build ", el("b", {}, run.build)) : null,
       el("span", {}, "submitted ", el("b", {}, when(run.submitted_at))),
       el("span", {}, "duration ", el("b", {}, seconds(since(run.submitted_at, run.finished_at)))),
       run.rerun_of ? el("span", {}, "rerun of ", el("a", { href: "#/runs/" + run.rerun_of, class: "mono" }, short(run.rerun_of))) : null),
    el("div", { class: "progress-row", style: "margin-top:0.6rem" },
       progressBar(run.counts, total, true),
       el("span", { class: "percent", id: "run-progress", "data-percent": Math.floor(run.progress * 100) },
          percent(run.progress)),
       el("span", {}, `${ended(run.counts)} of ${total} jobs ended`)),
    el("h3", {}, "By device profile"),
    table([
      ["profile", (p) => profile(p)],
      ["progress", (p) => el("div", { class: "progress-row" }, progressBar(p.counts, p.jobs),
                             el("span", { class: "percent" }, percent(ended(p.counts) / p.jobs)))],
      ["jobs", (p) => p.jobs, "num"],
      ["passed", (p) => p.counts.passed || 0, "num"],
      ["failed", (p) => (p.counts.failed || 0) + (p.counts.error || 0) + (p.counts.timed_out || 0), "num"],
    ], run.profiles, "no jobs", "profiles"),
    el("h3", {}, "Device timeline"),
    timeline ? timelineBlock(timeline, false) : el("p", { class: "empty" }, "nothing ran yet"),
    el("h3", {}, "Jobs"),
    table([
      ["test", (j) => [el("a", { href: "#/jobs/" + j.job_id }, j.test_path), casesList(j.tests)]],
      ["profile", (j) => profile(j)],
      ["status", (j) => [status(j.status), j.flaky ? " (flaky)" : "",
                         j.waiting ? el("div", { class: "empty" }, j.waiting.message) : null]],
      ["attempts", (j) => j.attempts, "num"],
      ["duration", (j) => seconds(j.duration_s), "num"],
    ], run.jobs, "no jobs", "run-jobs"),
  ];
}

function eventDetail(event, deviceNames) {
  const d = event.data || {};
  const parts = [];
  if (d.attempt) parts.push("attempt " + d.attempt);
  if (d.device_id) parts.push("on " + (deviceNames.get(d.device_id) || short(d.device_id)));
  if (d.group_id) parts.push("group " + short(d.group_id));
  if (d.kind) parts.push(d.kind);
  if (d.duration_s !== undefined && d.duration_s !== null) parts.push(seconds(d.duration_s));
  if (d.not_before) parts.push("not before " + time(d.not_before));
  if (d.reason) parts.push(d.reason);
  return parts.join(" · ");
}

async function jobView(jobId) {
  const [job, history, devices] = await Promise.all([
    getJson("/jobs/" + encodeURIComponent(jobId)),
    getJson("/jobs/" + encodeURIComponent(jobId) + "/events"),
    getJson("/dashboard/devices"),
  ]);
  if (job === null) return [el("h2", {}, "Job " + jobId), el("p", { class: "empty" }, "no such job for this organisation")];
  const deviceNames = new Map(((devices && devices.devices) || []).map((d) => [d.device_id, d.name]));
  const events = (history && history.events) || [];
  const outputs = events.filter((e) => (e.type === "JobPassed" || e.type === "JobFailed"));
  const provenance = [
    ["organisation", job.org_id], ["app version", job.app_version_id],
    ["run", job.run_id ? el("a", { href: "#/runs/" + job.run_id, class: "mono" }, job.run_id) : null],
    ["repo", job.repo], ["commit", job.commit], ["build", job.build],
    ["tags", (job.tags || []).join(", ")], ["profile", profile(job)],
    ["group", job.group_id], ["device", job.device_id ? (deviceNames.get(job.device_id) || job.device_id) : null],
    ["rerun of", job.rerun_of ? el("a", { href: "#/jobs/" + job.rerun_of, class: "mono" }, job.rerun_of) : null],
    ["submitted", when(job.submitted_at)], ["started", when(job.started_at)], ["finished", when(job.finished_at)],
    ["attempts", job.attempts + " of " + job.max_attempts],
  ].filter(([, value]) => value !== null && value !== undefined && value !== "");
  const artifacts = job.artifacts || [];
  return [
    el("h2", {}, job.test_path, " ", status(job.status), job.flaky ? " (flaky)" : ""),
    el("div", { class: "meta" }, el("span", { class: "mono" }, job.job_id),
       job.duration_s !== null ? el("span", {}, "ran ", el("b", {}, seconds(job.duration_s))) : null,
       job.last_error ? el("span", {}, "last error ", el("b", {}, job.last_error)) : null),
    job.waiting ? el("p", { class: "waiting", id: "job-waiting" }, "Waiting: ", job.waiting.message) : null,
    el("h3", {}, "Provenance"),
    el("dl", { class: "provenance", id: "job-provenance" }, provenance.map(([name, value]) => [el("dt", {}, name), el("dd", {}, value)])),
    el("h3", {}, "Timeline"),
    table([
      ["time", (e) => time(e.recorded_at), "mono"],
      ["event", (e) => e.type],
      ["by", (e) => e.metadata.actor],
      ["detail", (e) => eventDetail(e, deviceNames)],
    ], events, "no events", "job-timeline"),
    el("h3", {}, "Tests"),
    table([
      ["test", (c) => (c.title_path || []).join(" › ")],
      ["file", (c) => c.file + (c.line ? ":" + c.line : ""), "mono"],
      ["status", (c) => status(c.status)],
      ["duration", (c) => seconds(c.duration_s), "num"],
      ["error", (c) => c.error ? el("span", { class: "case-error" }, c.error.message +
                                    (c.error.file ? ` (${c.error.file}${c.error.line ? ":" + c.error.line : ""})` : "")) : ""],
    ], job.tests || [], "no per-test results reported", "job-tests"),
    el("h3", {}, "Output"),
    el("div", { id: "job-output" }, outputs.length === 0
      ? el("p", { class: "empty" }, job.status === "running" ? "the attempt is still running" : "no output recorded")
      : outputs.map((e) => [el("div", { class: "meta" }, `attempt ${e.data.attempt} · ${e.type === "JobPassed" ? "passed" : "failed"} · ${time(e.recorded_at)}`),
                            el("pre", { class: "output" }, e.data.output || "(empty)")])),
    el("h3", {}, "Artifacts"),
    el("div", { id: "job-artifacts" }, artifacts.length === 0
      ? el("p", { class: "empty" }, "no videos or screenshots recorded for this job")
      : el("ul", {}, artifacts.map((a) => el("li", {}, el("a", { href: a.url }, a.name || a.url))))),
  ];
}

function windowOf() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const value = Number(params.get("window"));
  return WINDOWS.some(([, s]) => s === value) ? value : 3600;
}

async function timelineView() {
  const window = windowOf();
  const data = await getJson("/dashboard/timeline?window=" + window);
  return [
    el("h2", {}, "Device timeline"),
    el("div", { class: "windows" }, "last", WINDOWS.map(([name, s]) =>
      el("a", { href: "#/timeline?window=" + s, "aria-current": s === window ? "true" : null }, name))),
    el("p", { class: "meta" }, data.bars.length
      ? "from the window's first install or attempt until now"
      : "nothing ran on a device of yours in this window"),
    timelineBlock(data, true),
  ];
}

async function devicesView() {
  const data = await getJson("/dashboard/devices");
  return [
    el("h2", {}, "Devices"),
    table([
      ["slot", (d) => el("span", { title: d.device_id }, d.name)],
      ["target", (d) => d.target],
      ["capabilities", (d) => Object.entries(d.capabilities || {}).map(([k, v]) => k + "=" + v).join(", "), "mono"],
      ["state", (d) => status(d.state)],
      ["installed apps", (d) => (d.installed_apps || []).join(", ")],
      ["busy, last hour", (d) => el("div", { class: "util" },
        progressBar({ running: d.utilisation }, 1), (d.utilisation * 100).toFixed(1) + " %")],
      ["last seen", (d) => time(d.last_seen_at)],
    ], data.devices, "no devices used", "devices"),
    el("h3", {}, "Queue by target and profile"),
    table([
      ["target", (q) => q.target],
      ["profile", (q) => [q.platform, q.device, q.os_version].filter(Boolean).join(" · ") || "any"],
      ["status", (q) => status(q.status)],
      ["jobs", (q) => q.jobs, "num"],
    ], data.queue, "nothing waiting", "queue"),
  ];
}

// ---- routing and liveness --------------------------------------------------------------

function route() {
  const path = location.hash.replace(/^#/, "").split("?")[0] || "/";
  let match;
  if ((match = path.match(/^\/runs\/([^/]+)$/))) return ["runs", () => runView(decodeURIComponent(match[1]))];
  if ((match = path.match(/^\/jobs\/([^/]+)$/))) return ["runs", () => jobView(decodeURIComponent(match[1]))];
  if (path === "/timeline") return ["timeline", timelineView];
  if (path === "/devices") return ["devices", devicesView];
  return ["runs", runsView];
}

function setConnection(state, text) {
  const element = document.getElementById("connection");
  element.dataset.state = state;
  element.textContent = text;
}

function needToken() {
  setConnection("unauthorized", "an API token is needed");
  document.getElementById("login").hidden = false;
}

let rendering = null;
let renderAgain = false;

// Draws the current view; a change heard while drawing makes one more draw after it.
async function render() {
  if (rendering) { renderAgain = true; return rendering; }
  rendering = (async () => {
    do {
      renderAgain = false;
      const shown = location.hash;
      const [section, view] = route();
      for (const link of document.querySelectorAll("nav a")) {
        if (link.dataset.view === section) link.setAttribute("aria-current", "page");
        else link.removeAttribute("aria-current");
      }
      const content = await view();
      const main = document.getElementById("view");
      main.replaceChildren(...content.flat().filter(Boolean));
      document.body.dataset.view = shown || "#/";
      document.body.dataset.renderedAt = new Date().toISOString();
    } while (renderAgain);
  })();
  try { await rendering; } finally { rendering = null; }
}

// EventSource cannot send an Authorization header, so the stream is read with fetch.
async function follow() {
  const response = await fetch(withOrg("/dashboard/changes"), { headers: headers() });
  if (response.status === 401) throw new Unauthorized();
  if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
  setConnection("live", "live");
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      if (block.split("\n").includes("event: changed")) render().catch(report);
    }
  }
}

function report(error) {
  if (error instanceof Unauthorized) needToken();
  else setConnection("disconnected", "disconnected (" + error.message + "); retrying");
}

async function main() {
  document.getElementById("org").textContent = org ? "org " + org : "";
  for (;;) {
    try {
      await render();
      await follow();
    } catch (error) {
      report(error);
      if (error instanceof Unauthorized) return;
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

document.getElementById("login").addEventListener("submit", (event) => {
  event.preventDefault();
  localStorage.setItem("qgjob-token", document.getElementById("token").value.trim());
  document.getElementById("login").hidden = true;
  main();
});
window.addEventListener("hashchange", () => { adoptTokenFromLink(); render().catch(report); });

adoptTokenFromLink();
main();
