// Google sign-in: the button on the sign-in page, and the page the provider sends the browser back to.
import { ApiError, request, startSession } from '../api.js';
import { h, messageFor } from '../dom.js';
import { navigate, route } from '../router.js';

const START = new URL('api/v1/auth/google', document.baseURI);
const WORDS = {
  PROVIDER_NOT_CONFIGURED: 'Google sign-in is not set up on this server.',
  ALREADY_EXISTS:
    'An account with this Google e-mail address already exists. Sign in with its password; Google can then be linked to it.',
  INVALID_CREDENTIALS: 'Google sign-in did not complete (it may have taken too long). Try again.',
};
let unavailable = false; // the server has no Google set-up: stop offering the button until a reload

// GOOGLE_REDIRECT_URL is this page: the provider sends the browser back with ?code=&state=. Hand them to the hash
// route and take them out of the address bar before the router starts (this module is imported before it does).
const back = new URLSearchParams(location.search);
if (back.has('state')) history.replaceState(null, '', `${location.pathname}#/google?${back}`);

function words(error) {
  return WORDS[error.code] || messageFor(error);
}

/** "Continue with Google", or nothing once the server said it has no Google set-up. */
export function googleButton() {
  const note = h('p', { class: 'error', role: 'alert', hidden: true });
  const button = h('button', { type: 'button', class: 'google', hidden: unavailable }, 'Continue with Google');
  button.addEventListener('click', async () => {
    button.disabled = true;
    // Ask without following the redirect first: a server without Google answers 503 in JSON, which a plain link
    // would put on screen raw. A redirect means it is set up; the browser then goes there for real.
    const answer = await fetch(START, { redirect: 'manual', cache: 'no-store', credentials: 'omit' }).catch(() => null);
    if (answer?.type === 'opaqueredirect') return location.assign(START);
    const error = answer
      ? new ApiError(answer.status, await answer.json().catch(() => ({})))
      : new ApiError(0, { error: 'Cannot reach the server. Check the connection and try again.' });
    unavailable = error.code === 'PROVIDER_NOT_CONFIGURED';
    button.hidden = unavailable;
    button.disabled = false;
    note.textContent = words(error);
    note.hidden = false;
  });
  return h('div', { class: 'google-sign-in' }, button, note);
}

/** The provider's answer: the code and state go to the API, which answers with a token pair as a password login. */
async function googlePage(page, _params, query) {
  history.replaceState(null, '', '#/google'); // a code works once: keep it out of the history
  page.append(h('h1', {}, 'Continue with Google'));
  const fail = (text) => page.append(h('p', { class: 'form-alert', role: 'alert' }, text), h('p', {}, h('a', { href: '#/login' }, 'Back to sign in')));
  if (!query.get('code')) return fail('Google sign-in was cancelled.');
  try {
    await startSession(await request('GET', 'auth/google/callback', { query: { code: query.get('code'), state: query.get('state') }, anonymous: true }));
  } catch (error) {
    if (!error.code) throw error;
    return fail(words(error));
  }
  navigate('/wallets');
}

route('/google', googlePage, { public: true });
