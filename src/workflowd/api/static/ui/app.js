// The dashboard's entry: routes the page from its URL, signs in when the service asks for a
// token (API.md §8), and swaps views without reloading.

import {ApiError, auth, ticket} from "./api.js";
import {clear, h} from "./dom.js";
import {executionView} from "./execution.js";
import {executionsView} from "./list.js";
import {showConnection} from "./live.js";
import {workflowsView} from "./workflows.js";

const main = document.getElementById("main");
let view = null;

function route(pathname) {
  const m = pathname.match(/^\/ui\/executions\/([^/]+)$/);
  if (m) return {name: "executions", make: () => executionView(main, {id: decodeURIComponent(m[1])})};
  if (pathname === "/ui/workflows") return {name: "workflows", make: () => workflowsView(main)};
  return {name: "executions", make: () => executionsView(main, {navigate})};
}

function render({focus = false} = {}) {
  view?.dispose();
  showConnection("closed");
  const {name, make} = route(location.pathname);
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  view = make();
  document.title = `${view.title} · workflowd`;
  // After a move within the page, start reading at the new view (as a page load would).
  if (focus) main.focus();
}

export function navigate(url) {
  history.pushState(null, "", url);
  render({focus: true});
}

// Links within the dashboard change the view in place; anything else (a new tab, another
// origin, a modifier key) is left to the browser.
document.addEventListener("click", (ev) => {
  const link = ev.target.closest?.("a[href]");
  if (!link || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey ||
      ev.shiftKey || ev.altKey || link.target) return;
  const url = new URL(link.href, location.href);
  if (url.origin !== location.origin || !url.pathname.startsWith("/ui/")) return;
  ev.preventDefault();
  if (url.href !== location.href) navigate(url.pathname + url.search);
});
window.addEventListener("popstate", () => render({focus: true}));

// --- Signing in -------------------------------------------------------------------------

const dialog = document.getElementById("token-dialog");
const tokenInput = document.getElementById("token-input");
const why = document.getElementById("token-why");
const who = document.getElementById("who");

// Asked by the API module on a 401: resolves to the token typed in, or null.
auth.ask = (problem) => new Promise((resolve) => {
  why.textContent = auth.token()
    ? `That token was not accepted (${problem.title}: ${problem.detail}).`
    : "This service asks for a token: paste yours to go on.";
  tokenInput.value = "";
  dialog.returnValue = "";
  const close = async () => {
    dialog.removeEventListener("close", close);
    const token = tokenInput.value.trim();
    if (dialog.returnValue !== "ok" || !token) {
      auth.declined = true;
      showWho();
      resolve(null);
      return;
    }
    auth.declined = false;
    auth.setToken(token);
    try {
      await ticket();  // learns the subject and role
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
    }
    resolve(token);
  };
  dialog.addEventListener("close", close);
  if (!dialog.open) dialog.showModal();
  tokenInput.focus();
});

function showWho() {
  if (!auth.token()) {
    who.hidden = !auth.declined;
    const signIn = h("button", {type: "button", class: "link"}, "Sign in");
    signIn.addEventListener("click", () => { auth.declined = false; render({focus: true}); });
    clear(who, auth.declined ? signIn : null);
    return;
  }
  who.hidden = false;
  const signOut = h("button", {type: "button", class: "link"}, "Sign out");
  signOut.addEventListener("click", () => { lastRole = null; auth.signOut(); render({focus: true}); });
  clear(who, auth.subject ? [h("span", {}, "Signed in as "), h("strong", {}, auth.subject),
                             ` (${auth.role})`, " "] : "Signed in ", signOut);
}

let lastRole = auth.role;
auth.listeners.add(() => {
  showWho();
  // What a role may do decides which actions are drawn: draw again when it changes.
  if (auth.role !== lastRole) {
    lastRole = auth.role;
    if (view) render();
  }
});

async function boot() {
  if (auth.token()) {
    try {
      await ticket();  // who is signed in, and so which actions to offer
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;  // the view shows what the service says
    }
  }
  lastRole = auth.role;
  showWho();
  render();
}

boot();
