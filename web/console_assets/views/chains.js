// Task chains: the stored chains (GET /taskchains), one drawn as a graph of its tasks and transitions, and
// a run of it on an input (POST /tasks) watched as it goes.
//
// The graph is an SVG drawn here: a box per task, laid out in columns by its distance from the first task
// (the start), an arrow per branch `goto` labelled with the branch's condition (`operator when`), a dashed
// one per `on_failure`, and for a branch that finishes the chain a short arrow to an end mark under its task. POST /tasks takes the
// chain itself, so a run sends the stored definition. While it runs the view follows the log's task-run
// events (/log/stream?type=task_run.) of its own request — the page names the request with an
// X-Request-ID it chose, and every event the run records carries it in `metadata.request_id` — and marks
// the tasks as their steps are recorded; when the answer comes, its steps are shown (a failed run's, from
// GET /tasks/runs/{id}: the failure answers no state).
import { api, h, json, stream, table, attempt, navigate } from "../app.js";
import { logHead, stepsTable } from "./log.js";

const SVG = "http://www.w3.org/2000/svg";
const END = "end";
const INPUT_TYPES = ["string", "chat_history", "openai_chat", "json", "int", "float", "bool", "any"];
const BOX = { width: 168, height: 46, column: 240, row: 86, margin: 24 };
const TOP = 30; // room above the first row for the arcs that skip columns

function svg(tag, attrs = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) if (value !== undefined && value !== null) element.setAttribute(name, String(value));
  for (const child of children) element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return element;
}

function short(text, length) {
  return text.length > length ? `${text.slice(0, length - 1)}…` : text;
}

function condition(branch) {
  const operator = branch.operator || "default";
  return operator === "default" ? "default" : `${operator} ${branch.when ?? ""}`.trim();
}

// Every arrow of a chain: [{from, to, label, failure}], `to` END for a finish.
function edgesOf(chain) {
  const edges = [];
  for (const task of chain.tasks ?? []) {
    for (const branch of task.transition?.branches ?? []) {
      edges.push({ from: task.id, to: branch.goto || END, label: condition(branch), alert: Boolean(branch.alert_on_match) });
    }
    if (task.transition?.on_failure) edges.push({ from: task.id, to: task.transition.on_failure, label: "on failure", failure: true });
  }
  return edges;
}

// Columns by breadth-first distance from the start (unreached tasks after the last), rows by definition order.
function layout(chain, edges) {
  const tasks = chain.tasks ?? [];
  const depth = new Map();
  if (tasks.length) depth.set(tasks[0].id, 0);
  const queue = tasks.length ? [tasks[0].id] : [];
  while (queue.length) {
    const id = queue.shift();
    for (const edge of edges) {
      if (edge.from === id && edge.to !== END && !depth.has(edge.to) && tasks.some((t) => t.id === edge.to)) {
        depth.set(edge.to, depth.get(id) + 1);
        queue.push(edge.to);
      }
    }
  }
  let deepest = Math.max(0, ...depth.values());
  for (const task of tasks) if (!depth.has(task.id)) depth.set(task.id, ++deepest);
  const rows = new Map();
  const at = new Map();
  for (const id of tasks.map((t) => t.id)) {
    if (!depth.has(id) || at.has(id)) continue;
    const column = depth.get(id);
    const row = rows.get(column) ?? 0;
    rows.set(column, row + 1);
    at.set(id, { x: BOX.margin + column * BOX.column, y: TOP + BOX.margin + row * BOX.row });
  }
  return { at, columns: Math.max(...depth.values()) + 1, rows: Math.max(1, ...rows.values()) };
}

