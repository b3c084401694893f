// The executions: newest first, filtered by workflow, status and label (kept in the URL, so a
// view can be shared), counts by status, and live over `WS /api/v1/ws`.

import {ApiError, get, may, socketUrl} from "./api.js";
import {STATUSES, TERMINAL_EVENTS, clear, h, isTerminal, problemBox, progressBar, shortId,
        statusBadge, statusText, throttle, timeEl} from "./dom.js";
import {Live, showConnection} from "./live.js";
import {startForm} from "./start.js";

const PAGE = 50;
// The most executions counted per status; more show as "500+".
const COUNT_LIMIT = 500;
// The events after which an execution's status may differ, and the statuses it may be in then
// (API.md §2: a resume of an execution about to pause leaves it running).
const STATUS_AFTER = new Map([
  ["workflow_queued", ["queued"]], ["workflow_started", ["running"]],
  ["approval_required", ["awaiting_approval"]], ["approval_granted", ["queued"]],
  ["approval_rejected", ["rejected"]], ["workflow_paused", ["paused"]],
  ["workflow_resumed", ["queued", "running"]],
  ...[...TERMINAL_EVENTS].map((type) => [type, [type.slice("workflow_".length)]]),
]);

export function filtersOf(search) {
  const params = new URLSearchParams(search);
  return {workflow_id: params.get("workflow_id") || "", status: params.get("status") || "",
          labels: params.getAll("label").filter(Boolean)};
}

function query(filters, extra = {}) {
  const params = new URLSearchParams();
  if (filters.workflow_id) params.set("workflow_id", filters.workflow_id);
  if (filters.status) params.set("status", filters.status);
  for (const label of filters.labels) params.append("label", label);
  for (const [key, value] of Object.entries(extra)) params.set(key, value);
  return params.toString();
}

function matches(item, filters) {
  if (filters.workflow_id && item.workflow_id !== filters.workflow_id) return false;
  if (filters.status && item.status !== filters.status) return false;
  return filters.labels.every((label) => {
    const at = label.indexOf(":");
    return item.labels?.[label.slice(0, at)] === label.slice(at + 1);
  });
}

// One row of the table; its status, progress and step follow `/status/live`.
class Row {
  constructor(item, titles) {
    this.item = item;
    this.id = item.execution_id;
    const href = `/ui/executions/${encodeURIComponent(this.id)}`;
    this.status = h("td", {"data-label": "Status"});
    this.progress = progressBar(`Progress of ${shortId(this.id)}`);
    this.pct = h("span", {class: "pct"});
    this.step = h("td", {"data-label": "Step", class: "step"});
    this.tr = h("tr", {"data-id": this.id},
      h("th", {scope: "row", "data-label": "Execution"},
        h("a", {href, title: this.id, class: "mono"}, shortId(this.id))),
      h("td", {"data-label": "Workflow"}, titles.get(item.workflow_id) ?? item.workflow_id),
      this.status,
      h("td", {"data-label": "Progress"},
        h("span", {class: "progress-cell"}, this.progress.bar, this.pct)),
      this.step,
      h("td", {"data-label": "Created"}, timeEl(item.created_at, {short: true})),
      h("td", {"data-label": "Labels"}, h("span", {class: "labels"},
        Object.entries(item.labels ?? {}).map(([k, v]) => h("span", {class: "label"}, `${k}:${v}`)))));
    this.refresh = throttle(() => this.fetchLive(), 250);
    this.show({status: item.status, progress: null, current_step: null});
    if (!isTerminal(item.status)) this.refresh();
  }

  show(live) {
    clear(this.status, statusBadge(live.status));
    this.tr.dataset.status = live.status;
    // A bar where it tells something: followed live, or full once completed. An execution
    // that ended otherwise shows its status only.
    const ended = isTerminal(live.status) && live.status !== "completed";
    this.progress.bar.hidden = ended;
    if (ended) {
      this.pct.textContent = "–";
    } else if (live.progress) {
      const pct = live.progress.percentage;
      this.progress.set(pct, live.progress.message);
      this.pct.textContent = `${Math.round(pct)}%`;
    } else if (live.status === "completed") {
      this.progress.set(100);
      this.pct.textContent = "100%";
    }
    this.step.textContent = live.current_step ? live.current_step.name : "–";
  }

  async fetchLive() {
    try {
      const live = await get(`/executions/${encodeURIComponent(this.id)}/status/live`);
      this.item = {...this.item, status: live.status};
      this.show(live);
      this.onChange?.(this);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;  // a row that is gone (retention) stays as it was
    }
  }
}

