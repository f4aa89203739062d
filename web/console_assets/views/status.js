// Status: is the service ready, which version answers, how far each projection and the Kafka relay have got
// behind the log's head, and what stopped a faulted projection — with its two ways out: Retry (try the poison
// event again, after a fix) and Skip (move past it for good, audited on the log; asks first).
//
// Polled every 2 s while shown; each card redraws only when what it shows changed. With several worker
// processes any of them answers /ready and /version, so the answering node and the jobs it holds may change
// from one poll to the next: that is the service as it is, not a flicker to hide.
import { ApiError, api, attempt, h, poller, table, when } from "../app.js";

const POLL_MS = 2000;

// The answer, or the error as a value (a 503 from /ready is a state to show, not a failure of the view).
async function settle(promise) {
  try {
    return { ok: true, value: await promise };
  } catch (error) {
    return { ok: false, status: error instanceof ApiError ? error.status : 0, message: error.message || String(error) };
  }
}

function card(id, title) {
  const body = h("div", { class: "card-body" }, h("p", { class: "muted" }, "Loading…"));
  const element = h("section", { class: "card", id }, h("h2", {}, title), body);
  let shown = "";
  return {
    element,
    show(value, draw) {
      const signature = JSON.stringify(value);
      if (signature === shown) return;
      shown = signature;
      body.replaceChildren(...[draw(value)].flat());
    },
  };
}

const lagBadge = (lag) =>
  lag === null || lag === undefined
    ? h("span", { class: "muted" }, "—")
    : h("span", { class: `badge ${lag === 0 ? "ok" : "warn"}`, dataset: { testid: "lag" } }, String(lag));

export default {
  title: "Status",
  render(root) {
    const service = card("service-status", "Service");
    const projections = card("projections", "Projections");
    const relay = card("relay", "Kafka relay");
    root.append(h("h1", {}, "Status"), h("div", { class: "split" }, service.element, relay.element), projections.element);

    const act = async (name, action) => {
      if (action === "skip") {
        const ok = confirm(
          `Skip the event projection ${name} stopped at? It moves past it for good (a rebuild skips it too); ` +
            "the skip is recorded on the log.",
        );
        if (!ok) return;
      }
      const state = await attempt(
        () => api("POST", `/projections/${encodeURIComponent(name)}/${action}`),
        action === "skip" ? `${name}: event skipped` : `${name}: retrying`,
      );
      if (state !== undefined) polling.refresh();
    };

    const drawService = ({ ready, version }) => [
      h("dl", { class: "facts" },
        h("dt", {}, "Readiness"),
        h("dd", { id: "readiness" },
          ready.ok
            ? h("span", { class: "badge ok" }, "ready")
            : h("span", { class: "badge bad" }, ready.status === 503 ? "not ready" : "unknown"),
          ready.ok ? null : h("div", { class: "error" }, ready.message)),
        version.ok ? [
          h("dt", {}, "Version"), h("dd", { id: "version", class: "mono" }, version.value.version),
          h("dt", {}, "Answered by"), h("dd", { class: "mono" }, version.value.nodeInstanceID),
          ready.ok && ready.value.holds?.length ? [h("dt", {}, "It holds"), h("dd", {}, ready.value.holds.join(", "))] : null,
        ] : [h("dt", {}, "Version"), h("dd", { class: "error" }, version.message)],
      ),
    ];

    const drawProjections = (answer) => {
      if (!answer.ok) return h("p", { class: "error" }, answer.message);
      const { head, projections: states } = answer.value;
      const faulted = states.filter((s) => s.fault).length;
      return [
        h("p", { class: "muted" }, `Log head ${head} · ${states.length} projections`,
          faulted ? [" ", h("span", { class: "badge bad", id: "faulted-count" }, `${faulted} faulted`)] : null),
        table(
          [
            ["Name", (s) => h("strong", {}, s.name)],
            ["Position", (s) => String(s.position)],
            ["Head", (s) => String(s.head)],
            ["Lag", (s) => lagBadge(s.lag)],
            ["Fault", (s) =>
              s.fault
                ? h("div", { class: "fault" },
                    h("span", { class: "badge bad" }, "faulted"), " ",
                    h("span", { class: "mono" }, `${s.fault.eventType} at ${s.fault.position}`),
                    h("div", { class: "error" }, s.fault.error),
                    h("div", { class: "muted" }, `event ${s.fault.eventId} · failed ${when(s.fault.failedAt)}`))
                : h("span", { class: "badge ok" }, "following")],
            ["", (s) =>
              s.fault
                ? h("div", { class: "row" },
                    h("button", { type: "button", dataset: { testid: "retry" }, onclick: () => act(s.name, "retry") }, "Retry"),
                    h("button", { type: "button", class: "danger", dataset: { testid: "skip" }, onclick: () => act(s.name, "skip") }, "Skip"))
                : ""],
          ],
          states,
          { key: (s) => s.name, empty: "No projection." },
        ),
      ];
    };

    const drawRelay = (answer) => {
      if (!answer.ok) return h("p", { class: "error" }, answer.message);
      const r = answer.value;
      if (!r.configured) return h("p", { class: "muted", id: "relay-state" }, "Not configured (no CHAINLOOM_KAFKA_BOOTSTRAP): events stay in the log.");
      return h("dl", { class: "facts", id: "relay-state" },
        h("dt", {}, "Topic"), h("dd", { class: "mono" }, r.topic),
        h("dt", {}, "Position"), h("dd", {}, String(r.position), h("span", { class: "muted" }, ` of ${r.head}`)),
        h("dt", {}, "Lag"), h("dd", {}, lagBadge(r.lag)),
        h("dt", {}, "Answering process"),
        h("dd", {}, r.publishing ? "publishes" : r.runsHere ? "stands by" : "runs no relay"),
        r.lastError ? [h("dt", {}, "Last error"), h("dd", { class: "error" }, `${r.lastError.message} (${when(r.lastError.at)})`)] : null,
      );
    };

    const load = async () => {
      const [ready, version, states, relayState] = await Promise.all([
        settle(api("GET", "/ready")),
        settle(api("GET", "/version")),
        settle(api("GET", "/projections")),
        settle(api("GET", "/relay")),
      ]);
      // The answering process changes between polls; only what matters for the reader is compared.
      const readyShown = ready.ok ? { ok: true, value: { holds: ready.value.holds } } : ready;
      service.show({ ready: readyShown, version: version.ok ? { ok: true, value: { version: version.value.version, nodeInstanceID: version.value.nodeInstanceID } } : version }, drawService);
      projections.show(states, drawProjections);
      relay.show(relayState, drawRelay);
    };
    const polling = poller(load, POLL_MS);
    return () => polling.stop();
  },
};
