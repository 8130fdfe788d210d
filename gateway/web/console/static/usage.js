// Usage of one owner over 7, 30 or 90 days: requests, tokens and cost per day, latency p50/p95,
// error rate; by model and by key. One key or one model can be singled out.

import { api, path } from "./api.js";
import { bars, compact, lines, ranking } from "./charts.js";
import { add, clear, field, guarded, h, money, number, select, table } from "./dom.js";

const choice = { owner: "", period: "7d", keyId: "", model: "" };

function stat(label, value) {
  return h("div", { class: "stat" }, h("span", { class: "stat-label" }, label), h("strong", {}, value));
}

function percent(value) {
  return `${(100 * value).toFixed(1)} %`;
}

function ms(value) {
  return `${Math.round(value)} ms`;
}

function charts(data) {
  const days = data.daily.map((d) => d.date);
  const of = (name) => data.daily.map((d) => d[name]);
  const measured = (name) => data.daily.map((d) => (d.requests ? d[name] : null)); // no requests: no latency
  return h(
    "div",
    { class: "charts" },
    bars("Requests per day", days, [{ label: "requests", values: of("requests") }], number),
    bars("Tokens per day", days, [
      { label: "input", values: of("inputTokens") },
      { label: "output", values: of("outputTokens") },
    ], number),
    bars("Cost per day", days, [{ label: "cost", values: of("cost") }], money, (v) => `$${compact(v)}`),
    lines("Latency per day", days, [
      { label: "p50", values: measured("p50Ms") },
      { label: "p95", values: measured("p95Ms") },
    ], ms, (v) => `${compact(v)} ms`),
    bars("Error rate per day", days, [{ label: "error rate", values: of("errorRate") }], percent, (v) => `${compact(100 * v)} %`),
  );
}

function breakdowns(data) {
  const models = data.byModel.map((m) => ({ label: m.model, value: m.requests }));
  const keys = data.byKey.map((k) => ({ label: k.name ? `${k.keyId} (${k.name})` : k.keyId, value: k.requests }));
  return h(
    "div",
    { class: "charts" },
    h("div", {},
      models.length ? ranking("Requests by model", models, number) : null,
      table("By model", ["Model", "Requests", "Input tokens", "Output tokens", "Cost", "Errors"],
        data.byModel.map((m) => [m.model, number(m.requests), number(m.inputTokens), number(m.outputTokens), money(m.cost), number(m.errors)]),
        "No usage by model in this period.")),
    h("div", {},
      keys.length ? ranking("Requests by key", keys, number) : null,
      table("By key", ["Key", "Requests", "Input tokens", "Output tokens", "Cost", "Errors"],
        data.byKey.map((k) => [k.name ? `${k.keyId} (${k.name})` : k.keyId, number(k.requests), number(k.inputTokens), number(k.outputTokens), money(k.cost), number(k.errors)]),
        "No usage by key in this period.")),
    data.byApi && data.byApi.length > 1
      ? table("By API", ["API", "Requests", "Input tokens", "Output tokens", "Cost", "Errors"],
        data.byApi.map((a) => [a.api, number(a.requests), number(a.inputTokens), number(a.outputTokens), money(a.cost), number(a.errors)]))
      : null,
  );
}

async function keyOptions(owner) {
  if (!owner) return [["", "every key"]];
  const keys = await api("GET", path("/admin/keys", { owner }));
  return [["", "every key"], ...keys.map((k) => [k.id, k.name ? `${k.id} (${k.name})` : k.id])];
}

export async function render(root, context) {
  if (!choice.owner) choice.owner = context.ownerList()[0] || "";
  const results = h("div", { id: "usage-results" });
  const keySelect = h("div");
  const reload = async () => {
    clear(results);
    if (!choice.owner) {
      context.say("Name an owner to see its usage.");
      return;
    }
    const data = await api("GET", path("/admin/console/usage", choice));
    add(results, [
      h("div", { class: "stats" },
        stat("Requests", number(data.totalRequests)),
        stat("Input tokens", number(data.inputTokens)),
        stat("Output tokens", number(data.outputTokens)),
        stat("Cost", money(data.cost)),
        stat("Latency p50", ms(data.latency.p50Ms)),
        stat("Latency p95", ms(data.latency.p95Ms)),
        stat("Error rate", percent(data.errorRate))),
      charts(data),
      breakdowns(data),
    ]);
    context.say(`Usage of ${data.owner}, last ${data.period}.`);
  };
  const fillKeys = async () => {
    clear(keySelect);
    add(keySelect, [field("Key", select("keyId", await keyOptions(choice.owner), choice.keyId))]);
  };
  const models = [["", "every model"], ...context.overview.models.map((m) => [m, m])];
  const controls = h(
    "form",
    { method: "post", class: "filters", onsubmit: guarded(context, async (event) => {
      event.preventDefault();
      const data = new FormData(event.target);
      const owner = String(data.get("owner") || "").trim();
      choice.keyId = owner === choice.owner ? String(data.get("keyId") || "") : "";
      choice.owner = owner;
      choice.period = String(data.get("period"));
      choice.model = String(data.get("model") || "");
      context.remember(owner);
      await fillKeys();
      await reload();
    }) },
    field("Owner", h("input", { name: "owner", list: "usage-owners", autocomplete: "off", value: choice.owner, required: true })),
    field("Period", select("period", [["7d", "7 days"], ["30d", "30 days"], ["90d", "90 days"]], choice.period)),
    keySelect,
    field("Model", select("model", models, choice.model)),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Show")),
  );
  add(root, [
    h("h1", {}, "Usage"),
    h("datalist", { id: "usage-owners" }, context.ownerList().map((o) => h("option", { value: o }))),
    controls,
    results,
  ]);
  await fillKeys();
  await reload();
}
