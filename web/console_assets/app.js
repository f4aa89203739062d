// The console's shell: sign-in, navigation, and the few tools every view uses.
//
// Plain ES modules, served as they are (no build step). Each view is a module of ./views/ loaded when first
// opened; it exports `default { title, render(root, ctx) }`, where `render` fills `root` and may return a
// function that stops what it started (streams, timers) when the view is left. Views talk to the service
// through the public API only, with `api` and `stream` below, so the console sees exactly what any client
// sees and is authorized the same way.

const ACCESS = document.querySelector('meta[name="chainloom-access"]')?.content || "open";
const KEY_STORE = "chainloom.apiKey"; // api-key access: the key, for this tab only
const DEFAULT_VIEW = "backends";

export const VIEWS = [
  ["backends", "Backends"],
  ["groups", "Groups"],
  ["log", "Log"],
  ["chains", "Chains"],
  ["chat", "Chat"],
  ["status", "Status"],
];

// -- talking to the service ----------------------------------------------------------------------------------

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

function credentials() {
  const key = ACCESS === "api-key" ? sessionStorage.getItem(KEY_STORE) : null;
  return key ? { "X-API-Key": key } : {};
}

async function failure(response) {
  const text = await response.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = text;
  }
  const message = body?.error?.message ?? `${response.status} ${response.statusText}`;
  if (response.status === 401 && ACCESS !== "open" && !signingIn) signedOut();
  return new ApiError(response.status, message, body);
}

// A JSON call: resolves to the decoded answer (null when empty), or throws ApiError with the envelope's message.
export async function api(method, path, body, { headers = {} } = {}) {
  const init = { method, headers: { ...credentials(), ...headers }, credentials: "same-origin" };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

function parseFrame(frame) {
  const event = { id: null, event: "message", data: [] };
  let seen = false;
  for (const line of frame.split(/\r?\n/)) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "data") event.data.push(value);
    else if (field === "event") event.event = value;
    else if (field === "id") event.id = value;
    else continue;
    seen = true;
  }
  if (!seen) return null;
  return { ...event, data: event.data.join("\n") };
}

// Server-Sent Events over fetch (an EventSource cannot send the API key): calls onEvent({id, event, data}) per
// frame; when the connection drops it reconnects after retryMs with Last-Event-ID, so nothing is missed or
// repeated. A 4xx answer ends it (onError gets the ApiError). `close()` stops it; `post` sends a JSON body
// with POST instead of a GET (a streamed chat turn), and is never retried.
export function stream(path, { onEvent, onOpen, onError, lastEventId = null, retryMs = 1000, post } = {}) {
  let stopped = false;
  let controller = null;
  let last = lastEventId;
  const run = async () => {
    while (!stopped) {
      controller = new AbortController();
      try {
        const headers = { ...credentials(), Accept: "text/event-stream" };
        if (last !== null) headers["Last-Event-ID"] = String(last);
        const init = { headers, signal: controller.signal, credentials: "same-origin" };
        if (post !== undefined) {
          Object.assign(init, { method: "POST", body: JSON.stringify(post) });
          headers["Content-Type"] = "application/json";
        }
        const response = await fetch(path, init);
        if (!response.ok) throw await failure(response);
        onOpen?.();
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let end;
          while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
            const frame = parseFrame(buffer.slice(0, end));
            buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
            if (!frame) continue;
            if (frame.id !== null) last = frame.id;
            onEvent?.(frame);
          }
        }
        if (post !== undefined) return;
      } catch (error) {
        if (stopped) return;
        onError?.(error);
        if (post !== undefined || (error instanceof ApiError && error.status < 500 && error.status !== 429)) return;
      }
      if (!stopped) await new Promise((resolve) => setTimeout(resolve, retryMs));
    }
  };
  run();
  return {
    close() {
      stopped = true;
      controller?.abort();
    },
    get lastEventId() {
      return last;
    },
  };
}

// -- building pages --------------------------------------------------------------------------------------------

// h("button", { class: "primary", onclick: save }, "Save"): an element; children may be nested arrays, and
// null/undefined/false children are skipped. Text is always text (never parsed as HTML).
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else if (name === "dataset") Object.assign(element.dataset, value);
    else if (name === "value" || name === "checked") element[name] = value;
    else element.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

// A table: columns [[heading, row => cell]]; a cell is text or an element. `key` names a row (data-key).
export function table(columns, rows, { key, empty = "Nothing yet." } = {}) {
  if (!rows.length) return h("p", { class: "muted empty" }, empty);
  return h(
    "table",
    {},
    h("thead", {}, h("tr", {}, columns.map(([heading]) => h("th", {}, heading)))),
    h(
      "tbody",
      {},
      rows.map((row) =>
        h("tr", { dataset: key ? { key: key(row) } : undefined }, columns.map(([, cell]) => h("td", {}, cell(row)))),
      ),
    ),
  );
}

export function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2));
}

