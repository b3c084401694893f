// One execution: status, live progress, the steps as a timeline, branch decisions, input, state
// and result, events and logs as they come; Approve, Reject and Cancel where they apply.
// Followed over `WS /executions/{id}/ws`, resuming with `after=` after a drop.

import {API, ApiError, auth, get, may, post} from "./api.js";
import {KINDS, TERMINAL_EVENTS, announce, clear, fmtDuration, h, isTerminal, jsonBlock,
        problemBox, progressBar, statusBadge, statusText, throttle, timeEl} from "./dom.js";
import {Follower, showConnection} from "./live.js";

const SKIP_FIELDS = new Set(["seq", "type", "execution_id", "ts"]);
// Events kept on the page; older ones are dropped from it (the API has them all).
const SHOWN_EVENTS = 1000;

function ms(iso) {
  return iso ? new Date(iso).getTime() : null;
}

function eventTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleTimeString([], {hour12: false}) + `.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

// An event's fields in a few words: "step draft_plan · 60% · Drafting plan".
function eventWords(event) {
  const parts = [];
  for (const [key, value] of Object.entries(event)) {
    if (SKIP_FIELDS.has(key) || value === null || value === undefined) continue;
    if (key === "custom_data" && !Object.keys(value).length) continue;
    if (key === "callback") { parts.push("callback given"); continue; }
    if (key === "percentage") parts.push(`${Math.round(value)}%`);
    else if (key === "duration_ms") parts.push(fmtDuration(value));
    else if (key === "comment") parts.push(`“${value}”`);
    else if (key === "step" || key === "message" || key === "prompt") parts.push(String(value));
    else parts.push(`${key} ${typeof value === "object" ? JSON.stringify(value) : value}`);
  }
  return parts.join(" · ");
}

export function executionView(main, {id}) {
  const path = `/executions/${encodeURIComponent(id)}`;
  let exec = null;
  let live = null;
  let steps = [];
  let trace = null;
  let logs = [];
  let shownLogs = 0;  // of `logs`, the lines on the page
  // The cursor after the last log line read: each read goes on from there.
  let logsAfter = "0";
  // The seq the first reads hold: events up to it (replayed by the follow) ask for no reads.
  let loadedSeq = 0;
  const retries = [];  // step_retrying events, for the timeline
  let dropped = 0;
  let prompt = null;
  let currentTask = null;
  let disposed = false;
  let ticker = null;

  const title = h("h1", {}, "Execution");
  const problems = h("div", {class: "problem-slot"});
  const summary = h("dl", {class: "summary"});
  const bar = progressBar("Progress");
  const pct = h("span", {class: "pct"});
  const message = h("span", {class: "message"});
  const actions = h("div", {class: "actions"});
  // What an action was answered with, kept while the actions offered are drawn again.
  const actionProblems = h("div", {class: "problem-slot"});
  const decision = h("div", {class: "decision"});
  const errorBox = h("div");
  const timeline = h("ol", {class: "timeline", "aria-label": "Steps in the order they ran"});
  const decisions = h("div");
  const data = h("div", {class: "data"});
  const eventList = h("ol", {class: "events", "aria-label": "Events"});
  const earlier = h("p", {class: "note", hidden: true});
  const eventBox = h("div", {class: "scroll", tabindex: 0, role: "region",
                             "aria-label": "Events, oldest first"}, earlier, eventList);
  const logList = h("ol", {class: "logs"});
  const conn = h("span", {class: "connects", "data-connects": 0});

  clear(main,
    h("p", {class: "crumbs"}, h("a", {href: "/ui/"}, "Executions"), " › ",
      h("span", {class: "mono"}, id)),
    title,
    problems,
    h("div", {class: "columns"},
      h("div", {class: "col"},
        h("section", {class: "panel", "aria-labelledby": "status-title"},
          h("h2", {id: "status-title"}, "Status"),
          summary,
          h("div", {class: "progress"}, bar.bar, pct, message),
          errorBox, decision, actions, actionProblems),
        h("section", {class: "panel", "aria-labelledby": "steps-title"},
          h("h2", {id: "steps-title"}, "Steps"),
          timeline),
        h("section", {class: "panel", "aria-labelledby": "decisions-title"},
          h("h2", {id: "decisions-title"}, "Branch decisions"),
          decisions),
        h("section", {class: "panel", "aria-labelledby": "data-title"},
          h("h2", {id: "data-title"}, "Input, state and result"),
          data)),
      h("div", {class: "col"},
        h("section", {class: "panel", "aria-labelledby": "events-title"},
          h("h2", {id: "events-title"}, "Events ", conn),
          eventBox),
        h("section", {class: "panel", "aria-labelledby": "logs-title"},
          h("h2", {id: "logs-title"}, "Logs"),
          logList))));

  const fail = (err) => {
    if (!(err instanceof ApiError)) throw err;
    clear(problems, problemBox(err));
  };

  // The newer of the live status and the whole execution (each read at its own moment).
  const latest = () => (live && (!exec || live.last_update >= exec.updated_at) ? live : exec);
  const status = () => latest()?.status;

  const renderSummary = () => {
    if (!exec) return;
    const cur = latest();
    const st = cur.status;
    const step = cur.current_step;
    const cycle = cur.cycle;
    const rows = [
      ["Status", statusBadge(st)],
      ["Current step", step ? `${step.name} (${KINDS[step.kind] ?? step.kind})` : "–"],
      ["Cycle", `${cycle} of at most ${exec.max_cycles}`],
      ["Created", timeEl(exec.created_at)],
      ["Started", timeEl(exec.started_at)],
      ["Finished", timeEl(exec.finished_at)],
      ["Submitted by", exec.submitted_by ?? "–"],
    ];
    const labels = Object.entries(exec.labels ?? {});
    if (labels.length) {
      rows.push(["Labels", labels.map(([k, v]) => h("span", {class: "label"}, `${k}:${v}`))]);
    }
    clear(summary, rows.map(([term, value]) => [h("dt", {}, term),
                                                h("dd", {"data-field": term}, value)]));
    const progress = cur.progress;
    if (progress) {
      const words = [progress.message, currentTask && `on ${currentTask}`].filter(Boolean).join(", ");
      bar.set(progress.percentage, words);
      pct.textContent = `${Math.round(progress.percentage)}%`;
      message.textContent = words;
    }
    clear(errorBox, exec.error ? h("p", {class: "error-box", role: "status"},
      h("strong", {}, exec.error.code), ` ${exec.error.message}`) : null);
  };

  const renderDecision = () => {
    const approval = exec?.approval;
    if (!approval || approval.status === "pending") { clear(decision); return; }
    const verb = approval.status === "approved" ? "Approved" : "Rejected";
    clear(decision, h("section", {class: `verdict v-${approval.status}`,
                                  "aria-labelledby": "verdict-title"},
      h("h3", {id: "verdict-title"}, "Approval"),
      h("p", {class: "verdict-line"}, `${verb} by `, h("strong", {class: "decided-by"},
        approval.decided_by ?? "–"), " at ", timeEl(approval.decided_at)),
      approval.comment ? h("blockquote", {class: "comment"}, approval.comment)
                       : h("p", {class: "note"}, "No comment.")));
  };

  const act = async (buttons, call, done) => {
    for (const b of buttons) b.disabled = true;
    clear(actionProblems);
    try {
      await call();
      announce(done);
      await refreshAll.now();
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      actionProblems.append(problemBox(err));
    } finally {
      for (const b of buttons) b.disabled = false;
    }
  };

  let shownActions = "";
  const renderActions = () => {
    const st = status();
    if (!st) return;
    const canDecide = st === "awaiting_approval";
    const canCancel = !isTerminal(st);
    const promptText = prompt ?? "Approve this execution before it starts?";
    // Re-drawn only when what is offered changes (the prompt is set in place), and a comment
    // being typed is carried over.
    const key = `${st}|${auth.role}`;
    if (key === shownActions) {
      const shown = actions.querySelector(".prompt");
      if (shown && shown.textContent !== promptText) shown.textContent = promptText;
      return;
    }
    shownActions = key;
    const typed = actions.querySelector("#comment");
    const parts = [];
    if (canDecide) {
      const comment = h("textarea", {id: "comment", name: "comment", rows: 2});
      if (typed) comment.value = typed.value;
      const approve = h("button", {type: "button", class: "primary"}, "Approve");
      const reject = h("button", {type: "button"}, "Reject");
      const both = [approve, reject];
      approve.addEventListener("click", () => act(both,
        () => post(`${path}/approve`, {comment: comment.value || null}), "Approved"));
      reject.addEventListener("click", () => act(both,
        () => post(`${path}/reject`, {reason: comment.value || null}), "Rejected"));
      const allowed = may("approve");
      parts.push(h("section", {class: "approval", "aria-labelledby": "approval-title"},
        h("h3", {id: "approval-title"}, "Approval needed"),
        h("p", {class: "prompt"}, promptText),
        allowed ? [h("p", {}, h("label", {for: "comment"}, "Comment"), comment),
                   h("p", {class: "buttons"}, approve, " ", reject)]
                : h("p", {class: "note"},
                    `Your role (${auth.role}) may look but not approve or reject.`)));
    }
    if (canCancel && may("cancel")) {
      const cancel = h("button", {type: "button", class: "danger"}, "Cancel");
      cancel.addEventListener("click", () => act([cancel],
        () => post(`${path}/cancel`), "Cancel asked"));
      parts.push(h("p", {class: "buttons"}, cancel,
                   h("span", {class: "note"}, " stops the running step and ends the execution.")));
    }
    const refocus = typed !== null && document.activeElement === typed;
    clear(actions, parts);
    if (refocus) actions.querySelector("#comment")?.focus();
  };

  const retriesOf = (cycle) => retries.filter((e) => e.cycle === cycle);

  const renderTimeline = () => {
    const ran = steps.filter((s) => s.started_at);
    const now = Date.now();
    const t0 = Math.min(...ran.map((s) => ms(s.started_at)), ms(exec?.started_at) ?? Infinity);
    const ends = ran.map((s) => ms(s.completed_at) ?? now);
    const tEnd = Math.max(ms(exec?.finished_at) ?? 0, ...ends, t0 + 1);
    const span = Math.max(tEnd - t0, 1);
    clear(timeline, steps.map((s) => {
      const kind = [KINDS[s.kind] ?? s.kind, s.agent_name, s.tool_name].filter(Boolean).join(" · ");
      const name = h("div", {class: "tl-name"}, h("strong", {}, s.name), " ",
                     h("span", {class: "kind"}, kind));
      if (!s.started_at) {
        return h("li", {class: "tl-row not-run", "data-step": s.name, "data-status": s.status},
                 name, h("div", {class: "tl-track"}),
                 h("div", {class: "tl-info"}, statusBadge(s.status)));
      }
      const start = ms(s.started_at);
      const end = ms(s.completed_at) ?? now;
      // A wait (a gate, an outside worker) holds no task: drawn hatched, said in words.
      const waiting = s.status === "waiting";
      const wait = waiting || s.kind === "approval";
      const fill = h("span", {class: `tl-bar b-${s.status}${wait ? " b-wait" : ""}`});
      fill.style.left = `${((start - t0) / span) * 100}%`;
      fill.style.width = `${Math.max(((end - start) / span) * 100, 0.6)}%`;
      const took = waiting || s.status === "running" ? end - start : (s.duration_ms ?? end - start);
      const retries = retriesOf(s.cycle);
      const how = waiting ? `waiting for ${fmtDuration(took)} so far`
        : s.status === "running" ? `running for ${fmtDuration(took)}`
        : wait ? `waited ${fmtDuration(took)}` : `took ${fmtDuration(took)}`;
      const info = h("div", {class: "tl-info"},
        statusBadge(s.status), " ",
        h("span", {class: "when"}, `cycle ${s.cycle}, at +${fmtDuration(start - t0)}, ${how}`),
        s.attempt > 1 ? h("span", {class: "attempts"}, `, attempt ${s.attempt}`) : null,
        retries.length ? h("ul", {class: "retries"}, retries.map((r) =>
          h("li", {}, `attempt ${r.attempt} failed: ${r.error}; retried`))) : null,
        s.error ? h("p", {class: "step-error"}, h("strong", {}, s.error.code),
                    ` ${s.error.message}`) : null);
      return h("li", {class: `tl-row${wait ? " wait" : ""}`, "data-step": s.name,
                      "data-status": s.status, "data-cycle": s.cycle},
               name, h("div", {class: "tl-track", "aria-hidden": "true"}, fill), info);
    }));
  };

  const renderDecisions = () => {
    const items = Object.entries(trace?.branch_decisions ?? {});
    if (!items.length) { clear(decisions, h("p", {class: "note"}, "None yet.")); return; }
    clear(decisions, h("table", {class: "decisions"},
      h("thead", {}, h("tr", {}, ["Decision", "Outcome", "Cycle", "When"].map(
        (n) => h("th", {scope: "col"}, n)))),
      h("tbody", {}, items.map(([name, d]) => h("tr", {"data-decision": name},
        h("th", {scope: "row"}, name),
        h("td", {}, typeof d.outcome === "string" ? d.outcome : JSON.stringify(d.outcome)),
        h("td", {}, String(d.cycle)), h("td", {}, timeEl(d.timestamp)))))));
  };

  // A block the reader opened or closed stays so across refreshes (until it turns from null
  // to a value: a result that arrives is shown open).
  const openBlocks = new Map();
  const renderData = () => {
    if (!exec) return;
    for (const el of data.querySelectorAll("details")) openBlocks.set(el.dataset.key, el.open);
    const block = (name, value, open) => {
      const key = `${name}:${value === null || value === undefined}`;
      const el = jsonBlock(name, value, openBlocks.get(key) ?? open);
      el.dataset.key = key;
      return el;
    };
    clear(data, block("Input", exec.input, false), block("State", exec.state, false),
          block("Result", exec.result, exec.result !== null));
  };

  // Lines are only ever added: the new ones are appended to those shown.
  const renderLogs = () => {
    if (!logs.length) { clear(logList, h("li", {class: "note"}, "No log lines yet.")); return; }
    if (!shownLogs) clear(logList);
    logList.append(...logs.slice(shownLogs).map((line) => h("li", {},
      h("time", {datetime: line.ts}, eventTime(line.ts)), " ",
      h("span", {class: "mono"}, line.step ?? ""), " ", line.message,
      Object.keys(line.fields ?? {}).length
        ? h("span", {class: "fields"}, ` ${JSON.stringify(line.fields)}`) : null)));
    shownLogs = logs.length;
  };

  const renderAll = () => {
    renderSummary();
    renderDecision();
    renderActions();
    renderTimeline();
    renderDecisions();
    renderData();
    renderLogs();
    const st = status();
    if (st && isTerminal(st) && ticker !== null) { clearInterval(ticker); ticker = null; }
    if (st && !isTerminal(st) && ticker === null) ticker = setInterval(renderTimeline, 1000);
  };

  // The log lines after `logsAfter`, and the cursor after them. A page has a `next_cursor`
  // only when it is full, so after a shorter one the cursor of its last line is learnt by
  // asking for exactly that many lines again (a full page then: lines are only added).
  const readLogs = async () => {
    const lines = [];
    let after = logsAfter;
    for (;;) {
      const page = await get(`${path}/logs?after=${after}&limit=500`);
      lines.push(...page.items);
      if (page.next_cursor) { after = page.next_cursor; continue; }
      if (page.items.length) {
        const again = await get(`${path}/logs?after=${after}&limit=${page.items.length}`);
        after = again.next_cursor ?? after;
      }
      return {lines, after};
    }
  };

  const refreshAll = throttle(async () => {
    try {
      const [e, s, t, l] = await Promise.all([get(path), get(`${path}/steps`),
                                              get(`${path}/trace`), readLogs()]);
      if (disposed) return;
      exec = e; steps = s.items; trace = t;
      logs.push(...l.lines);
      logsAfter = l.after;
      clear(problems);
      renderAll();
    } catch (err) { fail(err); }
  }, 250);

  const refreshLive = throttle(async () => {
    try {
      live = await get(`${path}/status/live`);
      if (!disposed) { renderSummary(); renderActions(); }
    } catch (err) { fail(err); }
  }, 150);

  // What a replayed event changes on the page without a read: the prompt, the current task,
  // the retries on the timeline.
  const renderReplayed = throttle(() => {
    if (disposed || !exec) return;
    renderSummary();
    renderActions();
    renderTimeline();
  }, 100);

  const stick = () => eventBox.scrollHeight - eventBox.scrollTop - eventBox.clientHeight < 40;

  const follower = new Follower(id, {
    onSnapshot: (snapshot) => {
      live = snapshot;
      renderSummary();
      renderActions();
    },
    onEvent: (event) => {
      const atBottom = stick();
      if (event.type === "step_retrying") retries.push(event);
      if (eventList.childElementCount >= SHOWN_EVENTS) {
        eventList.firstElementChild.remove();
        dropped += 1;
        earlier.hidden = false;
        earlier.textContent = `${dropped} earlier events are not shown here ` +
                              `(GET ${API}${path}/events has them all).`;
      }
      eventList.append(h("li", {"data-seq": event.seq, "data-type": event.type},
        h("span", {class: "seq"}, `#${event.seq}`), " ",
        h("time", {datetime: event.ts}, eventTime(event.ts)), " ",
        h("strong", {class: "etype"}, event.type), " ",
        h("span", {class: "edetail"}, eventWords(event))));
      if (atBottom) eventBox.scrollTop = eventBox.scrollHeight;
      if (event.type === "approval_required") prompt = event.prompt;
      if (event.type === "step_progress") currentTask = event.current_task ?? currentTask;
      if (event.type === "step_started") currentTask = null;
      if (event.seq <= loadedSeq) renderReplayed();  // the first reads hold it already
      else if (event.type === "step_progress") refreshLive();
      else refreshAll();
      if (TERMINAL_EVENTS.has(event.type)) {
        announce(`Execution ${statusText(event.type.slice(9))}`);
      }
    },
    onState: (state) => {
      showConnection(state === "closed" && isTerminal(status()) ? "closed" : state);
      conn.dataset.connects = String(follower.connects);
      conn.textContent = follower.connects > 1 ? `(resumed ${follower.connects - 1}×)` : "";
    },
  });

  (async () => {
    try {
      // The live status first: what is read after it holds every event up to its seq.
      live = await get(`${path}/status/live`);
    } catch (err) { fail(err); return; }
    if (disposed) return;
    loadedSeq = live.seq;
    const workflowId = live.workflow_id;
    title.textContent = workflowId;
    get(`/workflows/${encodeURIComponent(workflowId)}`).then((wf) => {
      title.textContent = wf.title;
      document.title = `${wf.title} · workflowd`;
    }).catch(() => { title.textContent = workflowId; });
    await refreshAll.now();  // the execution, its steps, trace and logs: read once
    if (!disposed && exec) follower.start();
  })();

  return {
    title: "Execution",
    dispose() {
      disposed = true;
      follower.stop();
      refreshAll.cancel();
      refreshLive.cancel();
      renderReplayed.cancel();
      if (ticker !== null) clearInterval(ticker);
    },
  };
}
