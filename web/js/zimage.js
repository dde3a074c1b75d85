// comfyui-zimage in the ComfyUI frontend: a price badge on every paid node and the Z-Image sidebar tab.
//
// Prices come only from POST /zimage/price (the library computes them from its catalog); this file holds no price.
// Strings come from the pack's locales/<lang>/main.json (key "zimage"), read through ComfyUI's /i18n.

import { app } from "../../../scripts/app.js";
import { api } from "../../../scripts/api.js";

const PAID_NODES = new Set(["ZImageGenerate", "ZImageEdit", "ZImageInpaint", "ZImageControlNet", "QingboTaskSubmit"]);
// The widgets that can choose a model or a count; the server decides what each one costs.
const PRICE_WIDGETS = ["model", "api", "count", "mode", "prompt_extend"];
const LORA_NODE = "ZImageLoRA";
const DEBOUNCE_MS = 250;
const REFRESH_MS = 10000;

// -- strings ---------------------------------------------------------------------------------------------------------

let messages = null;

function locale() {
  const setting = app.extensionManager?.setting?.get?.("Comfy.Locale") ?? app.ui?.settings?.getSettingValue?.("Comfy.Locale");
  return String(setting || navigator.language || "en");
}

async function loadMessages() {
  let all = {};
  try {
    const res = await api.fetchApi("/i18n");
    if (res.ok) all = await res.json();
  } catch (err) {
    console.warn("[zimage] no translations:", err);
  }
  const lang = locale();
  const pick = (code) => all?.[code];
  messages = { own: pick(lang) ?? pick(lang.split("-")[0]) ?? {}, en: pick("en") ?? {} };
}

function t(key, values = {}) {
  const look = (tree) => key.split(".").reduce((node, part) => (node == null ? undefined : node[part]), tree);
  let text = look(messages?.own) ?? look(messages?.en) ?? key;
  for (const [name, value] of Object.entries(values)) text = text.replaceAll(`{${name}}`, String(value));
  return text;
}

// -- prices ----------------------------------------------------------------------------------------------------------

const prices = new Map(); // request key -> {text, answer} once known
const pending = new Map(); // request key -> Promise

export function priceRequest(node) {
  const widgets = {};
  for (const widget of node.widgets ?? []) {
    if (PRICE_WIDGETS.includes(widget.name)) widgets[widget.name] = widget.value;
  }
  return { node: node.comfyClass ?? node.type, widgets, loras: loraCount(node) };
}

export function loraCount(node) {
  // How many Z-Image LoRA nodes are chained into the node's loras input (anything else connected counts as one).
  let count = 0;
  let current = node;
  for (let guard = 0; guard < 8; guard++) {
    const slot = current.inputs?.findIndex((input) => input.name === "loras") ?? -1;
    if (slot < 0 || current.inputs[slot].link == null) break;
    const origin = current.getInputNode?.(slot);
    count += 1;
    if (!origin || (origin.comfyClass ?? origin.type) !== LORA_NODE) break;
    current = origin;
  }
  return count;
}

async function fetchPrice(key, request) {
  if (prices.has(key)) return prices.get(key);
  if (!pending.has(key)) {
    pending.set(key, (async () => {
      try {
        const res = await api.fetchApi("/zimage/price", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(request),
        });
        const answer = await res.json();
        // Refused (ComfyUI opened from another machine): no badge rather than a warning on every node.
        const text = res.ok ? answer.text : res.status === 403 ? "" : t("zimage.badge.noPrice");
        const known = { text, answer: res.ok ? answer : null, error: answer.error };
        prices.set(key, known);
        return known;
      } catch (err) {
        return { text: "", error: String(err) }; // not cached: asked again when the widgets change
      } finally {
        pending.delete(key);
      }
    })());
  }
  return pending.get(key);
}

class PriceBadge {
  // Drawn by LiteGraph's LGraphNode.drawBadges like its own LGraphBadge: height, getWidth(ctx), draw(ctx, x, y).
  constructor() {
    this.text = "";
    this.fontSize = 12;
    this.padding = 6;
    this.height = 20;
    this.fgColor = "#ffffff";
    this.bgColor = "#8D6932";
    this.xOffset = 0;
    this.yOffset = 0;
  }

