/* chatgate simulator: the page's side. It only talks to /simulator/api/* (the server signs, encrypts and
   posts to the real webhooks, and plays the platform API the workers push to); no framework, no build step. */
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 500;
const PANEL_MS = 2000;

const state = {
  config: null,
  platform: "wechat",
  mode: "plain",
  user: "",
  voice: false,
  messages: new Map(), // seq -> message, as the server last sent it (cards update in place)
  last: 0,
  pending: [], // the user's own bubbles, shown at once, until the conversation holds them
  typingUntil: 0,
  generation: 0, // bumped on every switch of platform, mode or user: late answers of the old one are dropped
};

const MODES = {
  wechat: [["plain", "plain 明文模式"], ["safe", "safe 安全模式"]],
  feishu: [["direct", "direct chat 单聊"], ["group", "group 群聊"]],
};

const EVENTS = {subscribe: "— you followed the account 已关注 —", unsubscribe: "— you unfollowed 已取消关注 —"};

const LABELS = {
  reply: "passive reply · 被动回复",
  push: "pushed later · 客服消息",
  feishu_reply: "Feishu reply · 回复",
  card: "Feishu card · 卡片",
};

async function api(path, body) {
  const init = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body),
  };
  const res = await fetch("/simulator/api/" + path, init);
  let data = {};
  try {
    data = await res.json();
  } catch (e) {
    data = {error: `HTTP ${res.status}`};
  }
  if (!res.ok) throw new Error(data.error || `HTTP ${res.status}`);
  return data;
}

function status(text) {
  $("status").textContent = text;
}

// -- users -------------------------------------------------------------------------------------------

function knownUsers() {
  return (state.config.users || []).filter((u) => u.platform === state.platform);
}

function labelFor(user) {
  const known = (state.config.users || []).find((u) => u.user === user);
  return known && known.label ? known.label : user.slice(-6);
}

async function addUser() {
  const count = knownUsers().length + 1;
  const made = await api("users", {platform: state.platform, label: `user ${count}`});
  state.config.users = (state.config.users || []).concat([{...made, following: true}]);
  fillUsers(made.user);
  switchTo();
}

async function fillUsers(selected) {
  if (!knownUsers().length) {
    await addUser();
    return;
  }
  const select = $("user");
  const users = knownUsers();
  select.replaceChildren(...users.map((u) => new Option(`${u.label} …${u.user.slice(-6)}`, u.user)));
  select.value = users.some((u) => u.user === selected) ? selected : users[users.length - 1].user;
}

// -- switching ---------------------------------------------------------------------------------------

function fillModes() {
  // A WeChat account is in one mode, its server's: WECHAT_AES_KEY set means safe mode.
  const select = $("mode");
  const account = state.config.wechat.modes || [];
  select.replaceChildren(...MODES[state.platform].map(([value, text]) => {
    const option = new Option(text, value);
    if (state.platform === "wechat" && !account.includes(value)) {
      option.disabled = true;
      option.text += value === "safe" ? " (set WECHAT_AES_KEY)" : " (unset WECHAT_AES_KEY)";
    }
    return option;
  }));
  const wanted = state.platform === "wechat" ? (state.config.wechat.mode || account[0] || "plain") : "direct";
  const usable = [...select.options].some((o) => o.value === state.mode && !o.disabled);
  select.value = usable ? state.mode : wanted;
}

function switchTo() {
  state.platform = document.querySelector("input[name=platform]:checked").value;
  state.mode = $("mode").value;
  state.user = $("user").value;
  state.messages = new Map();
  nodes.clear();
  state.last = 0;
  state.pending = [];
  state.typingUntil = 0;
  state.generation += 1;
  document.body.classList.toggle("feishu", state.platform === "feishu");
  $("mention-box").hidden = !(state.platform === "feishu" && state.mode === "group");
  const feishu = state.config.feishu || {};
  if (state.platform === "wechat") {
    $("account").textContent = "chatgate 公众号";
    $("account-sub").textContent = `WeChat official account · ${state.mode} mode`;
  } else if (state.mode === "group") {
    $("account").textContent = "chatgate group 群聊";
    $("account-sub").textContent = `Feishu group with ${feishu.bot_name || "the bot"}: @mention it to ask`;
  } else {
    $("account").textContent = feishu.bot_name || "chatgate";
    $("account-sub").textContent = "Feishu direct chat · 单聊";
  }
  if (state.platform === "feishu" && !feishu.enabled) {
    status("Feishu is not simulated here: a real Feishu app is configured, or CHATGATE_SIMULATOR_SECRET is unset");
  } else if (state.platform === "wechat" && state.config.wechat.enabled === false) {
    status("WeChat is not configured (set WECHAT_TOKEN)");
  } else {
    status(state.config.demo_llm ? "no LLM key: the demo responder answers" : "");
  }
  $("code-box").hidden = true;
  render();
  refreshPanel();
}

