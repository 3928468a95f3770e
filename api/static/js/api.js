// The API client: the only module that calls fetch. It adds the bearer token kept in
// sessionStorage, turns every non-2xx answer into an ApiError carrying the problem's `code`,
// and tells listeners about 401 (signed out) and 402 (billing) answers.

const TOKEN_KEY = 'zlh.token';

export class ApiError extends Error {
  constructor(status, code, detail, problem = {}) {
    super(detail || code);
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.problem = problem;
  }
}

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

const listeners = new Set();

/** Called with every ApiError before it is thrown (the app signs out on 401, shows the banner on 402). */
export function onProblem(listener) {
  listeners.add(listener);
}

const FALLBACK_CODES = {400: 'bad_request', 401: 'unauthorized', 403: 'forbidden', 404: 'not_found',
  409: 'conflict', 412: 'version_conflict', 413: 'too_large', 422: 'validation_error', 429: 'rate_limited',
  500: 'internal', 502: 'bad_gateway', 503: 'unavailable', 504: 'gateway_timeout'};

async function problemOf(response) {
  try {
    const body = await response.json();
    if (body && typeof body === 'object') return body;
  } catch {
    // not JSON: fall through to the status's code
  }
  return {};
}

/**
 * One HTTP call. Options: json (a body sent as JSON), body (raw), headers, as ('json' | 'text' |
 * 'bytes' | 'response'). Resolves with the decoded body (null for 204); rejects with ApiError.
 */
export async function request(method, path, options = {}) {
  const headers = new Headers(options.headers || {});
  const token = getToken();
  if (token) headers.set('Authorization', `Bearer ${token}`);
  let body = options.body;
  if (options.json !== undefined) {
    headers.set('Content-Type', 'application/json');
    body = JSON.stringify(options.json);
  }
  let response;
  try {
    response = await fetch(path, {method, headers, body, cache: 'no-store'});
  } catch (exc) {
    const error = new ApiError(0, 'network_error', String(exc));
    listeners.forEach((listener) => listener(error));
    throw error;
  }
  if (!response.ok) {
    const problem = await problemOf(response);
    const code = problem.code || FALLBACK_CODES[response.status] || 'http_error';
    const error = new ApiError(response.status, code, problem.detail || response.statusText, problem);
    listeners.forEach((listener) => listener(error));
    throw error;
  }
  const as = options.as || 'json';
  if (as === 'response') return response;
  if (response.status === 204) return null;
  if (as === 'bytes') return response.arrayBuffer();
  if (as === 'text') return response.text();
  return response.json();
}

export const api = {
  get: (path, options) => request('GET', path, options),
  post: (path, options) => request('POST', path, options),
  put: (path, options) => request('PUT', path, options),
  patch: (path, options) => request('PATCH', path, options),
  del: (path, options) => request('DELETE', path, options),
};

/** A fresh Idempotency-Key (random, 128 bits; works outside secure contexts too). */
export function newKey() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return 'portal-' + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

const FINAL = new Set(['succeeded', 'failed']);

/**
 * Polls GET /api/operations/{id} until it succeeds or fails, calling onUpdate with each answer.
 * `isCancelled()` stops it early (resolves null). Errors reject.
 */
export async function followOperation(operationId, onUpdate = () => {}, isCancelled = () => false) {
  let delay = 250;
  for (;;) {
    if (isCancelled()) return null;
    const op = await api.get(`/api/operations/${encodeURIComponent(operationId)}`);
    onUpdate(op);
    if (FINAL.has(op.phase)) return op;
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 1.5, 1500);
  }
}