  get visible() {
    return this.text.length > 0;
  }

  getWidth(ctx) {
    if (!this.visible) return 0;
    const font = ctx.font;
    ctx.font = `${this.fontSize}px sans-serif`;
    const width = ctx.measureText(this.text).width + this.padding * 2;
    ctx.font = font;
    return width;
  }

  draw(ctx, x, y) {
    if (!this.visible) return;
    const { font, fillStyle, textBaseline, textAlign } = ctx;
    const width = this.getWidth(ctx);
    ctx.font = `${this.fontSize}px sans-serif`;
    ctx.fillStyle = this.bgColor;
    ctx.beginPath();
    if (ctx.roundRect) ctx.roundRect(x, y, width, this.height, 5);
    else ctx.rect(x, y, width, this.height);
    ctx.fill();
    ctx.fillStyle = this.fgColor;
    ctx.textBaseline = "middle";
    ctx.textAlign = "left";
    ctx.fillText(this.text, x + this.padding, y + this.height / 2 + 1);
    Object.assign(ctx, { font, fillStyle, textBaseline, textAlign });
  }
}

function attachPriceBadge(node) {
  const badge = new PriceBadge();
  const state = { key: null, timer: null };

  const refresh = () => {
    const request = priceRequest(node);
    const key = JSON.stringify(request);
    if (key === state.key) return;
    state.key = key;
    const known = prices.get(key);
    if (known) {
      badge.text = known.text;
      return;
    }
    clearTimeout(state.timer);
    state.timer = setTimeout(async () => {
      const answer = await fetchPrice(key, request);
      if (state.key !== key) return; // the widgets changed meanwhile; that change asks for its own price
      badge.text = answer.text;
      node.zimagePrice = answer.answer ?? null;
      node.setDirtyCanvas?.(true, false);
      app.graph?.setDirtyCanvas?.(true, false);
    }, DEBOUNCE_MS);
  };

  node.badges = node.badges ?? [];
  node.badges.push(() => {
    refresh(); // the node is drawn after every widget change and link change: look at the widgets then
    return badge;
  });
  node.zimagePriceBadge = badge;
  node.zimageRefreshPrice = refresh;
  // A renderer that draws no LiteGraph badge (the Vue nodes) still gets the price for the sidebar: ask once the
  // workflow has set the widgets, and again whenever it is configured.
  setTimeout(refresh, 0);
  const onConfigure = node.onConfigure;
  node.onConfigure = function (...args) {
    const result = onConfigure?.apply(this, args);
    setTimeout(refresh, 0);
    return result;
  };

  // Widget callbacks and link changes also ask at once, in case the canvas is not redrawn.
  const onConnectionsChange = node.onConnectionsChange;
  node.onConnectionsChange = function (...args) {
    const result = onConnectionsChange?.apply(this, args);
    refresh();
    return result;
  };
  for (const widget of node.widgets ?? []) {
    if (!PRICE_WIDGETS.includes(widget.name)) continue;
    const callback = widget.callback;
    widget.callback = function (...args) {
      const result = callback?.apply(this, args);
      refresh();
      return result;
    };
  }
}

// -- the sidebar -----------------------------------------------------------------------------------------------------

