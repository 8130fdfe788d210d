// Keys: list by owner and status, search, create (the key shown once), revoke with a reason,
// reactivate, regenerate, edit limits and the IP allowlist, delete.

import { api, path, segment } from "./api.js";
import { add, badge, clear, dialog, field, guarded, h, number, select, table, when } from "./dom.js";

const LIMITS = [
  ["rpmLimit", "Requests a minute"],
  ["maxConcurrency", "Concurrent requests"],
  ["dailyLimit", "Tokens a day"],
  ["monthlyLimit", "Tokens a month"],
];

const filters = { owner: "", status: "", search: "" };

function list(text) {
  return text
    .split(/[\s,]+/)
    .map((s) => s.trim())
    .filter(Boolean);
}

function limitInputs(record) {
  return LIMITS.map(([name, label]) =>
    field(
      label,
      h("input", { name, type: "number", min: 1, step: 1, inputmode: "numeric", value: record && record[name] !== null ? String(record[name]) : "" }),
      "empty: no limit",
    ),
  );
}

// The limits and lists of a form, as the key API takes them (empty: null / every model).
function rights(form) {
  const data = new FormData(form);
  const out = {};
  for (const [name] of LIMITS) {
    const text = String(data.get(name) || "").trim();
    out[name] = text === "" ? null : Number(text);
  }
  out.ipWhitelist = list(String(data.get("ipWhitelist") || ""));
  const models = list(String(data.get("models") || ""));
  out.models = models.length ? models : null;
  return out;
}

function shownOnce(context, record, verb) {
  context.remember(record.owner);
  dialog(`Key ${verb}: copy it now`, (close) => {
    const value = h("input", { class: "secret", readonly: true, value: record.key, "aria-label": "The new key", spellcheck: "false" });
    const copied = h("span", { class: "hint", role: "status" });
    const copy = h("button", {
      type: "button",
      onclick: async () => {
        value.select();
        try {
          await navigator.clipboard.writeText(record.key);
          copied.textContent = "Copied.";
        } catch {
          copied.textContent = "Select the key and copy it (Ctrl+C).";
        }
      },
    }, "Copy");
    return h(
      "div",
      { class: "once" },
      h("p", {}, "This is the only time the key is shown: the gateway keeps only its SHA-256."),
      h("div", { class: "row" }, value, copy),
      copied,
      h("div", { class: "actions" }, h("button", { type: "button", class: "primary", onclick: () => { value.value = ""; close(); } }, "Done")),
    );
  });
}

function form(submitLabel, fields, onSubmit, close) {
  const error = h("p", { class: "error", role: "alert" });
  const node = h(
    "form",
    { method: "post", onsubmit: async (event) => {
      event.preventDefault();
      error.textContent = "";
      try {
        await onSubmit(event.target);
      } catch (err) {
        error.textContent = err.message;
      }
    } },
    h("div", { class: "grid" }, fields),
    error,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, submitLabel), close ? h("button", { type: "button", onclick: close }, "Cancel") : null),
  );
  return node;
}

function createForm(context, reload) {
  return form(
    "Create key",
    [
      field("Owner", h("input", { name: "owner", required: true, list: "owners-list", autocomplete: "off", value: filters.owner })),
      field("Name", h("input", { name: "name", maxlength: 100 })),
      ...limitInputs(null),
      field("Models", h("input", { name: "models", placeholder: "all" }), "comma-separated; empty: every model"),
      field("IP allowlist", h("input", { name: "ipWhitelist", placeholder: "any address" }), "addresses or CIDRs, comma-separated"),
      field("Expires in days", h("input", { name: "expiresInDays", type: "number", min: 1, step: 1 }), "empty: never"),
    ],
    async (node) => {
      const data = new FormData(node);
      const body = { owner: String(data.get("owner")).trim(), name: String(data.get("name") || ""), ...rights(node) };
      const days = String(data.get("expiresInDays") || "").trim();
      if (days) body.expiresInDays = Number(days);
      const record = await api("POST", "/admin/keys", body);
      node.reset();
      filters.owner = record.owner;
      shownOnce(context, record, "created");
      await reload();
    },
  );
}

function editKey(record, reload) {
  dialog(`Edit ${record.id}`, (close) =>
    form(
      "Save",
      [
        field("Name", h("input", { name: "name", maxlength: 100, value: record.name })),
        ...limitInputs(record),
        field("Models", h("input", { name: "models", value: record.models ? record.models.join(", ") : "", placeholder: "all" }), "empty: every model"),
        field("IP allowlist", h("input", { name: "ipWhitelist", value: record.ipWhitelist.join(", "), placeholder: "any address" }), "empty: any address"),
      ],
      async (node) => {
        const body = { name: String(new FormData(node).get("name") || ""), ...rights(node) };
        await api("PATCH", path(`/admin/keys/${segment(record.id)}`, { owner: record.owner }), body);
        close();
        await reload(`Saved ${record.id}.`);
      },
      close,
    ),
  );
}