function chatParam() {
  // Feishu: the group's chat id (one group, shared by every simulated user), or empty for a direct chat.
  return state.platform === "feishu" && state.mode === "group" ? state.config.feishu.group_chat || "" : "";
}

// -- sending -----------------------------------------------------------------------------------------

async function send(text, voice = state.voice) {
  text = text.trim();
  if (!text) return;
  const mention = state.platform === "feishu" && state.mode === "group" && $("mention").checked;
  const pending = {text, voice, mention, at: Date.now() / 1000, generation: state.generation, error: ""};
  state.pending.push(pending);
  render(true);
  const body = {platform: state.platform, mode: state.mode, user: state.user, text, voice, mention};
  try {
    await api("send", body);
  } catch (e) {
    pending.error = e.message;
    render();
  }
  refreshPanel();
}

async function event(name) {
  try {
    await api("event", {platform: state.platform, user: state.user, event: name});
    const known = knownUsers().find((u) => u.user === state.user);
    if (known) known.following = name === "subscribe";
  } catch (e) {
    status(e.message);
  }
  refreshPanel();
}

// -- the conversation --------------------------------------------------------------------------------

async function poll() {
  const generation = state.generation;
  try {
    if (state.user) {
      const q = new URLSearchParams({platform: state.platform, user: state.user, chat: chatParam(), since: state.last});
      const data = await api("conversation?" + q);
      if (generation === state.generation) take(data);
    }
  } catch (e) {
    status("conversation: " + e.message);
  }
  setTimeout(poll, POLL_MS);
}

function take(data) {
  let changed = false;
  if (data.typing_until !== undefined) {
    state.typingUntil = data.typing_until || 0;
  }
  for (const m of data.messages || []) {
    if (m.kind === "typing") {
      state.typingUntil = Math.max(state.typingUntil, m.typing_until || m.at + 15);
      continue;
    }
    const old = state.messages.get(m.seq);
    if (!old || JSON.stringify(old) !== JSON.stringify(m)) {
      state.messages.set(m.seq, m);
      changed = true;
      if (!old && m.from === "user" && m.user === state.user) settlePending(m);
    }
  }
  if (typeof data.last === "number") state.last = Math.max(state.last, data.last);
  const typing = state.typingUntil > Date.now() / 1000;
  if ($("typing").hidden === typing) $("typing").hidden = !typing;
  if (changed) {
    render();
    refreshPanel();
  }
}

function settlePending(m) {
  const i = state.pending.findIndex((p) => m.text && (m.text === p.text || m.text.endsWith(p.text)));
  if (i >= 0) state.pending.splice(i, 1);
}

const nodes = new Map(); // seq -> [the message's JSON, its <li>]: unchanged messages keep their element

function render(scroll = false) {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  const items = [...state.messages.values()].sort((a, b) => a.seq - b.seq).map((m) => {
    const json = JSON.stringify(m);
    const known = nodes.get(m.seq);
    if (known && known[0] === json) return known[1];
    const li = item(m);
    const wasOpen = known && known[1].querySelector("details[open]");
    if (wasOpen && li.querySelector("details")) li.querySelector("details").open = true;
    nodes.set(m.seq, [json, li]);
    return li;
  });
  for (const p of state.pending) {
    if (p.generation !== state.generation) continue;
    items.push(item({from: "user", kind: p.voice ? "voice" : "text", text: p.text, mention: p.mention,
      pending: true, error: p.error}));
  }
  list.replaceChildren(...items);
  if (scroll || atBottom) list.scrollTop = list.scrollHeight;
}

function item(m) {
  const li = document.createElement("li");
  li.dataset.seq = m.seq ?? "";
  li.dataset.via = m.via || "";
  if (m.kind === "event" || m.from === "system") {
    li.className = "system" + (m.kind === "error" ? " error" : "");
    li.textContent = EVENTS[m.text] || (m.kind === "error" ? `⚠ ${m.text}` : `— ${m.text} —`);
    return li;
  }
  const mine = m.from === "user" && (m.pending || !m.user || m.user === state.user);
  li.className = m.from === "user" ? (mine ? "user" : "user other") : "bot";
  if (m.pending) li.classList.add("pending");
  if (state.platform === "feishu" && state.mode === "group") {
    const who = m.from === "user" ? labelFor(m.user || state.user) : (state.config.feishu.bot_name || "bot");
    li.append(el("span", "who", who));
  }
  if (m.card) {
    li.append(card(m.card));
  } else {
    const bubble = el("div", "bubble", (m.mention ? `@${state.config.feishu.bot_name || "bot"} ` : "") + (m.text || ""));
    if (m.kind === "voice") bubble.prepend(el("span", "voice-note", "voice 语音 · recognized:"));
    li.append(bubble);
  }
  const label = m.error ? `not sent: ${m.error}` : m.pending ? "sending…" : labelOf(m);
  if (label) {
    const span = el("span", "label", label);
    if (m.via) span.classList.add(m.via);
    if (m.card && m.card.streaming) span.classList.add("streaming");
    li.append(span);
  }
  return li;
}

