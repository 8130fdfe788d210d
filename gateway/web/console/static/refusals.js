// Recent refusals of the answering process, by reason, newest first; refreshed every 5 s.

import { api } from "./api.js";
import { ranking } from "./charts.js";
import { add, clear, h, number, table } from "./dom.js";

function time(epoch) {
  return new Date(epoch * 1000).toISOString().replace("T", " ").slice(0, 19);
}

export async function render(root, context) {
  const results = h("div", { id: "refusals-results" });
  const reload = async () => {
    const data = await api("GET", "/admin/console/refusals");
    clear(results);
    add(results, [
      data.byReason.length
        ? ranking(`Recent refusals by reason (last ${data.recent.length})`, data.byReason.map((r) => ({ label: r.reason, value: r.count })), number)
        : null,
      table(
        "Refusals since this process started",
        ["Reason", "Count"],
        data.sinceStart.map((r) => [r.reason, number(r.count)]),
        "No refusals since this process started.",
      ),
      table(
        "Recent refusals",
        ["Time (UTC)", "Reason", "Status", "Route", "Key", "Owner", "Model", "Client", "Request ID"],
        data.recent.map((r) => [
          time(r.time),
          h("strong", {}, r.reason),
          String(r.status),
          h("code", {}, r.route),
          r.keyId || "—",
          r.owner || "—",
          r.model || "—",
          r.clientIp || "—",
          h("code", {}, r.requestId),
        ]),
        "No recent refusals.",
      ),
    ]);
  };
  add(root, [
    h("h1", {}, "Refusals"),
    h("p", { class: "hint" }, "What this gateway process refused lately (the last 200), and why."),
    results,
  ]);
  await reload();
  context.every(5, () => reload().catch((error) => context.say(error.message, "error")));
}