function revokeKey(record, reload) {
  dialog(`Revoke ${record.id}`, (close) =>
    form(
      "Revoke",
      [field("Reason", h("input", { name: "reason", maxlength: 200, required: true, placeholder: "e.g. leaked" }))],
      async (node) => {
        const reason = String(new FormData(node).get("reason") || "").trim();
        await api("POST", path(`/admin/keys/${segment(record.id)}/revoke`, { owner: record.owner }), { reason });
        close();
        await reload(`Revoked ${record.id}.`);
      },
      close,
    ),
  );
}

function confirmThen(title, text, label, action) {
  dialog(title, (close) =>
    form(label, [h("p", {}, text)], async () => {
      await action();
      close();
    }, close),
  );
}

function actions(record, context, reload) {
  const id = segment(record.id);
  const owner = { owner: record.owner };
  const buttons = [h("button", { type: "button", onclick: () => editKey(record, reload) }, "Edit")];
  if (record.status === "REVOKED") {
    buttons.push(h("button", { type: "button", onclick: guarded(context, async () => {
      await api("POST", path(`/admin/keys/${id}/reactivate`, owner));
      await reload(`Reactivated ${record.id}.`);
    }) }, "Reactivate"));
  } else {
    buttons.push(h("button", { type: "button", onclick: () => revokeKey(record, reload) }, "Revoke"));
  }
  if (!record.keyPrefix.endsWith("(static)")) {
    buttons.push(h("button", { type: "button", onclick: () => confirmThen(`Regenerate ${record.id}`,
      "The current key stops working at once and a new one is shown once.", "Regenerate", async () => {
        const fresh = await api("POST", path(`/admin/keys/${id}/regenerate`, owner));
        shownOnce(context, fresh, "regenerated");
        await reload();
      }) }, "Regenerate"));
    buttons.push(h("button", { type: "button", class: "danger", onclick: () => confirmThen(`Delete ${record.id}`,
      "The key and its record are deleted; its usage history stays.", "Delete", async () => {
        await api("DELETE", path(`/admin/keys/${id}`, owner));
        await reload(`Deleted ${record.id}.`);
      }) }, "Delete"));
  }
  return h("div", { class: "buttons" }, buttons);
}

function limits(record) {
  return LIMITS.filter(([name]) => record[name] !== null).map(([name, label]) => `${label}: ${number(record[name])}`).join("; ") || "none";
}

function rows(records, context, reload) {
  const search = filters.search.toLowerCase();
  return records
    .filter((r) => !filters.status || r.status === filters.status)
    .filter((r) => !search || [r.id, r.name, r.keyPrefix, r.owner].some((v) => (v || "").toLowerCase().includes(search)))
    .map((r) => [
      h("code", {}, r.id),
      r.name || "—",
      r.owner,
      h("span", {}, badge(r.status), r.revokedReason ? h("small", { class: "reason" }, ` ${r.revokedReason}`) : null),
      limits(r),
      r.ipWhitelist.length ? r.ipWhitelist.join(", ") : "any",
      when(r.lastUsedAt),
      actions(r, context, reload),
    ]);
}

async function records(context) {
  const owners = filters.owner ? [filters.owner] : context.ownerList();
  const lists = await Promise.all(owners.map((owner) => api("GET", path("/admin/keys", { owner }))));
  return lists.flat();
}

export async function render(root, context) {
  const results = h("div", { id: "keys-results" });
  const reload = async (message) => {
    const found = await records(context);
    clear(results);
    add(results, [table("Keys", ["ID", "Name", "Owner", "Status", "Limits", "IP allowlist", "Last used", "Actions"], rows(found, context, reload), "No keys match.")]);
    context.say(message || `${found.length} key${found.length === 1 ? "" : "s"} of ${filters.owner || "every known owner"}.`);
  };
  const filterForm = h(
    "form",
    { method: "post", class: "filters", role: "search", onsubmit: guarded(context, async (event) => {
      event.preventDefault();
      const data = new FormData(event.target);
      filters.owner = String(data.get("owner") || "").trim();
      filters.status = String(data.get("status") || "");
      filters.search = String(data.get("search") || "").trim();
      context.remember(filters.owner);
      await reload();
    }) },
    field("Owner", h("input", { name: "owner", list: "owners-list", autocomplete: "off", value: filters.owner, placeholder: "every known owner" })),
    field("Status", select("status", [["", "any"], ["ACTIVE", "active"], ["REVOKED", "revoked"], ["EXPIRED", "expired"]], filters.status)),
    field("Search", h("input", { name: "search", type: "search", value: filters.search, placeholder: "id, name, prefix" })),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Show")),
  );
  add(root, [
    h("h1", {}, "Keys"),
    h("datalist", { id: "owners-list" }, context.ownerList().map((o) => h("option", { value: o }))),
    filterForm,
    h("details", { class: "card" }, h("summary", {}, "New key"), createForm(context, reload)),
    results,
  ]);
  await reload();
}