const STYLE = `
.zimage-panel { padding: 10px 12px; font-size: 13px; line-height: 1.45; overflow-y: auto; height: 100%;
  box-sizing: border-box; }
.zimage-panel h3 { font-size: 13px; font-weight: 600; margin: 14px 0 6px; opacity: .85; text-transform: uppercase;
  letter-spacing: .04em; }
.zimage-panel .zimage-big { font-size: 22px; font-weight: 600; }
.zimage-panel .zimage-muted { opacity: .65; }
.zimage-panel .zimage-row { display: flex; justify-content: space-between; gap: 8px; }
.zimage-panel .zimage-task { border: 1px solid var(--border-color, #444); border-radius: 6px; padding: 6px 8px;
  margin-bottom: 6px; }
.zimage-panel .zimage-task code { font-size: 11px; word-break: break-all; }
.zimage-panel button { cursor: pointer; border-radius: 5px; border: 1px solid var(--border-color, #555);
  background: var(--comfy-input-bg, #333); color: inherit; padding: 2px 10px; }
.zimage-panel button:disabled { opacity: .5; cursor: default; }
.zimage-panel .zimage-pictures { display: grid; grid-template-columns: repeat(3, 1fr); gap: 6px; }
.zimage-panel .zimage-picture { font-size: 11px; text-align: center; }
.zimage-panel .zimage-picture img, .zimage-panel .zimage-picture .zimage-nothumb { width: 100%; aspect-ratio: 1;
  object-fit: cover; border-radius: 4px; display: block; box-sizing: border-box; }
.zimage-panel .zimage-picture .zimage-nothumb { border: 1px dashed var(--border-color, #555); }
.zimage-panel .zimage-picture > div { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.zimage-panel .zimage-bar { height: 6px; border-radius: 3px; background: var(--border-color, #444); overflow: hidden;
  margin-top: 4px; }
.zimage-panel .zimage-bar > div { height: 100%; background: #8D6932; }
`;

