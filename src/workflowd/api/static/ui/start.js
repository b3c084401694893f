// Start a workflow with a JSON input, checked in the page before anything is sent.

import {ApiError, post} from "./api.js";
import {clear, h, problemBox} from "./dom.js";

// "team:audit, env:prod" -> {team: "audit", env: "prod"}; throws on a part without a colon.
export function parseLabels(text) {
  const labels = {};
  for (const part of text.split(/[\s,]+/).filter(Boolean)) {
    const at = part.indexOf(":");
    if (at < 1) throw new Error(`"${part}" is not key:value`);
    labels[part.slice(0, at)] = part.slice(at + 1);
  }
  return labels;
}

export function startForm({workflows, selected, onStarted}) {
  const select = h("select", {id: "start-workflow", name: "workflow", required: true},
                   workflows.map((wf) => h("option", {value: wf.id, selected: wf.id === selected},
                                           `${wf.title} (${wf.id})`)));
  const input = h("textarea", {id: "start-input", name: "input", rows: 4, spellcheck: "false",
                               "aria-describedby": "start-input-note start-input-error"}, "{}");
  const inputError = h("p", {id: "start-input-error", class: "field-error", hidden: true});
  const labels = h("input", {id: "start-labels", name: "labels", type: "text",
                             autocomplete: "off", "aria-describedby": "start-labels-note"});
  const button = h("button", {type: "submit"}, "Start");
  const slot = h("div", {class: "problem-slot"});

  const invalid = (field, errorEl, message) => {
    field.setAttribute("aria-invalid", "true");
    errorEl.textContent = message;
    errorEl.hidden = false;
    field.focus();
  };
  const valid = (field, errorEl) => {
    field.removeAttribute("aria-invalid");
    errorEl.hidden = true;
    errorEl.textContent = "";
  };
  const labelsError = h("p", {id: "start-labels-error", class: "field-error", hidden: true});
  labels.setAttribute("aria-describedby", "start-labels-note start-labels-error");

  const form = h("form", {class: "start", novalidate: true, onsubmit: async (ev) => {
    ev.preventDefault();
    clear(slot);
    let value;
    try {
      value = JSON.parse(input.value.trim() || "{}");
    } catch (err) {
      invalid(input, inputError, `Input is not valid JSON: ${err.message}`);
      return;
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      invalid(input, inputError, "Input must be a JSON object, such as {} or {\"areas\": [\"access\"]}");
      return;
    }
    valid(input, inputError);
    let labelMap;
    try {
      labelMap = parseLabels(labels.value);
    } catch (err) {
      invalid(labels, labelsError, `Labels: ${err.message}`);
      return;
    }
    valid(labels, labelsError);
    button.disabled = true;
    try {
      const answer = await post(`/workflows/${encodeURIComponent(select.value)}/executions`,
                                {input: value, labels: labelMap});
      onStarted(answer);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      slot.append(problemBox(err));
    } finally {
      button.disabled = false;
    }
  }},
  h("p", {}, h("label", {for: "start-workflow"}, "Workflow"), select),
  h("p", {}, h("label", {for: "start-input"}, "Input"), input,
    h("span", {id: "start-input-note", class: "note"},
      "A JSON object, handed to the workflow as its input."), inputError),
  h("p", {}, h("label", {for: "start-labels"}, "Labels"), labels,
    h("span", {id: "start-labels-note", class: "note"},
      "Optional: key:value pairs, such as team:audit."), labelsError),
  h("p", {}, button),
  slot);

  return h("section", {class: "panel start-panel", "aria-labelledby": "start-title"},
           h("h2", {id: "start-title"}, "Start a workflow"), form);
}
