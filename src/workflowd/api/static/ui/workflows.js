// The registered workflows, each with its steps in order (kind, agent, tool; gates marked).

import {ApiError, get, may} from "./api.js";
import {KINDS, clear, h, problemBox} from "./dom.js";

export function workflowsView(main) {
  const list = h("div", {class: "workflows"}, h("p", {class: "note"}, "Loading…"));
  clear(main, h("h1", {}, "Workflows"), list);
  (async () => {
    try {
      const {items} = await get("/workflows");
      clear(list, items.length ? items.map((wf) => h("section", {
        class: "panel workflow", "aria-labelledby": `wf-${wf.id}`, "data-workflow": wf.id},
        h("h2", {id: `wf-${wf.id}`}, wf.title),
        h("p", {class: "meta"}, h("span", {class: "mono"}, wf.id), ` · version ${wf.version}`,
          wf.max_cycles ? ` · at most ${wf.max_cycles} cycles` : ""),
        wf.description ? h("p", {}, wf.description) : null,
        h("ol", {class: "wf-steps", "aria-label": `Steps of ${wf.title}`}, wf.steps.map((step) => {
          const gate = step.kind === "approval";
          return h("li", {class: gate ? "gate" : "", "data-step": step.name},
            h("strong", {}, step.name), " ",
            gate ? h("span", {class: "tag gate-tag"}, "Gate") : null, " ",
            h("span", {class: "kind"}, [KINDS[step.kind] ?? step.kind,
              step.agent && `agent ${step.agent}`, step.tool && `tool ${step.tool}`]
              .filter(Boolean).join(" · ")));
        })),
        h("p", {class: "links"},
          may("start") ? h("a", {href: `/ui/?start=${encodeURIComponent(wf.id)}`},
                           `Start ${wf.title}`) : null,
          may("start") ? " · " : null,
          h("a", {href: `/ui/?workflow_id=${encodeURIComponent(wf.id)}`},
            `Executions of ${wf.title}`))))
        : h("p", {}, "No workflows are registered: list their modules under [workflows] modules."));
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      clear(list, problemBox(err));
    }
  })();
  return {title: "Workflows", dispose() {}};
}
