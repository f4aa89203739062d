// The log, live: a tail of GET /log/stream, newest first, filtered by type prefix, source and aggregate.
//
// The tail starts a window back from the log's head (or at the `after` position the URL names), so the
// page opens on recent history rather than the whole log; it keeps the newest MAX_ROWS rows. Pausing
// closes the stream and keeps the last position received; resuming reconnects from it (`Last-Event-ID`),
// so nothing is missed or shown twice — the shell's `stream` does the same on a dropped connection. The
// filters and the start position live in the URL (#/log?type=…&source=…&aggregate=…&after=…), so a tail
// can be shared or reopened. Any row opens its event in full; an event's request id
// (`metadata.request_id`, the X-Request-ID its request was answered with) opens what that request did:
// GET /activity/requests/{id} and its chain steps, /activity/requests/{id}/state.
import { api, h, json, stream, table, when, attempt } from "../app.js";

const MAX_ROWS = 500;
// How far back from the head a tail starts: the rows a page holds, or more when filters thin them out.
const WINDOW = MAX_ROWS;
const FILTERED_WINDOW = 5000;
const FILTERS = ["type", "source", "aggregate"];

function aggregateOf(event) {
  return event.aggregate_type ? `${event.aggregate_type}/${event.aggregate_id ?? ""}` : "";
}

function time(value) {
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? String(value ?? "") : date.toLocaleTimeString();
}

function requestIdOf(event) {
  const id = event?.metadata?.request_id;
  return typeof id === "string" && id ? id : null;
}

// The log's last position (0: empty), from one cheap unfiltered read.
export async function logHead() {
  const page = await api("GET", "/log?limit=1");
  return page.head;
}

