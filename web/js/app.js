// The web wallet's entry point: each view module registers its pages; later features add one import here.
import { loadConfig, onSessionChange, restoreSession, signedIn } from './api.js';
import { navigate, render, renderNav } from './router.js';
import './theme.js';
import './live.js';
import './views/wallets.js';
import './views/transfer.js';
import './views/history.js';
import './views/requests.js';
import './views/payouts.js';
import './views/scheduled.js';
import './views/profile.js';
import './views/admin.js';
import './views/keys.js';
import './views/security.js';
import './views/mfa.js'; // answers STEP_UP_REQUIRED with its dialog
import './views/auth.js'; // last: its "Sign out" ends the menu

onSessionChange((isIn) => {
  renderNav();
  if (!isIn) navigate('/login');
});
window.addEventListener('hashchange', () => {
  if (location.hash.startsWith('#/') || location.hash === '') render();
});

await Promise.all([restoreSession(), loadConfig()]);
if (!location.hash.startsWith('#/')) history.replaceState(null, '', signedIn() ? '#/wallets' : '#/login');
await render();

// The app shell works offline and the app installs on a phone (sw.js keeps the shell, never an API answer). Once the
// first page is drawn: a worker's first install fetches the shell, which would otherwise queue beside the page's
// own requests (six connections to a server).
navigator.serviceWorker?.register('sw.js').catch(() => {});
