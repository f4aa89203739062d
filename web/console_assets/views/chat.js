// The chat playground: talk to a task chain, the reply streamed as it is written.
//
// With the seeded `chat_chain` (the default) it is a chat session of the API: POST /chats starts one (the
// caller's), POST /chats/{id}/chat with "stream": true sends a message and answers `event: piece` frames as
// the model step writes, then `event: reply` (the whole answer, with the run's steps and token counts) or
// `event: error`; GET /chats/{id} is the history, kept by the service. A session always runs chat_chain
// (the API has no other), so another chain is talked to through its OpenAI-compatible endpoint,
// POST /openai/{chain}/v1/chat/completions with "stream": true — it must take an `openai_chat` input, as
// `openai_chat_chain` does — and that conversation lives in this page only. The session and the chain are
// in the URL (#/chat?chain=…&chat=…), so a reload reopens the conversation.
import { api, h, stream, attempt, navigate } from "../app.js";
import { stepsTable } from "./log.js";

const CHAT_CHAIN = "chat_chain";

function bubble(role, content, { pending = false } = {}) {
  const text = h("div", { class: "chat-text" }, content);
  const node = h("div", { class: `chat-message ${role}${pending ? " pending" : ""}`, dataset: { role } },
    h("div", { class: "chat-role muted" }, role), text);
  return { node, text };
}

