// The public API (/api/v1), as any front end would use it: JSON in and out, problem answers
// turned into errors that carry them, and the bearer token and tickets of API.md §8.

export const API = "/api/v1";
const TOKEN_KEY = "workflowd.token";

export class ApiError extends Error {
  constructor(problem) {
    super(`${problem.title}: ${problem.detail ?? ""}`);
    this.problem = problem;
    this.status = problem.status ?? 0;
  }
}

// Who is calling. The token lives in sessionStorage: this tab only, gone when it closes.
// `role` and `subject` are known from a ticket's answer; null while auth is off or unknown.
export const auth = {
  role: null,
  subject: null,
  // The sign-in was declined ("Not now"): not asked again until the reader asks to sign in.
  declined: false,
  // Set by the app: shows the sign-in dialog; resolves to a token, or null if declined.
  ask: null,
  listeners: new Set(),
  token() {
    try { return sessionStorage.getItem(TOKEN_KEY); } catch { return null; }
  },
  setToken(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    this.changed();
  },
  signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    this.role = null;
    this.subject = null;
    this.changed();
  },
  changed() {
    for (const fn of this.listeners) fn();
  },
};

// What each role may do (API.md §8); with no role known (auth off) every action is offered and
// the server has the last word.
const MAY = {
  viewer: [],
  submitter: ["start", "cancel"],
  approver: ["approve", "reject"],
  worker: [],
  admin: ["start", "cancel", "approve", "reject"],
};

export function may(action) {
  if (!auth.role) return true;
  return (MAY[auth.role] ?? []).includes(action);
}

async function problemOf(resp) {
  let body = null;
  try { body = await resp.json(); } catch { /* not JSON */ }
  if (body && typeof body === "object" && body.title) return body;
  return {title: resp.statusText || `HTTP ${resp.status}`, status: resp.status,
          detail: `${resp.url.replace(location.origin, "")} answered ${resp.status}`};
}

let asking = null;

async function askForToken(problem) {
  if (!auth.ask || auth.declined) return null;
  // Many calls may meet the same 401 at once: one dialog answers them all.
  asking ??= auth.ask(problem).finally(() => { asking = null; });
  return asking;
}

// One call. A 401 asks for a token and tries again with it; anything not 2xx throws an
// ApiError with the problem answer.
export async function api(method, path, body) {
  for (;;) {
    const headers = {Accept: "application/json"};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const token = auth.token();
    if (token) headers.Authorization = `Bearer ${token}`;
    let resp;
    try {
      resp = await fetch(API + path, {method, headers, cache: "no-cache",
                                      body: body === undefined ? undefined : JSON.stringify(body)});
    } catch (err) {
      throw new ApiError({title: "Service unreachable", status: 0,
                          detail: `${method} ${API}${path} could not reach the service (${err.message})`});
    }
    if (resp.status === 401) {
      const problem = await problemOf(resp);
      if (await askForToken(problem)) continue;
      throw new ApiError(problem);
    }
    if (!resp.ok) throw new ApiError(await problemOf(resp));
    if (resp.status === 204) return null;
    return resp.json();
  }
}

export const get = (path) => api("GET", path);
export const post = (path, body = {}) => api("POST", path, body);

// A single-use ticket for a WebSocket (only when a token is set), which also tells the
// caller's subject and role.
export async function ticket() {
  if (!auth.token()) return null;
  const answer = await post("/tickets");
  const changed = auth.role !== answer.role || auth.subject !== answer.subject;
  auth.role = answer.role;
  auth.subject = answer.subject;
  if (changed) auth.changed();
  return answer.ticket;
}

// The ws:// URL of an API WebSocket route, with a fresh ticket when a token is set.
export async function socketUrl(path, params = {}) {
  const url = new URL(API + path, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") url.searchParams.set(key, value);
  }
  const t = await ticket();
  if (t) url.searchParams.set("ticket", t);
  return url.href;
}