function labelOf(m) {
  if (m.from === "user") return "";
  const base = LABELS[m.via] || (m.card ? LABELS.card : "");
  if (m.card) return `${base} · ${m.card.streaming ? "streaming…" : "final"}`;
  return base;
}

function card(c) {
  const box = el("div", "card" + (c.streaming ? " streaming" : ""));
  box.dataset.cardId = c.card_id || "";
  box.append(el("div", "card-head", c.streaming ? "answering… 回答中" : "answer 回答"));
  if (c.thinking) {
    const details = el("details");
    details.open = !!c.streaming && !c.text;
    details.append(el("summary", "", "thinking 思考过程"), el("div", "", c.thinking));
    box.append(details);
  }
  box.append(el("div", "card-body", c.text || ""));
  return box;
}

function el(tag, className = "", text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// -- the panel ---------------------------------------------------------------------------------------

let panelTimer = 0;

async function refreshPanel() {
  clearTimeout(panelTimer);
  panelTimer = setTimeout(refreshPanel, PANEL_MS);
  const generation = state.generation;
  if (!state.user) return;
  try {
    const data = await api("panel?" + new URLSearchParams({platform: state.platform, user: state.user}));
    if (generation === state.generation) showPanel(data);
  } catch (e) {
    $("op-error").textContent = "panel: " + e.message;
  }
}

function showPanel(data) {
  const u = data.user;
  $("user-id").textContent = state.user;
  if (!u) {
    $("trial-left").textContent = `${data.trial_size ?? state.config.trial} (not written yet)`;
    $("member-until").textContent = "none 未开通";
  } else {
    $("trial-left").textContent = `${u.trial_left} / ${u.trial_size ?? data.trial_size}`;
    $("member-until").textContent = u.member_until ? (u.membership || when(u.member_until, true)) : "none 未开通";
  }
  $("ledger").replaceChildren(...(data.ledger || []).map((row) => {
    const tr = document.createElement("tr");
    const change = [];
    if (row.answers) change.push(`${row.answers > 0 ? "+" : ""}${row.answers} answer${Math.abs(row.answers) === 1 ? "" : "s"}`);
    if (row.days) change.push(`+${row.days} days`);
    if (row.member_until) change.push(`until ${row.member_until_text || when(row.member_until, true)}`);
    const why = [row.actor, row.note].filter(Boolean).join(": ");
    const at = row.at_text ? row.at_text.split(" ").pop() : when(row.at); // the server's time zone, as the CLI
    for (const text of [at, row.kind, change.join(", "), why]) tr.append(el("td", "", text ?? ""));
    tr.firstChild.title = row.at_text || "";
    return tr;
  }));
}

function when(at, date = false) {
  if (typeof at !== "number") return String(at ?? "");
  const d = new Date(at * 1000);
  const two = (n) => String(n).padStart(2, "0");
  return date ? `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())}`
    : `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

async function operate(form) {
  $("op-error").textContent = "";
  const body = {action: form.dataset.action, platform: state.platform, user: state.user};
  for (const input of form.querySelectorAll("input")) body[input.name] = Number(input.value);
  try {
    const data = await api("operator", body);
    if (data.code) {
      $("code").textContent = data.code;
      $("code-box").hidden = false;
    } else if ("ledger" in data) {
      showPanel(data);
    }
  } catch (e) {
    $("op-error").textContent = e.message;
  }
  refreshPanel();
}

// -- wiring ------------------------------------------------------------------------------------------

async function main() {
  state.config = await api("config");
  fillModes();
  await fillUsers();
  for (const radio of document.querySelectorAll("input[name=platform]")) {
    radio.addEventListener("change", async () => {
      state.platform = radio.value;
      fillModes();
      await fillUsers();
      switchTo();
    });
  }
  $("mode").addEventListener("change", switchTo);
  $("user").addEventListener("change", switchTo);
  $("new-user").addEventListener("click", () => addUser().catch((e) => status(e.message)));
  $("composer").addEventListener("submit", (e) => {
    e.preventDefault();
    send($("text").value);
    $("text").value = "";
  });
  $("voice").addEventListener("click", () => {
    state.voice = !state.voice;
    $("voice").setAttribute("aria-pressed", String(state.voice));
    $("text").placeholder = state.voice ? "what you say (the recognition text)" : "type a message";
  });
  for (const button of document.querySelectorAll(".quick-send")) {
    button.addEventListener("click", () => send(button.dataset.text, false));
  }
  $("continue").textContent = $("continue").dataset.text = state.config.continue_word || "继续";
  $("follow").addEventListener("click", () => event("subscribe"));
  $("unfollow").addEventListener("click", () => event("unsubscribe"));
  for (const form of document.querySelectorAll("form.op")) {
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      operate(form);
    });
  }
  $("send-code").addEventListener("click", () => send($("code").textContent, false));
  switchTo();
  poll();
  document.body.dataset.ready = "1";
}

main().catch((e) => status("could not load the simulator: " + e.message));
