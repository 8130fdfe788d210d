// Building the page: every value goes in as a text node or a property, never as HTML.

const PROPERTIES = new Set(["value", "checked", "disabled", "hidden", "selected", "open", "required"]);

export function h(tag, props, ...children) {
  const element = document.createElement(tag);
  setProps(element, props);
  add(element, children);
  return element;
}

function setProps(element, props) {
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      element.className = value;
    } else if (name === "dataset") {
      Object.assign(element.dataset, value);
    } else if (PROPERTIES.has(name)) {
      element[name] = value;
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
}

export function add(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

export function clear(element) {
  element.replaceChildren();
  return element;
}

export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 10)}`;
  input.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hint ? h("small", {}, hint) : null);
}

export function select(name, options, chosen) {
  return h(
    "select",
    { name },
    options.map(([value, text]) => h("option", { value, selected: value === chosen }, text)),
  );
}

// A table whose cells carry their column's name (the phone layout shows it beside the value).
export function table(caption, columns, rows, empty = "Nothing to show.") {
  if (!rows.length) return h("p", { class: "empty" }, empty);
  const head = h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c))));
  const body = h(
    "tbody",
    {},
    rows.map((cells) =>
      h(
        "tr",
        {},
        cells.map((cell, i) => h("td", { dataset: { label: columns[i] } }, cell)),
      ),
    ),
  );
  return h("div", { class: "table-wrap" }, h("table", { class: "cards" }, h("caption", {}, caption), head, body));
}

export function number(value) {
  if (value === null || value === undefined) return "∞";
  return Number(value).toLocaleString("en-US");
}

export function money(value) {
  return `$${Number(value || 0).toFixed(value && value < 0.01 ? 6 : 2)}`;
}

export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toISOString().replace("T", " ").slice(0, 16) + " UTC";
}

export function badge(text, kind) {
  return h("span", { class: `badge ${kind || text.toLowerCase()}` }, text);
}

// A modal dialog (native <dialog>: focus stays inside, Escape closes). ``build`` gets a close
// function and returns the content; the dialog is removed from the page when it closes.
export function dialog(title, build) {
  const box = h("dialog", { "aria-labelledby": "dialog-title" });
  const close = () => {
    if (box.open) box.close();
  };
  box.addEventListener("close", () => box.remove());
  add(box, [h("h2", { id: "dialog-title" }, title), build(close)]);
  document.body.append(box);
  box.showModal();
  return box;
}

// An event handler whose failure is said in the status line, never left unhandled.
export function guarded(context, job) {
  return async (...args) => {
    try {
      await job(...args);
    } catch (error) {
      context.say(error.message, "error");
    }
  };
}
