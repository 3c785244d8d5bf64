// The API client: the access token in memory, the refresh token in sessionStorage, errors as ApiError.
const BASE = new URL('api/v1/', document.baseURI);
const REFRESH_KEY = 'wallet.refresh_token';
// Codes after which the session is over (a refresh was already tried for TOKEN_EXPIRED).
const SESSION_OVER = new Set(['TOKEN_EXPIRED', 'TOKEN_REVOKED', 'INVALID_TOKEN', 'AUTHENTICATION_REQUIRED']);

let accessToken = null;
let refreshTimer = null;
let refreshing = null;
let me = null;
const sessionListeners = new Set();
const reachabilityListeners = new Set();
let reached = true; // the last request got an answer from the server (any status)
let stepUpPrompt = null; // asks the person to confirm it is them (views/mfa.js): resolves true once they have
let steppingUp = null; // the prompt on screen, shared by every request that met STEP_UP_REQUIRED meanwhile

export class ApiError extends Error {
  constructor(status, body) {
    super(body.error || `The server answered ${status}.`);
    this.status = status;
    this.code = body.code || `HTTP_${status}`;
    this.details = body.details || null;
    this.transactionId = body.transaction_id || null;
    this.mfaToken = body.mfa_token || null; // MFA_REQUIRED: the sign-in goes on at auth/login/mfa with a code
  }
}

let config = null; // what the server has turned on (GET /config), loaded once per page load

/** Ask the server once what it has turned on (Paystack, Google, self-service deposits). */
export async function loadConfig() {
  config = await request('GET', 'config', { anonymous: true }).catch(() => null);
}

/** Whether the server has `feature` on; unknown (the server could not say) counts as on: a refusal says why. */
export function enabled(feature) {
  return config?.[feature] ?? true;
}

/** Call fn(signedIn) whenever the session starts or ends. */
export function onSessionChange(fn) {
  sessionListeners.add(fn);
}

function sessionChanged() {
  for (const fn of sessionListeners) fn(accessToken !== null);
}

/** Call fn(reached) whenever requests stop or start getting through to the server. */
export function onReachability(fn) {
  reachabilityListeners.add(fn);
}

function reachable(now) {
  if (now === reached) return;
  reached = now;
  for (const fn of reachabilityListeners) fn(now);
}

export function signedIn() {
  return accessToken !== null;
}

/** The signed-in user as last loaded (GET /users/me), or null. A session's start does not load it: the first page
 * drawn does (the router, side by side with the page's own data), so it is asked once, and no round trip earlier. */
export function currentUser() {
  return me;
}

let loadingUser = null;

/** GET /users/me, fresh; calls made while one is on its way share it (a page's view and the router ask together). */
export function loadUser() {
  loadingUser ??= request('GET', 'users/me')
    .then((user) => {
      me = user;
      return user;
    })
    .finally(() => {
      loadingUser = null;
    });
  return loadingUser;
}

function keep(pair) {
  accessToken = pair.access_token;
  sessionStorage.setItem(REFRESH_KEY, pair.refresh_token);
  clearTimeout(refreshTimer);
  // Renew at 80% of the lifetime, so requests rarely meet an expired token (a 401 TOKEN_EXPIRED still refreshes once).
  refreshTimer = setTimeout(() => refresh().catch(() => {}), Math.max(5, pair.expires_in * 0.8) * 1000);
}

export function endSession() {
  accessToken = null;
  me = null;
  sessionStorage.removeItem(REFRESH_KEY);
  clearTimeout(refreshTimer);
  sessionChanged();
}

async function send(method, path, { body, headers = {}, query, anonymous = false } = {}) {
  const url = new URL(path, BASE);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== '') url.searchParams.set(name, value);
  }
  const all = { Accept: 'application/json', ...headers };
  if (body !== undefined) all['Content-Type'] = 'application/json';
  if (accessToken && !anonymous) all.Authorization = `Bearer ${accessToken}`;
  let response;
  try {
    response = await fetch(url, {
      method,
      headers: all,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      credentials: 'omit',
    });
  } catch {
    reachable(false);
    throw new ApiError(0, { error: 'Cannot reach the server. Check the connection and try again.', code: 'NETWORK_ERROR' });
  }
  reachable(true);
  return response;
}

