// The console's shell: sign-in, navigation between pages (the hash names the page, nothing
// else), and the context every page gets.

import { api, signIn, signOut, signedIn, whenSignedOut } from "./api.js";
import { clear } from "./dom.js";
import * as keys from "./keys.js";
import * as owners from "./owners.js";
import * as usage from "./usage.js";
import * as upstreams from "./upstreams.js";
import * as refusals from "./refusals.js";

const PAGES = {
  keys: { title: "Keys", page: keys },
  owners: { title: "Owners", page: owners },
  usage: { title: "Usage", page: usage },
  upstreams: { title: "Upstreams", page: upstreams },
  refusals: { title: "Refusals", page: refusals },
};

const $ = (id) => document.getElementById(id);

const context = {
  overview: null,
  owners: new Set(), // owners known to this tab: the gateway's, and those named here
  say(message, kind = "info") {
    const status = $("status");
    status.textContent = message;
    status.className = `status ${kind}`;
  },
  remember(owner) {
    if (owner) context.owners.add(owner);
  },
  ownerList() {
    return [...context.owners].sort();
  },
  timers: [],
  every(seconds, job) {
    context.timers.push(setInterval(job, seconds * 1000));
  },
};

function stopTimers() {
  context.timers.forEach(clearInterval);
  context.timers = [];
}

function currentPage() {
  const name = location.hash.replace(/^#/, "");
  return Object.hasOwn(PAGES, name) ? name : "keys";
}

let rendering = 0;

async function show() {
  if (!signedIn()) return;
  stopTimers();
  const name = currentPage();
  const { title, page } = PAGES[name];
  for (const link of document.querySelectorAll("#nav a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${title} · Gateway console`;
  const root = clear($("page"));
  context.say("");
  const mine = ++rendering;
  try {
    await page.render(root, context);
  } catch (error) {
    if (mine === rendering && signedIn()) context.say(error.message, "error");
  }
}

function showSignIn(message) {
  stopTimers();
  clear($("page")).hidden = true;
  $("nav").hidden = true;
  $("signout").hidden = true;
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  context.say("");
  $("token").focus();
}

async function submitSignIn(event) {
  event.preventDefault();
  const input = $("token");
  const value = input.value.trim();
  input.value = ""; // the token stays in memory only, not in the page
  signIn(value);
  try {
    context.overview = await api("GET", "/admin/console/overview");
  } catch (error) {
    signOut();
    showSignIn(error.status === 401 ? "That is not the admin token." : error.message);
    return;
  }
  context.overview.owners.forEach((owner) => context.remember(owner));
  $("signin").hidden = true;
  $("page").hidden = false;
  $("nav").hidden = false;
  $("signout").hidden = false;
  await show();
  $("main").focus();
}

function start() {
  whenSignedOut(() => showSignIn("Signed out."));
  $("signin-form").addEventListener("submit", submitSignIn);
  $("signin-button").disabled = false;
  $("signout").addEventListener("click", () => signOut());
  window.addEventListener("hashchange", () => show());
  showSignIn("");
}

start();