export function when(value) {
  if (!value) return "";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

export function toast(message, kind = "info") {
  const note = h("div", { class: `toast ${kind}` }, message);
  document.getElementById("toasts").append(note);
  setTimeout(() => note.remove(), kind === "error" ? 8000 : 4000);
}

// Runs an action from a button or form: its error becomes a toast rather than an unhandled rejection.
export async function attempt(action, done) {
  try {
    const result = await action();
    if (done) toast(done, "ok");
    return result;
  } catch (error) {
    toast(error.message || String(error), "error");
    return undefined;
  }
}

// A base URL as shown: a password in it (http://user:secret@host) is never put on the page.
export function shownUrl(url) {
  return String(url ?? "").replace(/^([a-z][a-z0-9+.-]*:\/\/[^/?#@:]*):[^/?#@]*@/i, "$1:…@");
}

// Runs `load` now and every `ms` after it finished; `refresh()` runs it again at once (after an action), never
// two at a time; `stop()` ends it.
export function poller(load, ms) {
  let stopped = false;
  let timer = null;
  let running = null;
  let again = false;
  const run = async () => {
    clearTimeout(timer);
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        await load();
      } while (again && !stopped);
    })();
    try {
      await running;
    } finally {
      running = null;
      if (!stopped) timer = setTimeout(run, ms);
    }
  };
  run();
  return {
    refresh: run,
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

// -- the route: #/<view>?<params> ------------------------------------------------------------------------------

function current() {
  const [name, query = ""] = location.hash.replace(/^#\/?/, "").split("?");
  const known = VIEWS.some(([view]) => view === name);
  return { name: known ? name : DEFAULT_VIEW, params: new URLSearchParams(query) };
}

export function navigate(name, params = {}) {
  const query = new URLSearchParams(params).toString();
  location.hash = `#/${name}${query ? `?${query}` : ""}`;
}

let stopView = null;
let shown = 0; // the latest render asked for: an older one that finishes late is dropped
let user = null; // security access: the signed-in user
let signingIn = false; // a refusal while signing in is the form's to show, not a sign-out

async function show() {
  const turn = ++shown;
  stopView?.();
  stopView = null;
  const root = document.getElementById("view");
  const { name, params } = current();
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.view === name);
  }
  if (needsSignIn()) {
    renderSignIn(root);
    return;
  }
  const view = (await import(`./views/${name}.js`)).default;
  if (turn !== shown) return;
  document.title = `${view.title} · chainloom`;
  root.replaceChildren();
  root.dataset.view = name;
  try {
    const stop = await view.render(root, { params, navigate });
    if (turn !== shown) stop?.();
    else stopView = stop ?? null;
  } catch (error) {
    root.append(h("p", { class: "error" }, error.message || String(error)));
  }
}

// -- access ----------------------------------------------------------------------------------------------------

function needsSignIn() {
  if (ACCESS === "security") return user === null;
  if (ACCESS === "api-key") return !sessionStorage.getItem(KEY_STORE);
  return false;
}

function signedOut() {
  if (ACCESS === "api-key") sessionStorage.removeItem(KEY_STORE);
  user = null;
  renderWho();
  show();
}

function renderWho() {
  const who = document.getElementById("who");
  const signOut = h("button", { class: "link", id: "sign-out", onclick: signOutClicked }, "Sign out");
  if (ACCESS === "open") who.replaceChildren(h("span", { class: "muted" }, "security off"));
  else if (ACCESS === "security" && user) who.replaceChildren(h("span", { id: "user" }, user.email || user.id), signOut);
  else if (ACCESS === "api-key" && !needsSignIn()) who.replaceChildren(h("span", {}, "API key"), signOut);
  else who.replaceChildren();
}

async function signOutClicked() {
  if (ACCESS === "security") await fetch("/ui/logout", { method: "POST", credentials: "same-origin" });
  signedOut();
}

function renderSignIn(root) {
  document.title = "Sign in · chainloom";
  const message = h("p", { class: "error", id: "sign-in-error" });
  const fields =
    ACCESS === "security"
      ? [
          h("label", {}, "Email", h("input", { name: "email", type: "email", autocomplete: "username", required: true })),
          h("label", {}, "Password", h("input", { name: "password", type: "password", autocomplete: "current-password" })),
        ]
      : [h("label", {}, "API key", h("input", { name: "key", type: "password", autocomplete: "off", required: true }))];
  const submit = async (event) => {
    event.preventDefault();
    const data = new FormData(event.target);
    message.textContent = "";
    signingIn = true;
    try {
      if (ACCESS === "security") {
        user = await api("POST", "/ui/login", { email: data.get("email"), password: data.get("password") });
      } else {
        sessionStorage.setItem(KEY_STORE, data.get("key"));
        await api("GET", "/backends");
      }
      renderWho();
      show();
    } catch (error) {
      if (ACCESS === "api-key") sessionStorage.removeItem(KEY_STORE);
      message.textContent = error.message;
    } finally {
      signingIn = false;
    }
  };
  root.dataset.view = "sign-in";
  root.replaceChildren(
    h("form", { class: "card sign-in", id: "sign-in", onsubmit: submit },
      h("h1", {}, "Sign in"), fields, h("button", { class: "primary", type: "submit" }, "Sign in"), message),
  );
}

async function start() {
  document.getElementById("nav").replaceChildren(
    ...VIEWS.map(([name, title]) => h("a", { href: `#/${name}`, dataset: { view: name } }, title)),
  );
  if (ACCESS === "security") {
    signingIn = true;
    try {
      user = await api("GET", "/ui/me");
    } catch {
      user = null;
    } finally {
      signingIn = false;
    }
  }
  renderWho();
  window.addEventListener("hashchange", show);
  await show();
}

start();
