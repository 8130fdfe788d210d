// Owners: each known owner's plan, key count and this month's usage against the plan; the plan
// can be changed here. Any owner can be looked up by name.

import { api, segment } from "./api.js";
import { add, clear, field, guarded, h, number, select, table } from "./dom.js";

function usageOf(view) {
  const limit = view.limits.monthlyTokens;
  const used = view.usage.tokens;
  const text = `${number(used)} of ${number(limit)} tokens`;
  if (limit === null) return text;
  return h(
    "span",
    { class: "usage" },
    h("meter", { min: 0, max: limit, value: Math.min(used, limit), low: limit * 0.8, high: limit * 0.95, optimum: 0, "aria-label": text }),
    ` ${text} (${Math.round((100 * used) / limit)} %)`,
  );
}

function planForm(view, context, reload) {
  const plans = context.overview.plans.map((p) => [p.name, p.name]);
  const chooser = select("plan", plans, view.plan);
  chooser.id = `plan-${view.owner}`;
  return h(
    "form",
    { method: "post", class: "inline", onsubmit: guarded(context, async (event) => {
      event.preventDefault();
      const plan = String(new FormData(event.target).get("plan"));
      await api("PUT", `/admin/owners/${segment(view.owner)}`, { plan });
      await reload(`${view.owner} is on plan ${plan}.`);
    }) },
    h("label", { class: "sr-only", for: chooser.id }, `Plan of ${view.owner}`),
    chooser,
    h("button", { type: "submit" }, "Set"),
  );
}

export async function render(root, context) {
  const results = h("div");
  const reload = async (message) => {
    const views = await Promise.all(context.ownerList().map((o) => api("GET", `/admin/owners/${segment(o)}`)));
    clear(results);
    add(results, [
      table(
        "Owners",
        ["Owner", "Plan", "Keys", "This month", "Change plan"],
        views.map((v) => [
          v.owner,
          `${v.plan}${v.planSource === "default_plan" ? " (default)" : ""}`,
          `${v.keys.active} active of ${v.keys.total} (max ${number(v.limits.maxKeys)})`,
          usageOf(v),
          planForm(v, context, reload),
        ]),
        "No owners known yet: look one up by name.",
      ),
    ]);
    context.say(message || `${views.length} owner${views.length === 1 ? "" : "s"}.`);
  };
  const lookup = h(
    "form",
    { method: "post", class: "filters", onsubmit: guarded(context, async (event) => {
      event.preventDefault();
      const owner = String(new FormData(event.target).get("owner") || "").trim();
      if (!owner) return;
      await api("GET", `/admin/owners/${segment(owner)}`); // a bad name is said before it is kept
      context.remember(owner);
      event.target.reset();
      await reload();
    }) },
    field("Look up an owner", h("input", { name: "owner", autocomplete: "off", required: true })),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Add")),
  );
  const plans = table(
    "Plans",
    ["Plan", "Max keys", "Tokens a month", "Requests a minute"],
    context.overview.plans.map((p) => [
      `${p.name}${p.name === context.overview.defaultPlan ? " (default)" : ""}`,
      number(p.maxKeys),
      number(p.monthlyTokens),
      number(p.rpm),
    ]),
  );
  add(root, [
    h("h1", {}, "Owners"),
    h("p", { class: "hint" }, "The store keeps no list of owners: shown are the owners the config names, those seen in recent refusals, and those looked up or given keys here."),
    lookup,
    results,
    plans,
  ]);
  await reload();
}