async function parse(response, raw = false) {
  if (raw && response.ok) return response; // a download: the caller reads the body as it is
  if (response.status === 204) return null;
  let body;
  try {
    body = await response.json();
  } catch {
    body = { error: `The server answered ${response.status}.`, code: `HTTP_${response.status}` };
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

/** Who answers STEP_UP_REQUIRED: `prompt()` asks the person for their password or code, steps up (stepUp()) and
 * resolves true, or false when they decline. */
export function onStepUp(prompt) {
  stepUpPrompt = prompt;
}

/** One API call: JSON in and out (with `raw`, a successful answer is the Response itself: a download); an expired access token is refreshed once and the call repeated. A call that
 * needs a recent authentication (403 STEP_UP_REQUIRED) asks the person to confirm it is them and is repeated once,
 * with the same body and headers (the same Idempotency-Key: the refused call recorded nothing), so a form keeps
 * everything typed into it. */
export async function request(method, path, options = {}) {
  const hadSession = accessToken !== null;
  let response = await send(method, path, options);
  if (response.status === 401 && hadSession) {
    const error = await parse(response.clone()).catch((e) => e);
    if (error.code === 'TOKEN_EXPIRED') {
      await refresh();
      response = await send(method, path, options);
    }
  }
  try {
    return await parse(response, options.raw);
  } catch (error) {
    if (error.status === 401 && hadSession && SESSION_OVER.has(error.code)) endSession();
    if (error.code === 'STEP_UP_REQUIRED' && hadSession && stepUpPrompt && !options.steppedUp) {
      steppingUp ??= stepUpPrompt().finally(() => {
        steppingUp = null;
      });
      if (await steppingUp) return request(method, path, { ...options, steppedUp: true });
    }
    throw error;
  }
}

/** Confirm it is the person (`{password}` or `{code}`): a fresh access token for this login; the refresh token
 * stays. */
export async function stepUp(proof) {
  const fresh = await request('POST', 'auth/step-up', { body: proof });
  accessToken = fresh.access_token;
}

/** A new token pair from the stored refresh token; concurrent callers share one request (each token works once). */
export function refresh() {
  refreshing ??= (async () => {
    const token = sessionStorage.getItem(REFRESH_KEY);
    if (!token) throw new ApiError(401, { error: 'Please sign in.', code: 'AUTHENTICATION_REQUIRED' });
    try {
      keep(await parse(await send('POST', 'auth/refresh', { body: { refresh_token: token }, anonymous: true })));
    } catch (error) {
      if (error.status === 401) endSession();
      throw error;
    }
  })().finally(() => {
    refreshing = null;
  });
  return refreshing;
}

/** A WebSocket to an API path. The access token goes as the second subprotocol ("bearer, <token>"), not in the
 * URL, which proxies and logs keep. */
export function openSocket(path, query = {}) {
  const url = new URL(path, BASE);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  for (const [name, value] of Object.entries(query)) url.searchParams.set(name, value);
  return new WebSocket(url, ['bearer', accessToken]);
}

/** Pick the session up again after a page reload (false when there is none to pick up). */
export async function restoreSession() {
  if (!sessionStorage.getItem(REFRESH_KEY)) return false;
  try {
    await refresh();
  } catch {
    return false;
  }
  sessionChanged();
  return true;
}

/** Start a session from a token pair (a password login, or a Google sign-in's callback). */
export function startSession(pair) {
  me = null; // the user of a session this one replaces is not this one's
  keep(pair);
  sessionChanged();
}

/** A password sign-in; an account with two-factor sign-in throws ApiError MFA_REQUIRED with its `mfaToken`,
 * for finishSignIn(). */
export async function logIn(credentials) {
  startSession(await request('POST', 'auth/login', { body: credentials, anonymous: true }));
}

/** The second step of a sign-in that answered MFA_REQUIRED: its token and `{code}` or `{recovery_code}`. */
export async function finishSignIn(mfaToken, code) {
  startSession(await request('POST', 'auth/login/mfa', { body: { mfa_token: mfaToken, ...code }, anonymous: true }));
}

export async function logOut() {
  try {
    await request('POST', 'auth/logout');
  } finally {
    endSession();
  }
}
