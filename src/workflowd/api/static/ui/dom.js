// Small helpers to build the page: elements, times, durations, statuses, JSON and problems.

// h("a", {href: "/ui/", class: "x", onclick: fn}, "text", child, [more]) -> an element.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else if (key === "text") {
      el.textContent = value;
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const TERMINAL = new Set(["completed", "failed", "cancelled", "timed_out", "rejected"]);
export const STATUSES = ["queued", "running", "awaiting_approval", "paused", "completed",
                         "failed", "cancelled", "timed_out", "rejected"];
// The events that end an execution: `workflow_` and its terminal status.
export const TERMINAL_EVENTS = new Set([...TERMINAL].map((status) => `workflow_${status}`));

export function isTerminal(status) {
  return TERMINAL.has(status);
}

// A step's kind in words.
export const KINDS = {agent_execution: "agent execution", tool_call: "tool call",
                      decision_point: "decision point", data_processing: "data processing",
                      approval: "approval gate", external: "external step", sleep: "sleep"};

// A status as words, never as colour only: "awaiting_approval" -> "awaiting approval".
export function statusText(status) {
  return String(status ?? "").replaceAll("_", " ");
}

export function statusBadge(status) {
  return h("span", {class: `status s-${status}`, "data-status": status}, statusText(status));
}

function pad(n, width = 2) {
  return String(n).padStart(width, "0");
}

// An API timestamp in the reader's own time zone: "2026-02-09 15:10:00".
export function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
         `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// `short`: only the time of day for a moment of today (the whole date otherwise).
export function timeEl(iso, {short = false} = {}) {
  if (!iso) return "–";
  let text = fmtTime(iso);
  if (short && new Date(iso).toDateString() === new Date().toDateString()) text = text.slice(11);
  return h("time", {datetime: iso, title: fmtTime(iso)}, text);
}

export function fmtDuration(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.round(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function shortId(id) {
  return String(id).slice(-8);
}

export function percent(value) {
  const n = Math.max(0, Math.min(100, Number(value) || 0));
  return Math.round(n * 10) / 10;
}

// A progress bar people and assistive technology read alike: role, value and the words.
export function progressBar(label) {
  const fill = h("span", {class: "fill"});
  const bar = h("div", {class: "bar", role: "progressbar", "aria-label": label,
                        "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": 0}, fill);
  return {bar, set(value, words) {
    const pct = percent(value);
    bar.setAttribute("aria-valuenow", String(pct));
    bar.setAttribute("aria-valuetext", words ? `${pct}%, ${words}` : `${pct}%`);
    fill.style.width = `${pct}%`;
  }};
}

// JSON in a collapsible block: <details><summary>Input</summary><pre>...</pre></details>.
export function jsonBlock(title, value, open = false) {
  const text = value === undefined ? "null" : JSON.stringify(value, null, 2);
  return h("details", {class: "json", open},
           h("summary", {}, title),
           h("pre", {tabindex: 0, "aria-label": title}, h("code", {}, text)));
}

// Every problem answer shown as its title and detail (and a 422's errors).
export function problemBox(err) {
  const problem = err?.problem ?? {title: "Something went wrong", detail: String(err)};
  const errors = Array.isArray(problem.errors) ? problem.errors : [];
  return h("div", {class: "problem", role: "alert"},
           h("strong", {class: "problem-title"}, problem.title || "Error"),
           problem.detail ? h("span", {class: "problem-detail"}, ` ${problem.detail}`) : null,
           errors.length ? h("ul", {}, errors.map((e) =>
             h("li", {}, `${(e.loc || []).join(".")}: ${e.msg}`))) : null);
}

export function announce(text) {
  const region = document.getElementById("announce");
  if (!region) return;
  region.textContent = "";
  // A fresh node each time, so the same words said twice are read twice.
  requestAnimationFrame(() => { region.textContent = text; });
}

// Run `fn` at most once per `ms`, never two at a time, and always once more after the last
// call: a burst of events becomes one or two refreshes, and the last state is always read.
export function throttle(fn, ms) {
  let running = false;
  let again = false;
  let timer = null;
  const run = async () => {
    timer = null;
    running = true;
    again = false;
    try {
      await fn();
    } finally {
      running = false;
      if (again) schedule();
    }
  };
  const schedule = () => {
    if (running) { again = true; return; }
    if (timer === null) timer = setTimeout(run, ms);
  };
  schedule.cancel = () => { if (timer !== null) clearTimeout(timer); timer = null; again = false; };
  schedule.now = () => { schedule.cancel(); return running ? (again = true, null) : run(); };
  return schedule;
}