// The chain as an SVG: its boxes are returned by task id, so a run can mark them.
export function chainGraph(chain) {
  const edges = edgesOf(chain);
  const { at, columns, rows } = layout(chain, edges);
  const width = BOX.margin * 2 + (columns - 1) * BOX.column + BOX.width + 60; // room for a last finish's label
  const height = TOP + BOX.margin * 2 + (rows - 1) * BOX.row + BOX.height + 40;
  const root = svg("svg", { id: "chain-graph", class: "chain-graph", viewBox: `0 0 ${width} ${height}`, width, height, role: "img" });
  root.append(
    svg(
      "defs",
      {},
      svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow-head" })),
    ),
  );
  const boxes = new Map();
  const edgeLayer = svg("g", { class: "edges" });
  const labelLayer = svg("g", { class: "labels" });
  const seen = new Map(); // from→to: how many arrows already, so parallel ones spread out
  const ends = new Map(); // task → how many finishing branches drawn under it
  for (const edge of edges) {
    const a = at.get(edge.from);
    if (a && edge.to === END) {
      // A finish: a short arrow from under the box to an end mark, labelled beside it (no arrow across the graph).
      const nth = ends.get(edge.from) ?? 0;
      ends.set(edge.from, nth + 1);
      const x = a.x + BOX.width - 18 - nth * 44;
      const y = a.y + BOX.height + 20;
      edgeLayer.append(svg("path", { d: `M ${x} ${a.y + BOX.height} L ${x} ${y - 8}`, class: "edge", "marker-end": "url(#arrow)", "data-from": edge.from, "data-to": END }));
      edgeLayer.append(svg("circle", { cx: x, cy: y - 2, r: 6, class: "end-mark", "data-task": END }));
      labelLayer.append(svg("text", { x: x + 10, y: y + 2, class: "edge-label" }, short(edge.label, 18)));
      continue;
    }
    const b = at.get(edge.to);
    if (!a || !b) continue;
    const pair = `${edge.from}→${edge.to}`;
    const nth = seen.get(pair) ?? 0;
    seen.set(pair, nth + 1);
    let d;
    let label;
    if (b.x > a.x + BOX.column) {
      // Over the columns in between: an arc above the boxes, so it crosses none.
      const x1 = a.x + BOX.width / 2 + nth * 10;
      const y1 = a.y;
      const x2 = b.x + BOX.width / 4;
      const y2 = b.y;
      const high = Math.min(y1, y2) - 26 - nth * 14;
      d = `M ${x1} ${y1} C ${x1} ${high}, ${x2} ${high}, ${x2} ${y2}`;
      label = { x: (x1 + x2) / 2, y: high + 4 };
    } else if (b.x > a.x) {
      const x1 = a.x + BOX.width;
      const y1 = a.y + BOX.height / 2 + nth * 8;
      const x2 = b.x;
      const y2 = b.y + BOX.height / 2 + nth * 8;
      const bend = (x2 - x1) / 2;
      d = `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`;
      // The first label above its arrow, a parallel one's below its own (which runs lower).
      label = { x: (x1 + x2) / 2, y: (y1 + y2) / 2 + (nth ? 14 : -6) };
    } else {
      // Back to an earlier (or the same) column: a loop under the boxes.
      const x1 = a.x + BOX.width / 2 + nth * 10;
      const y1 = a.y + BOX.height;
      const x2 = b.x + BOX.width / 2 - nth * 10;
      const y2 = b.y + BOX.height;
      const low = Math.max(y1, y2) + 30 + nth * 14;
      d = `M ${x1} ${y1} C ${x1} ${low}, ${x2} ${low}, ${x2} ${y2}`;
      label = { x: (x1 + x2) / 2, y: low - 4 };
    }
    const kind = edge.failure ? "edge failure" : edge.alert ? "edge alert" : "edge";
    edgeLayer.append(svg("path", { d, class: kind, "marker-end": "url(#arrow)", "data-from": edge.from, "data-to": edge.to }));
    labelLayer.append(svg("text", { x: label.x, y: label.y, "text-anchor": "middle", class: "edge-label" }, short(edge.label, 28)));
  }
  const nodeLayer = svg("g", { class: "nodes" });
  for (const task of chain.tasks ?? []) {
    const p = at.get(task.id);
    const group = svg("g", { class: "task", "data-task": task.id, transform: `translate(${p.x} ${p.y})` },
      svg("title", {}, `${task.id} (${task.handler})${task.description ? `: ${task.description}` : ""}`),
      svg("rect", { width: BOX.width, height: BOX.height, rx: 7 }),
      svg("text", { x: BOX.width / 2, y: 19, "text-anchor": "middle", class: "task-id" }, short(task.id, 22)),
      svg("text", { x: BOX.width / 2, y: 35, "text-anchor": "middle", class: "task-handler" }, short(task.handler ?? "", 26)),
    );
    if (task === chain.tasks[0]) group.classList.add("start");
    boxes.set(task.id, group);
    nodeLayer.append(group);
  }
  root.append(edgeLayer, nodeLayer, labelLayer);
  return { element: root, boxes };
}

// The input as POST /tasks wants it: a string as typed; otherwise JSON, or (chat types) one user message.
function inputValue(text, type) {
  if (type === "string") return text;
  try {
    return JSON.parse(text);
  } catch {
    if (type === "chat_history") return { messages: [{ role: "user", content: text }] };
    if (type === "openai_chat") return { messages: [{ role: "user", content: text }] };
    return text;
  }
}

