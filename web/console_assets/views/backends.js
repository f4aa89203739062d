// Backends: each backend as the reconciler last saw it (models pulled or missing, its error), the downloads
// queued for it and the pulls in progress (live, from the SSE stream /queue/inProgress); create and delete.
//
// Observed state arrives asynchronously (the reconciler looks at grouped backends within a second of a change,
// then every CHAINLOOM_RECONCILE_INTERVAL), so the view polls every 2 s while shown and redraws only when what
// it shows changed. A backend's declared models are its groups' models (README "Observed state of the
// backends"): they are read from the groups, so a grouped backend not looked at yet already shows what it
// lacks, and a backend in no group says it is never contacted.
import { api, attempt, h, poller, shownUrl, stream, toast, when } from "../app.js";

const POLL_MS = 2000;
const TYPES = ["ollama", "vllm"]; // what POST /backends takes (provider backends come from /providers/…/configure)
const PROGRESS_STALE_MS = 60000; // a pull that said nothing for this long is no longer shown as running

// "llama3" and "llama3:latest" name one model (as the reconciler counts them).
const norm = (name) => String(name ?? "").toLowerCase().replace(/:latest$/, "");
const pullKey = (baseUrl, model) => `${baseUrl}\n${norm(model)}`;

export function bytes(count) {
  if (!Number.isFinite(count) || count <= 0) return "";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let value = count;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit && value < 10 ? 1 : 0)} ${units[unit]}`;
}

async function membership() {
  // Which groups each backend is in and the models each group declares: the backend's declared models.
  const groups = await api("GET", "/groups");
  const pairs = await Promise.all(
    groups.map(async (group) => {
      const [backends, models] = await Promise.all([
        api("GET", `/backend-affinity/${encodeURIComponent(group.id)}/backends`),
        api("GET", `/model-affinity/${encodeURIComponent(group.id)}/models`),
      ]);
      return { group, backends, models };
    }),
  );
  const byBackend = {}; // backend id -> { groups: [group name], models: [model name] } (plain: compared as JSON)
  for (const { group, backends, models } of pairs) {
    for (const backend of backends) {
      const entry = (byBackend[backend.id] ??= { groups: [], models: [] });
      entry.groups.push(group.name);
      for (const model of models) if (!entry.models.includes(model.model)) entry.models.push(model.model);
    }
  }
  return byBackend;
}

export default {
  title: "Backends",
  render(root) {
    const progress = new Map(); // pullKey -> { line, at }
    let data = null;
    let shown = "";
    let drawTimer = null;

    const name = h("input", { id: "backend-name", name: "name", required: true, autocomplete: "off", placeholder: "ollama-1" });
    const baseUrl = h("input", { id: "backend-url", name: "baseUrl", required: true, autocomplete: "off", placeholder: "http://localhost:11434" });
    const type = h("select", { id: "backend-type", name: "type" }, TYPES.map((t) => h("option", { value: t }, t)));
    const create = async (event) => {
      event.preventDefault();
      const body = { name: name.value.trim(), baseUrl: baseUrl.value.trim(), type: type.value };
      const made = await attempt(() => api("POST", "/backends", body), `Backend ${body.name} created`);
      if (made) {
        name.value = "";
        baseUrl.value = "";
        polling.refresh();
      }
    };
    const problem = h("p", { class: "error", id: "backends-error" });
    const list = h("div", { id: "backends-list" }, h("p", { class: "muted" }, "Loading…"));
    const downloads = h("div", { id: "downloads" });
    const live = h("span", { class: "badge", id: "progress-stream" }, "progress: connecting");

    root.append(
      h("h1", {}, "Backends"),
      h("form", { class: "card row", id: "backend-form", onsubmit: create },
        h("label", {}, "Name", name), h("label", {}, "Base URL", baseUrl), h("label", {}, "Type", type),
        h("button", { class: "primary", type: "submit", id: "backend-create" }, "Create backend")),
      problem,
      list,
      h("h2", {}, "Downloads ", live),
      downloads,
    );

    const remove = async (backend) => {
      if (!confirm(`Delete backend ${backend.name}? Its group assignments go with it.`)) return;
      const done = await attempt(() => api("DELETE", `/backends/${encodeURIComponent(backend.id)}`), `Backend ${backend.name} deleted`);
      if (done !== undefined) polling.refresh();
    };

    const running = () => {
      const now = Date.now();
      for (const [key, entry] of progress) if (now - entry.at > PROGRESS_STALE_MS) progress.delete(key);
      return progress;
    };

    const modelCell = (backend, declared, queued) => {
      const pulled = backend.pulledModels ?? [];
      const items = [];
      for (const model of declared) {
        const pull = running().get(pullKey(backend.baseUrl, model));
        let mark;
        const have = pulled.find((m) => norm(m.name) === norm(model) || norm(m.model) === norm(model));
        if (have) mark = [h("span", { class: "badge ok" }, "pulled"), " ", h("span", { class: "muted" }, bytes(have.size))];
        else if (pull) mark = pullView(pull.line);
        else if (queued.has(norm(model))) mark = h("span", { class: "badge warn" }, "queued");
        else if (backend.error) mark = h("span", { class: "badge", title: "The backend did not answer its last look" }, "unknown");
        else mark = h("span", { class: "badge warn" }, "missing");
        items.push(h("li", { dataset: { model: norm(model) } }, h("span", { class: "mono" }, model), " ", mark));
      }
      const declaredNames = new Set(declared.map(norm));
      for (const model of pulled) {
        if (declaredNames.has(norm(model.name)) || declaredNames.has(norm(model.model))) continue;
        items.push(
          h("li", { dataset: { model: norm(model.name) } },
            h("span", { class: "mono" }, model.name), " ",
            h("span", { class: "badge" }, "pulled, not declared"), " ",
            h("span", { class: "muted" }, bytes(model.size))),
        );
      }
      return items.length ? h("ul", { class: "models" }, items) : h("span", { class: "muted" }, "none");
    };

    const stateCell = (backend, groups, observed) => {
      if (backend.error) return h("span", { class: "badge bad" }, "error");
      if (!groups.length) return h("span", { class: "badge", title: "Backends in no group are never contacted" }, "in no group");
      if (!observed) return h("span", { class: "badge warn" }, "not looked at yet");
      return h("span", { class: "badge ok" }, "up");
    };

    const draw = () => {
      drawTimer = null;
      if (!data) return;
      const signature = JSON.stringify([data, [...running()].map(([k, v]) => [k, v.line])]);
      if (signature === shown) return;
      shown = signature;
      const { backends, state, queue, members } = data;
      const observed = new Set(state.map((s) => s.id));
      const queuedAt = new Map(); // baseUrl -> Set(model)
      for (const job of queue) {
        const url = job.modelJob?.url ?? job.id;
        if (!queuedAt.has(url)) queuedAt.set(url, new Set());
        queuedAt.get(url).add(norm(job.modelJob?.model));
      }
      if (!backends.length) {
        list.replaceChildren(h("p", { class: "muted empty" }, "No backend yet: create one above, then put it in a group (Groups)."));
      } else {
        list.replaceChildren(
          h("table", { id: "backends-table" },
            h("thead", {}, h("tr", {}, ["Name", "Type", "Base URL", "Groups", "State", "Models", ""].map((t) => h("th", {}, t)))),
            h("tbody", {},
              backends.map((backend) => {
                const member = members[backend.id] ?? { groups: [], models: [] };
                const declared = [...new Map([...member.models, ...(backend.models ?? [])].map((m) => [norm(m), m])).values()];
                return h("tr", { dataset: { key: backend.id, name: backend.name } },
                  h("td", {}, h("strong", {}, backend.name), h("div", { class: "muted mono" }, backend.id)),
                  h("td", {}, backend.type),
                  h("td", { class: "mono" }, shownUrl(backend.baseUrl)),
                  h("td", {}, member.groups.length ? member.groups.join(", ") : h("span", { class: "muted" }, "—")),
                  h("td", { class: "state" }, stateCell(backend, member.groups, observed.has(backend.id)),
                    backend.error ? h("div", { class: "error backend-error" }, backend.error) : null),
                  h("td", { class: "models-cell" }, modelCell(backend, declared, queuedAt.get(backend.baseUrl) ?? new Set())),
                  h("td", {}, h("button", { class: "danger", dataset: { testid: "delete-backend" }, onclick: () => remove(backend) }, "Delete")),
                );
              })),
          ),
        );
      }
      const names = new Map(backends.map((b) => [b.baseUrl, b.name]));
      const rows = [
        ...[...running().values()].map(({ line, at }) => ({ kind: "pulling", model: line.model, baseUrl: line.baseUrl, line, at })),
        ...queue.map((job) => ({ kind: "queued", model: job.modelJob?.model, baseUrl: job.modelJob?.url ?? job.id, at: job.createdAt })),
      ];
      downloads.replaceChildren(
        rows.length
          ? h("table", { id: "downloads-table" },
              h("thead", {}, h("tr", {}, ["Model", "Backend", "", "Last heard"].map((t) => h("th", {}, t)))),
              h("tbody", {},
                rows.map((row) =>
                  h("tr", { dataset: { key: `${shownUrl(row.baseUrl)} ${norm(row.model)}`, kind: row.kind } },
                    h("td", { class: "mono" }, row.model),
                    h("td", {}, names.get(row.baseUrl) ?? h("span", { class: "mono" }, shownUrl(row.baseUrl))),
                    h("td", {}, row.kind === "pulling" ? pullView(row.line) : h("span", { class: "badge warn" }, "queued")),
                    h("td", { class: "muted" }, typeof row.at === "number" ? new Date(row.at).toLocaleTimeString() : when(row.at)),
                  ))),
            )
          : h("p", { class: "muted empty" }, "No download queued or running."),
      );
    };
    const redraw = () => {
      if (drawTimer === null) drawTimer = setTimeout(draw, 200); // progress lines come in bursts: one redraw each
    };

    const load = async () => {
      try {
        // Only the backends are needed; what the caller may not read (with security on) is left out, said once.
        const missing = [];
        const optional = (promise, what, fallback) =>
          promise.catch((error) => {
            missing.push(`${what}: ${error.message || error}`);
            return fallback;
          });
        const [backends, state, queue, members] = await Promise.all([
          api("GET", "/backends?limit=1000"),
          optional(api("GET", "/state"), "observed state", []),
          optional(api("GET", "/queue"), "download queue", []),
          optional(membership(), "groups", {}),
        ]);
        // A pull whose model the backend now holds is over, whatever its last line said.
        for (const backend of backends) {
          for (const model of backend.pulledModels ?? []) {
            progress.delete(pullKey(backend.baseUrl, model.name));
            progress.delete(pullKey(backend.baseUrl, model.model));
          }
        }
        data = { backends, state, queue, members };
        problem.textContent = missing.length ? `Not shown (${missing.join("; ")})` : "";
        draw();
      } catch (error) {
        problem.textContent = `Could not refresh: ${error.message || error}`;
      }
    };
    const polling = poller(load, POLL_MS);

    const feed = stream("/queue/inProgress", {
      onOpen: () => {
        live.textContent = "progress: live";
        live.className = "badge ok";
      },
      onError: (error) => {
        live.textContent = "progress: reconnecting";
        live.className = "badge warn";
        if (error?.status && error.status < 500) toast(`Download progress: ${error.message}`, "error");
      },
      onEvent: (frame) => {
        let line;
        try {
          line = JSON.parse(frame.data);
        } catch {
          return;
        }
        if (!line?.model || !line?.baseUrl) return;
        const key = pullKey(line.baseUrl, line.model);
        if (line.status === "success") progress.delete(key);
        else progress.set(key, { line, at: Date.now() });
        redraw();
        if (line.status === "success") polling.refresh(); // the backend holds it now: show it as pulled
      },
    });

    return () => {
      polling.stop();
      feed.close();
      clearTimeout(drawTimer);
    };
  },
};

function pullView(line) {
  const total = Number(line.total) || 0;
  const completed = Number(line.completed) || 0;
  return h("span", { class: "pull", dataset: { status: line.status } },
    total ? h("progress", { max: total, value: completed }) : null, " ",
    h("span", { class: "muted" }, total ? `${line.status} ${bytes(completed)} / ${bytes(total)}` : line.status));
}
