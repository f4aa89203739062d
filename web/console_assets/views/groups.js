// Groups: each affinity group with its backends and models, editable through the public API — create and
// delete a group, assign and remove backends and models; and the declared models a group can be given
// (declare one, delete one). A backend serves a model only when a group pairs them, and the reconciler only
// looks at grouped backends, so this is where a new backend starts to be used.
//
// The view polls every 2 s (another operator, or a script, may change the catalog meanwhile) and redraws only
// when what it shows changed, keeping the choices made in its drop-downs.
import { api, attempt, h, poller, shownUrl, table } from "../app.js";

const POLL_MS = 2000;
const PURPOSES = ["chat", "internal_tasks", "internal_embed", "internal_chat", "embedding"]; // suggestions only
const CAPABILITIES = [["canChat", "chat"], ["canPrompt", "prompt"], ["canEmbed", "embed"], ["canStream", "stream"]];

const at = (id) => encodeURIComponent(id);

export default {
  title: "Groups",
  render(root) {
    let data = null;
    let shown = "";

    const groupName = h("input", { id: "group-name", name: "name", required: true, autocomplete: "off", placeholder: "team" });
    const purpose = h("input", { id: "group-purpose", name: "purposeType", required: true, autocomplete: "off", list: "purposes", placeholder: "chat" });
    const createGroup = async (event) => {
      event.preventDefault();
      const body = { name: groupName.value.trim(), purposeType: purpose.value.trim() };
      if (await attempt(() => api("POST", "/groups", body), `Group ${body.name} created`)) {
        groupName.value = "";
        purpose.value = "";
        polling.refresh();
      }
    };

    const modelName = h("input", { id: "model-name", name: "model", required: true, autocomplete: "off", placeholder: "llama3:8b" });
    const context = h("input", { id: "model-context", name: "contextLength", type: "number", min: 1, value: "4096", required: true });
    const caps = CAPABILITIES.map(([field, label]) =>
      [field, h("input", { type: "checkbox", name: field, id: `model-${label}`, checked: field !== "canEmbed" })]);
    const declareModel = async (event) => {
      event.preventDefault();
      const body = { model: modelName.value.trim(), contextLength: Number(context.value) };
      for (const [field, box] of caps) body[field] = box.checked;
      if (await attempt(() => api("POST", "/models", body), `Model ${body.model} declared`)) {
        modelName.value = "";
        polling.refresh();
      }
    };

    const problem = h("p", { class: "error", id: "groups-error" });
    const groupsBox = h("div", { id: "groups-list", class: "grid" }, h("p", { class: "muted" }, "Loading…"));
    const modelsBox = h("div", { id: "models-list" });

    root.append(
      h("h1", {}, "Groups"),
      h("datalist", { id: "purposes" }, PURPOSES.map((p) => h("option", { value: p }))),
      h("form", { class: "card row", id: "group-form", onsubmit: createGroup },
        h("label", {}, "Name", groupName), h("label", {}, "Purpose type", purpose),
        h("button", { class: "primary", type: "submit", id: "group-create" }, "Create group")),
      problem,
      groupsBox,
      h("h2", {}, "Declared models"),
      h("form", { class: "card row", id: "model-form", onsubmit: declareModel },
        h("label", {}, "Model", modelName), h("label", {}, "Context length", context),
        caps.map(([, box], i) => h("label", { class: "check" }, box, CAPABILITIES[i][1])),
        h("button", { class: "primary", type: "submit", id: "model-declare" }, "Declare model")),
      modelsBox,
    );

    const act = async (action, done) => {
      if ((await attempt(action, done)) !== undefined) polling.refresh();
    };

    const chooser = (group, kind, options) => {
      const select = h("select", { dataset: { testid: `${kind}-choice`, group: group.id, kind } },
        h("option", { value: "" }, options.length ? `— ${kind} —` : `no ${kind} left`),
        options.map(([value, label]) => h("option", { value }, label)));
      const assign = () => {
        const choice = select.value;
        if (!choice) return;
        const path = kind === "backend"
          ? `/backend-affinity/${at(group.id)}/backends/${at(choice)}`
          : `/model-affinity/${at(group.id)}/models/${at(choice)}`;
        act(() => api("POST", path), `${kind === "backend" ? "Backend" : "Model"} assigned to ${group.name}`);
      };
      return h("div", { class: "row assign" }, select,
        h("button", { type: "button", dataset: { testid: `assign-${kind}` }, disabled: !options.length, onclick: assign }, "Assign"));
    };

    const groupCard = (entry, backends, models) => {
      const { group } = entry;
      const inBackends = new Set(entry.backends.map((b) => b.id));
      const inModels = new Set(entry.models.map((m) => m.model));
      const removeGroup = () => {
        if (!confirm(`Delete group ${group.name}? Its backends and models stay, unassigned from it.`)) return;
        act(() => api("DELETE", `/groups/${at(group.id)}`), `Group ${group.name} deleted`);
      };
      return h("section", { class: "card group", dataset: { key: group.id, name: group.name } },
        h("div", { class: "row group-head" },
          h("h2", {}, group.name), h("span", { class: "badge" }, group.purposeType),
          h("button", { class: "danger", type: "button", dataset: { testid: "delete-group" }, onclick: removeGroup }, "Delete group")),
        h("h3", {}, "Backends"),
        table(
          [
            ["Name", (b) => b.name],
            ["Type", (b) => b.type],
            ["Base URL", (b) => h("span", { class: "mono" }, shownUrl(b.baseUrl))],
            ["", (b) => h("button", { type: "button", class: "link", dataset: { testid: "remove-backend" },
              onclick: () => act(() => api("DELETE", `/backend-affinity/${at(group.id)}/backends/${at(b.id)}`), `Backend ${b.name} removed from ${group.name}`) }, "Remove")],
          ],
          entry.backends,
          { key: (b) => b.id, empty: "No backend." },
        ),
        chooser(group, "backend", backends.filter((b) => !inBackends.has(b.id)).map((b) => [b.id, `${b.name} (${b.type})`])),
        h("h3", {}, "Models"),
        table(
          [
            ["Model", (m) => h("span", { class: "mono" }, m.model)],
            ["Context", (m) => String(m.contextLength)],
            ["Can", (m) => capabilities(m)],
            ["", (m) => h("button", { type: "button", class: "link", dataset: { testid: "remove-model" },
              onclick: () => act(() => api("DELETE", `/model-affinity/${at(group.id)}/models/${at(m.model)}`), `Model ${m.model} removed from ${group.name}`) }, "Remove")],
          ],
          entry.models,
          { key: (m) => m.model, empty: "No model." },
        ),
        chooser(group, "model", models.filter((m) => !inModels.has(m.model)).map((m) => [m.model, m.model])),
      );
    };

    const draw = () => {
      const signature = JSON.stringify(data);
      if (signature === shown) return;
      shown = signature;
      const { groups, backends, models } = data;
      // Keep what the reader picked in the drop-downs across the redraw.
      const picked = new Map([...root.querySelectorAll("select[data-group]")].map((s) => [`${s.dataset.group}/${s.dataset.kind}`, s.value]));
      groupsBox.replaceChildren(
        ...(groups.length
          ? groups.map((entry) => groupCard(entry, backends, models))
          : [h("p", { class: "muted empty" }, "No group yet: create one above.")]),
      );
      for (const select of root.querySelectorAll("select[data-group]")) {
        const value = picked.get(`${select.dataset.group}/${select.dataset.kind}`);
        if (value && [...select.options].some((o) => o.value === value)) select.value = value;
      }
      const usedBy = new Map();
      for (const entry of groups) for (const m of entry.models) usedBy.set(m.model, [...(usedBy.get(m.model) ?? []), entry.group.name]);
      modelsBox.replaceChildren(
        table(
          [
            ["Model", (m) => h("span", { class: "mono" }, m.model)],
            ["Context", (m) => String(m.contextLength)],
            ["Can", (m) => capabilities(m)],
            ["Groups", (m) => (usedBy.get(m.model) ?? []).join(", ") || h("span", { class: "muted" }, "none")],
            ["", (m) => h("button", { type: "button", class: "danger", dataset: { testid: "delete-model" },
              onclick: () => {
                if (confirm(`Delete model ${m.model}? Its group assignments go with it.`)) {
                  act(() => api("DELETE", `/models/${at(m.model)}`), `Model ${m.model} deleted`);
                }
              } }, "Delete")],
          ],
          models,
          { key: (m) => m.model, empty: "No model declared yet." },
        ),
      );
    };

    const load = async () => {
      try {
        const [groupList, backends, models] = await Promise.all([
          api("GET", "/groups"),
          api("GET", "/backends?limit=1000"),
          api("GET", "/models?limit=1000"),
        ]);
        const groups = (
          await Promise.all(
            groupList.map(async (group) => {
              try {
                const [members, assigned] = await Promise.all([
                  api("GET", `/backend-affinity/${at(group.id)}/backends`),
                  api("GET", `/model-affinity/${at(group.id)}/models`),
                ]);
                return { group, backends: members, models: assigned };
              } catch (error) {
                if (error.status === 404) return null; // deleted meanwhile
                throw error;
              }
            }),
          )
        ).filter(Boolean);
        // Only what is drawn (a backend's observed state changes often and is the Backends view's).
        data = {
          groups,
          backends: backends.map(({ id, name, type, baseUrl }) => ({ id, name, type, baseUrl })),
          models,
        };
        problem.textContent = "";
        draw();
      } catch (error) {
        problem.textContent = `Could not refresh: ${error.message || error}`;
      }
    };
    const polling = poller(load, POLL_MS);
    return () => polling.stop();
  },
};

function capabilities(model) {
  const can = CAPABILITIES.filter(([field]) => model[field]).map(([, label]) => label);
  return can.length ? can.join(", ") : h("span", { class: "muted" }, "nothing");
}