function requestId() {
  const bytes = crypto.getRandomValues(new Uint8Array(8));
  return `console-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

async function runOf(runId) {
  // The run is recorded without waiting for the read model: a moment may pass before GET answers it.
  for (let tries = 0; tries < 20; tries += 1) {
    try {
      return await api("GET", `/tasks/runs/${encodeURIComponent(runId)}`);
    } catch (error) {
      if (error.status !== 404) throw error;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
  return null;
}

export default {
  title: "Chains",
  async render(root, { params }) {
    const chosen = params.get("id");
    const chains = await api("GET", "/taskchains?limit=1000");
    root.append(h("h1", {}, "Task chains"));
    const list = table(
      [
        ["Id", (c) => h("a", { href: `#/chains?id=${encodeURIComponent(c.id)}`, class: "mono" }, c.id)],
        ["Tasks", (c) => String(c.tasks?.length ?? 0)],
        ["Description", (c) => c.description ?? ""],
      ],
      chains,
      { key: (c) => c.id, empty: "No task chains stored (POST /taskchains)." },
    );
    list.id = "chains-list";
    for (const tr of list.querySelectorAll?.("tbody tr") ?? []) if (tr.dataset.key === chosen) tr.classList.add("selected");
    const chain = chosen ? chains.find((c) => c.id === chosen) ?? (await attempt(() => api("GET", `/taskchains/${encodeURIComponent(chosen)}`))) : null;
    if (!chain) {
      root.append(h("div", { class: "card" }, list));
      return undefined;
    }

    const { element: graph, boxes } = chainGraph(chain);
    const inputType = h("select", { id: "chain-input-type" }, INPUT_TYPES.map((t) => h("option", { value: t }, t)));
    const input = h("textarea", { id: "chain-input", placeholder: "The chain's input (a string, or JSON)" });
    const runButton = h("button", { class: "primary", id: "chain-run", type: "submit" }, "Run");
    const progress = h("div", { id: "chain-progress" });
    const result = h("div", { id: "chain-result" });
    let watch = null;

    const mark = (taskId, kind) => boxes.get(taskId)?.classList.add(kind);
    const unmark = () => {
      for (const box of boxes.values()) box.classList.remove("visited", "failed");
    };

    async function run(event) {
      event.preventDefault();
      watch?.close();
      unmark();
      runButton.disabled = true;
      const rid = requestId();
      const live = [];
      let runId = null;
      const liveList = h("ol", { id: "chain-live-steps", class: "mono" });
      const runStatus = h("p", { id: "chain-run-status" }, h("span", { class: "badge warn" }, "running"), " request ", h("code", {}, rid));
      progress.replaceChildren(runStatus, liveList);
      result.replaceChildren();
      try {
        const head = await logHead();
        watch = stream(`/log/stream?type=task_run.&after=${head}`, {
          onEvent(frame) {
            let logged;
            try {
              logged = JSON.parse(frame.data);
            } catch {
              return;
            }
            if (logged.metadata?.request_id !== rid) return;
            runId = logged.aggregate_id;
            if (logged.event_type === "task_run.step_recorded") {
              const step = logged.data?.step ?? {};
              live.push(step);
              mark(step.taskID, step.error?.error ? "failed" : "visited");
              liveList.append(h("li", { dataset: { task: step.taskID } }, `${step.taskID} → ${step.transition || "(failed)"}`));
            } else if (logged.event_type === "task_run.started") {
              liveList.append(h("li", { class: "muted" }, `started run ${logged.aggregate_id}`));
            }
          },
        });
        const body = { input: inputValue(input.value, inputType.value), inputType: inputType.value, chain };
        let answer = null;
        let failure = null;
        try {
          answer = await api("POST", "/tasks", body, { headers: { "X-Request-ID": rid } });
        } catch (error) {
          failure = error;
        }
        if (answer) {
          runId = answer.id;
          for (const step of answer.state) mark(step.taskID, step.error?.error ? "failed" : "visited");
          runStatus.replaceChildren(h("span", { class: "badge ok" }, "finished"), " run ", h("code", {}, answer.id));
          result.replaceChildren(
            h("h2", {}, "Steps"),
            stepsTable(answer.state, { id: "chain-steps" }),
            h("h2", {}, `Output (${answer.outputType})`),
            json(answer.output),
            links(runId, rid),
          );
          return;
        }
        runStatus.replaceChildren(h("span", { class: "badge bad" }, "failed"), " ", h("span", { class: "error", id: "chain-error" }, failure.message));
        if (!runId) return; // refused before it started (a bad input, say): there is no run
        const recorded = await runOf(runId);
        const steps = recorded?.state ?? live;
        for (const step of steps) mark(step.taskID, step.error?.error ? "failed" : "visited");
        result.replaceChildren(h("h2", {}, "Steps"), stepsTable(steps, { id: "chain-steps" }), links(runId, rid));
      } catch (error) {
        result.replaceChildren(h("p", { class: "error" }, error.message || String(error)));
      } finally {
        runButton.disabled = false;
      }
    }

    function links(runId, rid) {
      return h(
        "p",
        { class: "row" },
        h("button", { type: "button", class: "link", id: "chain-run-log", onclick: () => navigate("log", { aggregate: `task_run/${runId}`, after: "0" }) },
          "This run's events in the log"),
        h("span", { class: "muted" }, `GET /tasks/runs/${runId} · request ${rid}`),
      );
    }

    root.append(
      h("div", { class: "card" }, list),
      h(
        "div",
        { class: "card", id: "chain-view" },
        h("h2", {}, chain.id, chain.description ? h("span", { class: "muted" }, ` — ${chain.description}`) : null),
        h("div", { class: "graph-scroll" }, graph),
        h("details", {}, h("summary", {}, "Definition (JSON)"), json(chain)),
      ),
      h(
        "div",
        { class: "split" },
        h(
          "form",
          { class: "card", id: "chain-run-form", onsubmit: run },
          h("h2", {}, "Run"),
          h("div", { class: "row" }, h("label", {}, "Input type", inputType), runButton),
          h("label", {}, "Input", input),
          progress,
        ),
        result,
      ),
    );
    return () => watch?.close();
  },
};
