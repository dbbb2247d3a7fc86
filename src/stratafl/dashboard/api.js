// The REST API as the page uses it: the admin token, JSON calls, paged lists, downloads.
//
// The token lives in sessionStorage (this tab only, gone when it closes) and goes out as
// `Authorization: Bearer` on every call; against an --insecure controller it may be empty.

const TOKEN_KEY = "stratafl.admin-token";
export const PAGE_LIMIT = 1000;
const MAX_PAGES = 100;

/** A refused or failed call: the controller's ErrorBody, or what the network said. */
export class ApiError extends Error {
  constructor(status, error, detail) {
    super(detail);
    this.status = status;
    this.error = error;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value.trim());
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** Request headers carrying the token, if there is one. */
export function authorized(headers = {}) {
  const value = token();
  return value ? { ...headers, Authorization: `Bearer ${value}` } : { ...headers };
}

export async function failure(response) {
  let error = "HTTPError";
  let detail = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    error = body.error || error;
    detail = body.detail || detail;
  } catch {
    // not an ErrorBody (a proxy's page, say): the status line says enough
  }
  return new ApiError(response.status, error, detail);
}

async function send(method, path, body) {
  const init = { method, cache: "no-store", headers: authorized({ Accept: "application/json" }) };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    throw new ApiError(0, "Unreachable", `the controller did not answer (${error.message})`);
  }
  if (!response.ok) throw await failure(response);
  return response.json();
}

export const get = (path) => send("GET", path);
export const post = (path, body) => send("POST", path, body);

export function quote(id) {
  return encodeURIComponent(id);
}

/**
 * Every item of a list endpoint, following its cursor: `{items, next}` pages, or the bare
 * JSON list older controllers answer. At most `maxPages` pages, so no list is unbounded.
 */
export async function pages(path, maxPages = MAX_PAGES) {
  const items = [];
  let after = null;
  for (let page = 0; page < maxPages; page += 1) {
    const url = new URL(path, location.origin);
    url.searchParams.set("limit", String(PAGE_LIMIT));
    if (after !== null) url.searchParams.set("after", after);
    const answer = await get(url.pathname + url.search);
    if (Array.isArray(answer)) return items.concat(answer);
    items.push(...answer.items);
    if (answer.next === null || answer.next === undefined) break;
    after = answer.next;
  }
  return items;
}

/** Save a model's safetensors file: fetched with the token, handed over as a blob. */
export async function downloadModel(modelId) {
  const response = await fetch(`/api/v1/models/${quote(modelId)}/download`, {
    headers: authorized(),
    cache: "no-store",
  });
  if (!response.ok) throw await failure(response);
  const url = URL.createObjectURL(await response.blob());
  const link = document.createElement("a");
  link.href = url;
  link.download = `${modelId}.safetensors`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}
