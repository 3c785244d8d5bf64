// The web wallet's entry point: each view module registers its pages; later features add one import here.
import { onSessionChange, restoreSession, signedIn } from './api.js';
import { navigate, render, renderNav } from './router.js';
import './live.js';
import './views/wallets.js';
import './views/transfer.js';
import './views/history.js';
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

await restoreSession();
if (!location.hash.startsWith('#/')) history.replaceState(null, '', signedIn() ? '#/wallets' : '#/login');
render();
