// Whether the server can be reached, said in one banner (role=status) under the top bar: the browser is offline, a
// request could not reach the server, or the live updates are reconnecting after a drop. It goes once a request gets
// through again. <body data-network="ok|offline|unreachable|reconnecting"> says the same to tests and styles.
import { onReachability } from './api.js';

let offline = !navigator.onLine;
let unreachable = false;
let reconnecting = false;

function show() {
  const [name, text] = offline
    ? ['offline', 'You are offline. What is on screen may be out of date; the wallet catches up once you are back.']
    : unreachable
      ? ['unreachable', 'The server cannot be reached. Check the connection; the wallet keeps trying.']
      : reconnecting
        ? ['reconnecting', 'Reconnecting to live updates…']
        : ['ok', ''];
  const banner = document.getElementById('network');
  if (banner.textContent !== text) banner.textContent = text;
  banner.hidden = !text;
  document.body.dataset.network = name;
}

/** The live updates lost their connection (true) or have it again (false). */
export function liveReconnecting(yes) {
  reconnecting = yes;
  show();
}

onReachability((reached) => {
  unreachable = !reached;
  show();
});
window.addEventListener('offline', () => {
  offline = true;
  show();
});
window.addEventListener('online', () => {
  offline = false;
  show();
});
show();