function element(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (name === "class") node.className = value;
    else if (name === "style") node.style.cssText = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    if (child != null) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function usd(amount) {
  if (amount == null) return t("zimage.sidebar.unknown");
  const text = Number(amount).toFixed(4).replace(/0+$/, "");
  const [whole, cents = ""] = text.split(".");
  return `$${whole}.${cents.padEnd(2, "0")}`;
}

function age(seconds) {
  if (seconds == null) return "";
  const s = Math.round(seconds);
  const text = s < 90 ? `${s}s` : s < 5400 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`;
  return t("zimage.sidebar.age", { t: text });
}

async function getJson(path, options) {
  const res = await api.fetchApi(path, options);
  const answer = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(answer.error || `HTTP ${res.status}`);
  return answer;
}

function workflowPrices() {
  const rows = [];
  for (const node of app.graph?.nodes ?? []) {
    if (!PAID_NODES.has(node.comfyClass ?? node.type) || node.mode === 2 || node.mode === 4) continue;
    node.zimageRefreshPrice?.();
    const text = node.zimagePriceBadge?.text;
    if (text) rows.push([node.title, text]);
  }
  return rows;
}

class SidebarPanel {
  constructor(root) {
    this.root = root;
    this.message = "";
    this.collecting = new Set();
    this.timer = null;
  }

  start() {
    this.root.classList.add("zimage-panel");
    this.refresh();
    this.timer = setInterval(() => this.refresh(), REFRESH_MS);
  }

  stop() {
    clearInterval(this.timer);
  }

  async refresh() {
    let spend, tasks;
    try {
      [spend, tasks] = await Promise.all([getJson("/zimage/spend"), getJson("/zimage/tasks")]);
    } catch (err) {
      this.root.replaceChildren(element("p", {}, t("zimage.sidebar.unavailable", { error: err.message })));
      return;
    }
    this.render(spend, tasks);
  }

  async collect(task, button) {
    this.collecting.add(task.task_id);
    button.disabled = true;
    button.textContent = t("zimage.sidebar.collecting");
    try {
      const answer = await getJson("/zimage/collect", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ task_id: task.task_id, provider: task.provider }),
      });
      this.message = t("zimage.sidebar.collected", { n: answer.files.length });
    } catch (err) {
      this.message = err.message;
    } finally {
      this.collecting.delete(task.task_id);
    }
    await this.refresh();
  }

  render(spend, tasks) {
    const s = (key, values) => t(`zimage.sidebar.${key}`, values);
    const parts = [];
    parts.push(element("h3", {}, s("today")));
    parts.push(element("div", { class: "zimage-big", "data-zimage": "today" }, usd(spend.today_usd)));
    parts.push(element("div", { class: "zimage-muted" },
      `WaveSpeed ${usd(spend.by_provider.wavespeed)} · Qingbo ${usd(spend.by_provider.qingbo)}`));

    parts.push(element("h3", {}, s("budget")));
    if (spend.budget_usd == null) {
      parts.push(element("div", { class: "zimage-muted" }, s("noBudget")));
    } else {
      const used = spend.budget_usd > 0 ? Math.min(spend.today_usd / spend.budget_usd, 1) : 1;
      parts.push(element("div", { class: "zimage-row" }, element("span", {}, usd(spend.budget_usd)),
        element("span", { "data-zimage": "left" }, `${s("left")} ${usd(spend.left_usd)}`)));
      parts.push(element("div", { class: "zimage-bar" }, element("div", { style: `width:${Math.round(used * 100)}%` })));
    }

    parts.push(element("h3", {}, s("balance")));
    parts.push(element("div", { "data-zimage": "balance" }, usd(spend.balance_usd)));

    parts.push(element("h3", {}, s("workflow")));
    const here = workflowPrices();
    if (!here.length) parts.push(element("div", { class: "zimage-muted" }, s("noPaidNodes")));
    for (const [title, text] of here) {
      parts.push(element("div", { class: "zimage-row" }, element("span", {}, title), element("span", {}, text)));
    }

    parts.push(element("h3", {}, s("unfinished")));
    if (this.message) parts.push(element("div", { class: "zimage-muted", "data-zimage": "message" }, this.message));
    if (!tasks.unfinished.length) parts.push(element("div", { class: "zimage-muted" }, s("noUnfinished")));
    for (const task of tasks.unfinished) {
      const button = element("button", { "data-zimage": "collect" }, s("collect"));
      if (this.collecting.has(task.task_id)) {
        button.disabled = true;
        button.textContent = s("collecting");
      }
      button.addEventListener("click", () => this.collect(task, button));
      parts.push(element("div", { class: "zimage-task" },
        element("div", { class: "zimage-row" }, element("code", {}, task.task_id), button),
        element("div", { class: "zimage-muted" }, [task.provider, task.model, age(task.age_s)].filter(Boolean).join(" · ")),
        task.prompt_head ? element("div", {}, `“${task.prompt_head}…”`) : null));
    }

    parts.push(element("h3", {}, s("recent")));
    if (!tasks.recent.length) parts.push(element("div", { class: "zimage-muted" }, s("noRecent")));
    const grid = element("div", { class: "zimage-pictures" });
    for (const row of tasks.recent) {
      const pictures = row.paths?.length ? row.paths : [{ name: row.task_id ?? row.fingerprint, url: null }];
      for (const picture of pictures) {
        grid.append(element("div", { class: "zimage-picture", title: `${row.model ?? ""} ${picture.name ?? ""}` },
          picture.url ? element("img", { src: api.apiURL(picture.url), loading: "lazy", alt: picture.name ?? "" })
            : element("div", { class: "zimage-nothumb" }),
          element("div", {}, usd(row.usd))));
      }
    }
    if (tasks.recent.length) parts.push(grid);

    parts.push(element("div", { style: "margin-top:12px" },
      element("button", { onclick: () => this.refresh() }, s("refresh"))));
    this.root.replaceChildren(...parts);
  }
}

// -- the extension ---------------------------------------------------------------------------------------------------

app.registerExtension({
  name: "comfyui-zimage.front",

  async setup() {
    await loadMessages();
    document.head.append(element("style", {}, STYLE));
    let panel = null;
    app.extensionManager?.registerSidebarTab?.({
      id: "zimage",
      icon: "pi pi-dollar",
      title: t("zimage.sidebar.title"),
      tooltip: t("zimage.sidebar.tooltip"),
      type: "custom",
      render: (el) => {
        panel?.stop();
        panel = new SidebarPanel(el);
        panel.start();
      },
      destroy: () => {
        panel?.stop();
        panel = null;
      },
    });
    // A finished run spends money: show it at once when the tab is open.
    api.addEventListener("execution_success", () => panel?.refresh());
  },

  nodeCreated(node) {
    if (PAID_NODES.has(node.comfyClass ?? node.type)) attachPriceBadge(node);
  },
});
