// Live updates: while signed in, one WebSocket to /api/v1/events/stream. An event redraws the page on screen when
// it shows balances or history, and the ones a person should hear about show a notification. After a drop it
// reconnects with backoff and resumes with ?after=<the last event id received>: nothing is missed or shown twice.
import { currentUser, loadUser, onSessionChange, openSocket, request } from './api.js';
import { toast } from './dom.js';
import { formatMoney } from './money.js';
import { liveReconnecting } from './network.js';
import { refresh } from './router.js';

const FIRST_DELAY = 1000; // ms before the first reconnect; doubles up to MAX_DELAY, reset by a connection that held
const MAX_DELAY = 15000;
const HELD = 10000;
const TOKEN_ENDED = 4401; // the token the socket was opened with expired, or the login ended: no fault of the server

const NOTICES = {
  'transfer.received': (tx) => `Received ${formatMoney(tx.amount, tx.currency)} from ${tx.counterparty?.username}.`,
  'deposit.completed': (tx) => `Deposit of ${formatMoney(tx.amount, tx.currency)} received.`,
  'account.frozen': () => 'Your account has been frozen: money cannot move in or out of it. Contact support.',
  'account.unfrozen': () => 'Your account is no longer frozen.',
  // Both sides get the event: only the one asked hears of it (the asker made it).
  'payment_request.created': (r) =>
    r.payer.username === currentUser()?.username
      ? `${r.payee.username} asks you for ${formatMoney(r.amount, r.currency)}.`
      : null,
  'payout.completed': (p) => `Payout of ${formatMoney(p.amount, p.currency)} sent to your bank.`,
  'payout.failed': (p) => `Payout of ${formatMoney(p.amount, p.currency)} not sent: the money is back in your wallet.`,
};

let run = 0; // every start and stop begins a new run; what an older run's connection does after that is ignored
let socket = null;
let redraw = null;

/** Where the page is, for tests and styling: <body data-live="connecting|open|off">. */
function state(name) {
  document.body.dataset.live = name;
}

/** The id of the newest event so far: a new session starts after it (older events are already on the pages). */
async function newestId() {
  let after = 0;
  for (;;) {
    const page = await request('GET', 'events', { query: { after, limit: 200 } });
    after = page.items.at(-1)?.id ?? after;
    if (!page.next_cursor) return after;
  }
}

function receive(event, seen) {
  if (event.id <= seen.after) return; // defensive: a replay never shows an event twice
  seen.after = event.id;
  const notice = NOTICES[event.type]?.(event.data);
  if (notice) toast(notice, 'info', { key: event.data.id || `event-${event.id}`, ms: 8000 });
  if (event.type.startsWith('api_key.')) return;
  clearTimeout(redraw); // a burst (a replay after a reconnect) redraws once
  redraw = setTimeout(refresh, 150);
}

/** One connection, from `seen.after` on: resolves when it closes, with whether it went well (it held a while, or
 * only its token ended), which resets the backoff. */
function listen(current, seen) {
  return new Promise((resolve) => {
    const ws = openSocket('events/stream', { after: seen.after });
    socket = ws;
    let opened = null;
    ws.addEventListener('open', () => {
      opened = Date.now();
      if (current === run) {
        state('open');
        liveReconnecting(false);
      }
    });
    ws.addEventListener('message', (message) => {
      if (current === run) receive(JSON.parse(message.data), seen);
    });
    ws.addEventListener('close', (event) => {
      resolve(opened !== null && (event.code === TOKEN_ENDED || Date.now() - opened >= HELD));
    });
  });
}

/** Follow the stream for one run: connect; after any close (the server restarting, 4401 when the token expired or
 * the login was revoked, 4408, 1011) wait, check the session and resume. The check is GET /users/me through the
 * API client: an expired access token is refreshed there, a revoked login ends the session (which ends this run),
 * and an unreachable server is retried after the next, longer wait. */
async function follow(current) {
  const seen = { after: null };
  let delay = FIRST_DELAY;
  let dropped = false;
  while (current === run) {
    try {
      if (dropped) await loadUser();
      seen.after ??= await newestId();
      if (current !== run) return;
      const wentWell = await listen(current, seen);
      if (wentWell) delay = FIRST_DELAY;
      liveReconnecting(!wentWell && current === run); // a token renewal is no news; a drop is
    } catch (error) {
      if (!error.code) throw error;
      liveReconnecting(current === run);
    }
    if (current !== run) return;
    dropped = true;
    state('connecting');
    await new Promise((resolve) => setTimeout(resolve, delay * (0.5 + Math.random() / 2)));
    delay = Math.min(delay * 2, MAX_DELAY);
  }
}

function stop() {
  run += 1;
  const ws = socket;
  socket = null;
  // Closing one still connecting makes the browser log an error: let it open first.
  if (ws?.readyState === WebSocket.CONNECTING) ws.addEventListener('open', () => ws.close(1000));
  else ws?.close(1000);
  clearTimeout(redraw);
  state('off');
  liveReconnecting(false);
}

onSessionChange((isIn) => {
  stop();
  if (!isIn) return;
  state('connecting');
  follow(run);
});
