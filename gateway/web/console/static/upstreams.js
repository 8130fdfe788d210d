// Upstreams: health, ejection and requests in flight, as the answering process's balancer sees
// them; refreshed every two seconds while the page is open.

import { api } from "./api.js";
import { add, badge, clear, h, number, table } from "./dom.js";

function health(u) {
  if (u.healthy) return badge("healthy", "active");
  return h("span", {}, badge("ejected", "revoked"), ` for ${u.ejectedForSeconds} s`);
}

export async function render(root, context) {
  const results = h("div", { id: "upstreams-results" });
  const reload = async () => {
    const found = await api("GET", "/admin/console/upstreams");
    clear(results);
    add(results, [
      table(
        "Upstreams",
        ["Upstream", "URL", "Health", "In flight", "Failures in a row", "Region", "Weight", "Models"],
        found.map((u) => [
          h("strong", {}, u.name),
          h("code", {}, u.url),
          health(u),
          `${number(u.inFlight)} of ${number(u.maxConcurrency)}`,
          number(u.failures),
          u.region || "—",
          String(u.weight),
          u.models.join(", ") || "—",
        ]),
        "No upstreams are configured.",
      ),
    ]);
    const ejected = found.filter((u) => !u.healthy).length;
    context.say(`${found.length} upstream${found.length === 1 ? "" : "s"}, ${ejected} ejected (this process's view).`);
  };
  add(root, [
    h("h1", {}, "Upstreams"),
    h("p", { class: "hint" }, "An upstream that fails is ejected for a cool-down that grows while it keeps failing, and probed in the background until it answers."),
    results,
  ]);
  await reload();
  context.every(2, () => reload().catch((error) => context.say(error.message, "error")));
}
