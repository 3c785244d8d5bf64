// Google: the sign-in button, "Link Google" on the profile, and the page the provider sends the browser back to.
import { ApiError, enabled, loadUser, onSessionChange, request, signedIn, startSession } from '../api.js';
import { h, messageFor, toast } from '../dom.js';
import { navigate, route } from '../router.js';
import { codeStep } from './mfa.js';

const START = new URL('api/v1/auth/google', document.baseURI);
// The state of a linking flow this tab started: when the provider sends that state back, the code links Google to
// the signed-in account instead of signing in (both flows come back to the same GOOGLE_REDIRECT_URL).
const LINKING = 'wallet.google_link';
// The secret binding a sign-in this tab started to this tab: its SHA-256 goes to the start, the secret itself with the
// callback. A sign-in someone else started (a link sent to a signed-in person: login CSRF) cannot bring it back.
const SIGNING_IN = 'wallet.google_sign_in';
const WORDS = {
  PROVIDER_NOT_CONFIGURED: 'Google sign-in is not set up on this server.',
  ALREADY_EXISTS:
    'An account with this Google e-mail address already exists. Sign in with its password; Google can then be linked to it.',
  INVALID_CREDENTIALS: 'Google sign-in did not complete (it may have taken too long). Try again.',
};
const LINK_WORDS = {
  ALREADY_EXISTS: 'That Google account is linked to another account here, or this account to another Google account.',
};
let unavailable = false; // the server has no Google set-up: stop offering the buttons until a reload

// GOOGLE_REDIRECT_URL is this page: the provider sends the browser back with ?code=&state=. Hand them to the hash
// route and take them out of the address bar before the router starts (this module is imported before it does).
const back = new URLSearchParams(location.search);
if (back.has('state')) history.replaceState(null, '', `${location.pathname}#/google?${back}`);
onSessionChange((isIn) => {
  if (!isIn) sessionStorage.removeItem(LINKING);
});

function words(error, linking = false) {
  return (linking && LINK_WORDS[error.code]) || WORDS[error.code] || messageFor(error);
}

/** A button that goes to the provider at the URL `go()` finds, or says in words why not. */
function providerButton(label, go) {
  const note = h('p', { class: 'error', role: 'alert', hidden: true });
  const button = h('button', { type: 'button', class: 'google', hidden: unavailable || !enabled('google') }, label);
  button.addEventListener('click', async () => {
    button.disabled = true;
    let url;
    try {
      url = await go();
    } catch (error) {
      if (!error.code) throw error;
      unavailable = error.code === 'PROVIDER_NOT_CONFIGURED';
      button.hidden = unavailable;
      button.disabled = false;
      note.textContent = words(error);
      note.hidden = false;
      return;
    }
    location.assign(url);
  });
  return h('div', { class: 'google-sign-in', hidden: !enabled('google') }, button, note);
}

function base64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes))).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '');
}

/** "Continue with Google", or nothing once the server said it has no Google set-up. */
export function googleButton() {
  return providerButton('Continue with Google', async () => {
    const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
    const start = new URL(START);
    start.searchParams.set('binding_challenge', base64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(verifier))));
    // Ask without following the redirect first: a server without Google answers 503 in JSON, which a plain link
    // would put on screen raw. A redirect means it is set up; the browser then goes there for real.
    const answer = await fetch(start, { redirect: 'manual', cache: 'no-store', credentials: 'omit' }).catch(() => null);
    if (answer?.type === 'opaqueredirect') {
      sessionStorage.setItem(SIGNING_IN, verifier);
      return start;
    }
    throw answer
      ? new ApiError(answer.status, await answer.json().catch(() => ({})))
      : new ApiError(0, { error: 'Cannot reach the server. Check the connection and try again.' });
  });
}

/** "Link Google" for the signed-in account: a flow bound to it, whose state this tab remembers until it is back. */
export function linkGoogleButton() {
  return providerButton('Link Google', async () => {
    const { authorization_url: url } = await request('POST', 'users/me/google/start');
    sessionStorage.setItem(LINKING, new URL(url).searchParams.get('state'));
    return url;
  });
}

/** Signed in already: the page asks before the Google sign-in replaces this session; `go()` goes on. */
async function switchAccount(page, go) {
  const { username } = await loadUser(); // the router's request, on its way (shared)
  const switchTo = () => {
    ask.remove();
    go();
  };
  const ask = h(
    'div',
    { class: 'switch-account' },
    h('p', {}, `You are signed in as ${username}. Sign in with the Google account instead?`),
    h(
      'div',
      { class: 'actions' },
      h('button', { type: 'button', class: 'primary', onclick: switchTo }, 'Switch to the Google account'),
      h('button', { type: 'button', onclick: () => navigate('/wallets') }, 'Stay signed in'),
    ),
  );
  page.append(ask);
}

/** The provider's answer: the code and state go to the API, which signs in (a token pair, as a password login) or,
 * for a linking flow this tab started, links Google to the signed-in account. A sign-in goes on only in the tab that
 * started it, and never replaces a session without asking. */
async function googlePage(page, _params, query) {
  history.replaceState(null, '', '#/google'); // a code works once: keep it out of the history
  const linking = signedIn() && query.has('state') && sessionStorage.getItem(LINKING) === query.get('state');
  const verifier = sessionStorage.getItem(SIGNING_IN);
  sessionStorage.removeItem(LINKING);
  sessionStorage.removeItem(SIGNING_IN);
  page.append(h('h1', {}, linking ? 'Link Google' : 'Continue with Google'));
  const [href, text] = linking ? ['#/profile', 'Back to the profile'] : ['#/login', 'Back to sign in'];
  const fail = (message) => page.append(h('p', { class: 'form-alert', role: 'alert' }, message), h('p', {}, h('a', { href }, text)));
  if (!query.get('code')) return fail(linking ? 'Linking Google was cancelled.' : 'Google sign-in was cancelled.');
  const flow = { code: query.get('code'), state: query.get('state') };
  if (!linking && !verifier) return fail('This Google sign-in was not started in this tab, so it was not used. Start again.');
  const finish = async ({ replacing = false } = {}) => {
    try {
      if (linking) {
        await request('POST', 'users/me/google', { body: flow });
        toast('Google is linked: you can sign in with it too.');
        return navigate('/profile');
      }
      const callback = { ...flow, binding_verifier: verifier };
      const pair = await request('GET', 'auth/google/callback', { query: callback, anonymous: true });
      // Switching accounts signs the replaced session out (on the server too), rather than leaving it alive unseen.
      if (replacing) await request('POST', 'auth/logout').catch(() => {});
      startSession(pair);
    } catch (error) {
      if (!error.code) throw error;
      if (error.code === 'MFA_REQUIRED') return codeStep(page, error.mfaToken, () => navigate('/wallets'));
      return fail(words(error, linking));
    }
    navigate('/wallets');
  };
  if (!linking && signedIn()) return switchAccount(page, () => finish({ replacing: true }));
  return finish();
}

route('/google', googlePage, { public: true });