export default {
  title: "Chat",
  async render(root, { params }) {
    const chainId = params.get("chain") || CHAT_CHAIN;
    const session = chainId === CHAT_CHAIN;
    const chatId = session ? params.get("chat") : null;
    const [chains, chats] = await Promise.all([
      api("GET", "/taskchains?limit=1000"),
      session ? api("GET", "/chats") : Promise.resolve([]),
    ]);
    const ids = chains.map((c) => c.id);
    if (!ids.includes(chainId)) ids.unshift(chainId);

    const chainSelect = h("select", { id: "chat-chain" }, ids.map((id) => h("option", { value: id, selected: id === chainId }, id)));
    chainSelect.addEventListener("change", () => navigate("chat", { chain: chainSelect.value }));
    const chatSelect = h(
      "select",
      { id: "chat-session", disabled: !session },
      h("option", { value: "" }, session ? "— choose a chat —" : "(this page only)"),
      chats.map((c) => h("option", { value: c.id, selected: c.id === chatId }, `${c.id.slice(0, 8)} · ${new Date(c.startedAt).toLocaleString()}`)),
    );
    if (chatId && !chats.some((c) => c.id === chatId)) chatSelect.append(h("option", { value: chatId, selected: true }, chatId.slice(0, 8)));
    chatSelect.addEventListener("change", () => navigate("chat", chatSelect.value ? { chain: chainId, chat: chatSelect.value } : { chain: chainId }));
    const newChat = h("button", { id: "chat-new", type: "button", disabled: !session }, "New chat");
    newChat.addEventListener("click", async () => {
      const created = await attempt(() => api("POST", "/chats"));
      if (created) navigate("chat", { chain: chainId, chat: created.id });
    });
    const model = h("input", { id: "chat-model", placeholder: "chain's default" });

    const history = h("div", { id: "chat-history", class: "chat-history" });
    const message = h("textarea", { id: "chat-message", placeholder: "Say something (Enter sends, Shift+Enter a new line)" });
    const send = h("button", { class: "primary", id: "chat-send", type: "submit" }, "Send");
    const details = h("div", { id: "chat-details" });
    const form = h("form", { class: "chat-form", id: "chat-form" }, message, send);
    message.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey) {
        event.preventDefault();
        form.requestSubmit();
      }
    });

    root.append(
      h("h1", {}, "Chat playground"),
      h(
        "div",
        { class: "row card" },
        h("label", {}, "Chain", chainSelect),
        h("label", {}, "Chat", chatSelect),
        newChat,
        h("label", {}, "Model (optional)", model),
      ),
      h("div", { class: "split chat-playground" }, h("div", { class: "card" }, history, form), details),
    );

    let turn = null;
    const local = []; // another chain's conversation: the OpenAI messages so far
    const scroll = () => (history.scrollTop = history.scrollHeight);

    async function loadHistory() {
      const messages = await api("GET", `/chats/${encodeURIComponent(chatId)}`);
      history.replaceChildren(...messages.map((m) => bubble(m.role, m.content).node));
      if (!messages.length) history.append(h("p", { class: "muted empty" }, "No messages yet."));
      scroll();
    }

    if (session && !chatId) {
      history.append(h("p", { class: "muted empty" }, "Start a chat with “New chat”, or choose one."));
      message.disabled = send.disabled = true;
    } else if (session) {
      await loadHistory();
    } else {
      history.append(h("p", { class: "muted empty" }, `Talking to ${chainId} through /openai/${chainId}/v1/chat/completions; not kept.`));
    }

    function finished(reply, failed) {
      reply.node.classList.remove("pending");
      if (failed) reply.node.classList.add("failed");
      send.disabled = message.disabled = false;
      message.focus();
      turn = null;
    }

    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = message.value.trim();
      if (!text || turn) return;
      message.value = "";
      send.disabled = message.disabled = true;
      history.querySelector(".empty")?.remove();
      history.append(bubble("user", text).node);
      const reply = bubble("assistant", "", { pending: true });
      reply.node.id = "chat-pending";
      history.append(reply.node);
      scroll();
      const models = model.value.trim() ? [model.value.trim()] : undefined;
      let streamed = "";
      let pieces = 0;
      let done = false;
      const fail = (error) => {
        if (done) return;
        done = true;
        reply.text.textContent = streamed;
        reply.node.append(h("div", { class: "error chat-error" }, error));
        finished(reply, true);
      };
      if (session) {
        turn = stream(`/chats/${encodeURIComponent(chatId)}/chat`, {
          post: { message: text, stream: true, models },
          onEvent(frame) {
            let data = null;
            try {
              data = JSON.parse(frame.data);
            } catch {
              return;
            }
            if (frame.event === "piece") {
              pieces += 1;
              streamed += data.content ?? "";
              reply.text.textContent = streamed;
              scroll();
            } else if (frame.event === "reply") {
              done = true;
              reply.node.removeAttribute("id");
              finished(reply, false);
              details.replaceChildren(
                h("div", { class: "card", id: "chat-turn" },
                  h("h2", {}, "Last turn"),
                  h("p", { class: "muted", id: "chat-usage" },
                    `streamed in ${pieces} piece${pieces === 1 ? "" : "s"} · tokens in ${data.inputTokenCount} · out ${data.outputTokenCount}`),
                  stepsTable(data.state ?? [], { id: "chat-steps", compact: true })),
              );
              attempt(loadHistory);
            } else if (frame.event === "error") {
              fail(data?.error?.message ?? "the turn failed");
            }
          },
          onError: (error) => fail(error.message || String(error)),
        });
        return;
      }
      local.push({ role: "user", content: text });
      const body = { model: model.value.trim() || chainId, messages: local, stream: true };
      turn = stream(`/openai/${encodeURIComponent(chainId)}/v1/chat/completions`, {
        post: body,
        onEvent(frame) {
          if (frame.data === "[DONE]") {
            done = true;
            local.push({ role: "assistant", content: streamed });
            reply.node.removeAttribute("id");
            finished(reply, false);
            return;
          }
          let data = null;
          try {
            data = JSON.parse(frame.data);
          } catch {
            return;
          }
          if (data.error) {
            local.pop();
            fail(data.error.message ?? "the chain failed");
            return;
          }
          streamed += data.choices?.[0]?.delta?.content ?? "";
          reply.text.textContent = streamed;
          scroll();
        },
        onError: (error) => {
          local.pop();
          fail(error.message || String(error));
        },
      });
    });

    return () => turn?.close();
  },
};
