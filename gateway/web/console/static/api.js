// The admin API from the console: the admin token lives in this module's variable only, for as
// long as the tab keeps the page. It is sent as "Authorization: Bearer" on same-origin fetches
// and never written anywhere else: not in a URL, a cookie, localStorage or sessionStorage.

let token = null;
let onSignedOut = () => {};

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export function signIn(value) {
  token = value;
}

export function signOut() {
  token = null;
  onSignedOut();
}

export function signedIn() {
  return token !== null;
}

export function whenSignedOut(callback) {
  onSignedOut = callback;
}

// A path with its query: values are encoded here, never concatenated by the callers.
export function path(base, query = {}) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.append(name, String(value));
  }
  const text = params.toString();
  return text ? `${base}?${text}` : base;
}

export function segment(value) {
  return encodeURIComponent(value);
}

export async function api(method, url, body) {
  if (!url.startsWith("/admin/")) throw new Error("the console calls only the admin API");
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = {
    method,
    headers,
    credentials: "omit",
    cache: "no-store",
    redirect: "error",
    referrerPolicy: "no-referrer",
  };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    if (response.status === 401 && error.code === "invalid_admin_token" && token !== null) {
      signOut();
    }
    throw new ApiError(response.status, error.code || null, error.message || `HTTP ${response.status}`);
  }
  return data;
}