export default {
  title: "Log",
  async render(root, { params }) {
    const filters = Object.fromEntries(FILTERS.map((name) => [name, params.get(name) ?? ""]));
    const given = params.get("after");
    const startAt = given !== null && /^[0-9]+$/.test(given) ? Number(given) : null;
    const anyFilter = FILTERS.some((name) => filters[name]);
    const startFrom = startAt ?? Math.max(0, (await logHead()) - (anyFilter ? FILTERED_WINDOW : WINDOW));

    const inputs = Object.fromEntries(
      FILTERS.map((name) => [
        name,
        h("input", {
          id: `log-${name}`,
          name,
          value: filters[name],
          placeholder: { type: "prefix, e.g. backend.", source: "e.g. chainloom", aggregate: "TYPE or TYPE/ID" }[name],
        }),
      ]),
    );
    const afterInput = h("input", { id: "log-after", name: "after", inputmode: "numeric", value: startAt ?? "", placeholder: "recent" });
    const pauseButton = h("button", { id: "log-pause", type: "button" }, "Pause");
    const status = h("span", { id: "log-status", class: "muted" }, "connecting…");
    const count = h("span", { id: "log-count", class: "muted" });
    const body = h("tbody", { id: "log-rows" });
    const empty = h("p", { class: "muted empty", id: "log-empty" }, "No events yet: waiting for the log.");
    const detail = h("div", { id: "log-detail" }, h("p", { class: "muted" }, "Select an event to see it in full."));

    const form = h(
      "form",
      { class: "row card", id: "log-filters", onsubmit: (event) => { event.preventDefault(); apply(); } },
      h("label", {}, "Type", inputs.type),
      h("label", {}, "Source", inputs.source),
      h("label", {}, "Aggregate", inputs.aggregate),
      h("label", {}, "After position", afterInput),
      h("button", { class: "primary", type: "submit", id: "log-apply" }, "Apply"),
      h("button", { type: "button", id: "log-clear", onclick: clear }, "Clear"),
    );
    root.append(
      h("h1", {}, "Log"),
      form,
      h("div", { class: "row log-bar" }, pauseButton, status, count),
      h(
        "div",
        { class: "split log-split" },
        h(
          "div",
          { class: "log-table" },
          h(
            "table",
            { id: "log-table" },
            h("thead", {}, h("tr", {}, ["#", "Time", "Type", "Source", "Aggregate", "Actor"].map((t) => h("th", {}, t)))),
            body,
          ),
          empty,
        ),
        detail,
      ),
    );

    let tail = null;
    let paused = false;
    let last = null; // the position of the last event received (what a resumed stream goes on after)
    let selected = null;

    function query(after) {
      const search = new URLSearchParams();
      for (const name of FILTERS) if (filters[name]) search.set(name, filters[name]);
      search.set("after", String(after));
      return `/log/stream?${search}`;
    }

    function showStatus() {
      const where = last === null ? "" : ` · at position ${last}`;
      status.textContent = paused ? `paused${where}` : `live${where}`;
      status.className = paused ? "badge warn" : "badge ok";
      count.textContent = `${body.children.length} shown (newest ${MAX_ROWS} kept)`;
    }

    function row(event) {
      const tr = h(
        "tr",
        { dataset: { key: String(event.nid), type: event.event_type }, class: "clickable", onclick: () => open(event, tr) },
        h("td", { class: "mono" }, String(event.nid)),
        h("td", { title: when(event.created_at) }, time(event.created_at)),
        h("td", { class: "mono" }, event.event_type),
        h("td", {}, event.event_source),
        h("td", { class: "mono" }, aggregateOf(event)),
        h("td", {}, event.metadata?.actor ?? ""),
      );
      return tr;
    }

    function received(frame) {
      if (frame.event !== "message" || !frame.data) return;
      let event;
      try {
        event = JSON.parse(frame.data);
      } catch {
        return;
      }
      last = event.nid ?? (frame.id !== null ? Number(frame.id) : last);
      empty.hidden = true;
      body.prepend(row(event));
      while (body.children.length > MAX_ROWS) body.lastElementChild.remove();
      showStatus();
    }

    function connect(after, resumeFrom) {
      tail = stream(query(after), {
        lastEventId: resumeFrom,
        onEvent: received,
        onOpen: showStatus,
        onError: (error) => {
          status.className = "badge bad";
          status.textContent = error.status && error.status < 500 ? error.message : `reconnecting… (${error.message || error})`;
        },
      });
    }

    function stop() {
      tail?.close();
      tail = null;
    }

    function togglePause() {
      paused = !paused;
      pauseButton.textContent = paused ? "Resume" : "Pause";
      if (paused) {
        if (tail && tail.lastEventId !== null) last = Number(tail.lastEventId);
        stop();
      } else {
        // From the last event received: Last-Event-ID wins over `after`, so no gap and no duplicate.
        connect(startFrom, last === null ? null : String(last));
      }
      showStatus();
    }
    pauseButton.addEventListener("click", togglePause);

    function apply() {
      const next = new URLSearchParams();
      for (const name of FILTERS) {
        const value = inputs[name].value.trim();
        if (value) next.set(name, value);
      }
      const after = afterInput.value.trim();
      if (after) next.set("after", after);
      const hash = `#/log${next.toString() ? `?${next}` : ""}`;
      if (location.hash === hash) location.reload();
      else location.hash = hash; // the shell renders the view again on the new filters
    }

    function clear() {
      for (const name of FILTERS) inputs[name].value = "";
      afterInput.value = "";
      apply();
    }

    function open(event, tr) {
      selected?.classList.remove("selected");
      selected = tr;
      tr.classList.add("selected");
      const requestId = requestIdOf(event);
      const activity = h("div", { id: "log-activity" });
      detail.replaceChildren(
        h(
          "div",
          { class: "card", id: "log-event" },
          h("h2", {}, `Event #${event.nid} · ${event.event_type}`),
          h(
            "div",
            { class: "row" },
            h("button", { type: "button", id: "log-filter-type", onclick: () => filterBy("type", event.event_type) }, "Only this type"),
            event.aggregate_type
              ? h("button", { type: "button", id: "log-filter-aggregate", onclick: () => filterBy("aggregate", aggregateOf(event)) }, "Only this aggregate")
              : null,
            requestId
              ? h("button", { type: "button", id: "log-request", onclick: () => showRequest(requestId, activity) }, "Request activity")
              : null,
          ),
          json(event),
        ),
        activity,
      );
    }

    function filterBy(name, value) {
      inputs[name].value = value;
      afterInput.value = "";
      apply();
    }

    async function showRequest(requestId, into) {
      into.replaceChildren(h("p", { class: "muted" }, "Loading…"));
      const path = `/activity/requests/${encodeURIComponent(requestId)}`;
      const answers = await attempt(() => Promise.all([api("GET", path), api("GET", `${path}/state`)]));
      if (!answers) {
        into.replaceChildren();
        return;
      }
      const [events, steps] = answers;
      into.replaceChildren(
        h(
          "div",
          { class: "card", id: "log-request-activity" },
          h("h2", {}, "Request ", h("code", {}, requestId)),
          table(
            [
              ["Operation", (a) => a.operation],
              ["Subject", (a) => a.subject],
              ["Entity", (a) => h("span", { class: "mono" }, a.entityID ?? "")],
              ["Took", (a) => `${Math.round(a.duration)} ms`],
              ["Error", (a) => (a.error ? h("span", { class: "error" }, a.error) : "")],
            ],
            events,
            { key: (a) => a.id, empty: "No activity recorded for this request." },
          ),
          steps.length ? h("h2", {}, "Chain steps") : null,
          steps.length ? stepsTable(steps) : null,
        ),
      );
    }

    connect(startFrom, null);
    showStatus();
    status.textContent = "connecting…";
    return stop;
  },
};

function clip(text, length) {
  return text.length > length ? `${text.slice(0, length - 1)}…` : text;
}

// A chain run's steps (CapturedState): shared with the chains and chat views (`compact`: the few columns a
// narrow panel holds).
export function stepsTable(steps, { id, compact = false } = {}) {
  const failed = (s) => s.error?.error;
  const columns = [
    ["#", (s) => String(s.index)],
    ["Task", (s) => h("span", { class: "mono" }, s.taskID)],
    compact ? null : ["Handler", (s) => s.taskHandler],
    compact ? null : ["In → out", (s) => `${s.inputType} → ${s.outputType}`],
    ["Transition", (s) => h("span", { class: "mono" }, clip(s.transition ?? "", 40))],
    ["Took", (s) => `${Math.round(s.duration)} ms`],
    ["Error", (s) => (failed(s) ? h("span", { class: "error", title: failed(s) }, clip(failed(s), compact ? 60 : 140)) : "")],
  ].filter(Boolean);
  const node = table(
    columns,
    steps.map((s, index) => ({ ...s, index: index + 1 })),
    { key: (s) => `${s.index}-${s.taskID}`, empty: "No steps." },
  );
  if (id) node.id = id;
  return node;
}