export function executionsView(main, {navigate}) {
  const filters = filtersOf(location.search);
  const startWith = new URLSearchParams(location.search).get("start");
  const rows = new Map();
  const excluded = new Set();  // ids that can never match (another workflow or labels)
  const adding = new Set();
  let cursor = null;
  let titles = new Map();
  let disposed = false;

  const tbody = h("tbody");
  const empty = h("p", {class: "empty", hidden: true}, "No executions match.");
  const more = h("button", {type: "button", hidden: true, onclick: () => loadMore()}, "Load more");
  const problems = h("div", {class: "problem-slot"});
  const counts = h("ul", {class: "counts", "aria-label": "Executions by status"});
  const startSlot = h("div", {class: "start-slot"});

  const workflowFilter = h("select", {id: "filter-workflow", name: "workflow_id"},
                           h("option", {value: ""}, "All workflows"));
  const statusFilter = h("select", {id: "filter-status", name: "status"},
                         h("option", {value: ""}, "All statuses"),
                         STATUSES.map((s) => h("option", {value: s, selected: s === filters.status},
                                                statusText(s))));
  const labelFilter = h("input", {id: "filter-label", name: "label", type: "text",
                                  value: filters.labels.join(" "), autocomplete: "off",
                                  placeholder: "key:value"});
  const filterForm = h("form", {class: "filters", role: "search", "aria-label": "Filter executions",
    onsubmit: (ev) => {
      ev.preventDefault();
      const next = {workflow_id: workflowFilter.value, status: statusFilter.value,
                    labels: labelFilter.value.split(/[\s,]+/).filter(Boolean)};
      const qs = query(next);
      navigate(`/ui/${qs ? `?${qs}` : ""}`);
    }},
    h("p", {}, h("label", {for: "filter-workflow"}, "Filter by workflow"), workflowFilter),
    h("p", {}, h("label", {for: "filter-status"}, "Filter by status"), statusFilter),
    h("p", {}, h("label", {for: "filter-label"}, "Filter by label"), labelFilter),
    h("p", {}, h("button", {type: "submit"}, "Apply")));
  for (const select of [workflowFilter, statusFilter]) {
    select.addEventListener("change", () => filterForm.requestSubmit());
  }

  clear(main,
    h("h1", {}, "Executions"),
    h("div", {class: "list-layout"},
    startSlot,
    h("section", {class: "panel list-panel", "aria-labelledby": "list-title"},
      h("h2", {id: "list-title"}, "Newest first"),
      filterForm,
      counts,
      problems,
      h("div", {class: "table-wrap"},
        h("table", {class: "executions"},
          h("caption", {class: "visually-hidden"}, "Executions, newest first"),
          h("thead", {}, h("tr", {},
            ["Execution", "Workflow", "Status", "Progress", "Step", "Created", "Labels"].map(
              (name) => h("th", {scope: "col"}, name)))),
          tbody)),
      empty, more)));

  const fail = (err) => {
    if (!(err instanceof ApiError)) throw err;
    clear(problems, problemBox(err));
  };

  // Newest first; among rows made in the same millisecond, the order the server lists them in
  // (pages), or else the order their first events came in (events come in commit order).
  let top = 0;
  let bottom = 0;
  const heard = new Map();
  const render = () => {
    const ordered = [...rows.values()].sort((a, b) =>
      a.item.created_at < b.item.created_at ? 1 : a.item.created_at > b.item.created_at ? -1
        : b.rank - a.rank);
    tbody.replaceChildren(...ordered.map((row) => row.tr));
    empty.hidden = rows.size > 0;
    more.hidden = cursor === null;
  };

  const addRow = (item, rank) => {
    const row = new Row(item, titles);
    row.rank = rank;
    row.onChange = (r) => {
      if (filters.status && r.item.status !== filters.status) {
        rows.delete(r.id);
        render();
      }
    };
    rows.set(item.execution_id, row);
    return row;
  };

  const load = async () => {
    const page = await get(`/executions?${query(filters, {limit: String(PAGE)})}`);
    if (disposed) return;
    clear(problems);
    const keep = new Set(page.items.map((item) => item.execution_id));
    for (const id of rows.keys()) if (!keep.has(id)) rows.delete(id);
    bottom = 0;
    for (const item of page.items) {
      const row = rows.get(item.execution_id);
      if (row) {
        row.item = {...row.item, ...item};
        row.rank = -(++bottom);
        row.show({status: item.status, progress: null, current_step: null});
        if (!isTerminal(item.status)) row.refresh();
      } else {
        addRow(item, -(++bottom));
      }
    }
    cursor = page.next_cursor;
    render();
  };

  const loadMore = async () => {
    if (!cursor) return;
    try {
      const page = await get(`/executions?${query(filters, {limit: String(PAGE), cursor})}`);
      for (const item of page.items) {
        if (!rows.has(item.execution_id)) addRow(item, -(++bottom));
      }
      cursor = page.next_cursor;
      render();
    } catch (err) { fail(err); }
  };

  const countAll = async () => {
    const base = {...filters, status: ""};
    const answers = await Promise.all(STATUSES.map((status) =>
      get(`/executions?${query({...base, status}, {limit: String(COUNT_LIMIT)})}`)
        .then((page) => [status, page.items.length, page.next_cursor !== null])));
    if (disposed) return;
    const total = answers.reduce((sum, [, n]) => sum + n, 0);
    const capped = answers.some(([, , more]) => more);
    const allQs = query({...filters, status: ""});
    // The statuses with executions (and the one filtered on): each a link to its filter.
    clear(counts,
      h("li", {"data-status": ""}, h("a", {href: `/ui/${allQs ? `?${allQs}` : ""}`,
                                          "aria-current": filters.status ? null : "true"},
        h("span", {class: "total"}, "all"), " ", h("b", {class: "count"}, `${total}${capped ? "+" : ""}`))),
      answers.filter(([status, n]) => n > 0 || status === filters.status).map(([status, n, more]) => {
        const qs = query({...filters, status});
        return h("li", {"data-status": status},
                 h("a", {href: `/ui/?${qs}`, "aria-current": filters.status === status ? "true" : null},
                   statusBadge(status), " ", h("b", {class: "count"}, `${n}${more ? "+" : ""}`)));
      }));
  };
  const refreshCounts = throttle(() => countAll().catch(fail), 1500);

  // An execution this page has not seen: shown if it matches the filters and falls within the
  // rows loaded (or all of them are).
  const consider = async (id) => {
    if (adding.has(id) || excluded.has(id) || rows.has(id)) return;
    adding.add(id);
    try {
      const item = await get(`/executions/${encodeURIComponent(id)}`);
      if (disposed || rows.has(id)) return;
      if (!matches(item, {...filters, status: ""})) {  // its workflow and labels never change
        excluded.add(id);
        return;
      }
      if (filters.status && item.status !== filters.status) return;
      const oldest = [...rows.values()].reduce(
        (min, r) => (r.item.created_at < min ? r.item.created_at : min), "\uffff");
      if (cursor !== null && item.created_at < oldest) return;
      addRow(item, heard.get(id) ?? ++top);
      render();
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
    } finally {
      adding.delete(id);
    }
  };
  // Executions heard of but not shown, looked at together: a few one by one, many (a busy
  // service) by reading the first page again, one request instead of one each.
  const unknown = new Set();
  const considerAll = throttle(async () => {
    const ids = [...unknown];
    unknown.clear();
    if (ids.length > 10) await load().catch(fail);
    else await Promise.all(ids.map(consider));
  }, 300);

  const live = new Live({
    url: () => socketUrl("/ws", {workflow_id: filters.workflow_id}),
    onMessage: (event) => {
      if (!event.execution_id) return;
      if (!heard.has(event.execution_id)) {
        if (heard.size > 10_000) heard.clear();  // only ties within a millisecond need it
        heard.set(event.execution_id, ++top);
      }
      const row = rows.get(event.execution_id);
      const into = STATUS_AFTER.get(event.type);
      if (row) row.refresh();
      // One not shown is looked at when it may have come into the status filtered on, not at
      // each of its changes on the way.
      else if (into && (!filters.status || into.includes(filters.status)) &&
               !excluded.has(event.execution_id)) {
        unknown.add(event.execution_id);
        considerAll();
      }
      if (into) refreshCounts();
    },
    onState: (state) => {
      showConnection(state);
      // Back after a drop: what changed meanwhile came with no event here, so read it again.
      if (state === "live" && live.connects > 1) {
        load().catch(fail);
        refreshCounts();
      }
    },
  });

  (async () => {
    try {
      const workflows = (await get("/workflows")).items;
      if (disposed) return;
      titles = new Map(workflows.map((wf) => [wf.id, wf.title]));
      for (const wf of workflows) {
        workflowFilter.append(h("option", {value: wf.id, selected: wf.id === filters.workflow_id},
                                wf.title));
      }
      if (may("start")) {
        startSlot.append(startForm({
          workflows, selected: startWith || filters.workflow_id || workflows[0]?.id,
          onStarted: (answer) => navigate(`/ui/executions/${encodeURIComponent(answer.execution_id)}`),
        }));
        if (startWith) document.getElementById("start-input")?.focus();
      }
      live.start();
      await load();
      await countAll();
    } catch (err) { fail(err); }
  })();

  return {
    title: "Executions",
    dispose() {
      disposed = true;
      live.stop();
      refreshCounts.cancel();
      considerAll.cancel();
      for (const row of rows.values()) row.refresh.cancel();
    },
  };
}
