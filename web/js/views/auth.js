// Sign in, register and sign out.
import { logIn, logOut, request, signedIn } from '../api.js';
import { field, formAlert, h, onSubmit, toast } from '../dom.js';
import { isPage, navEntry, navigate, route } from '../router.js';
import { currencyError, passwordProblems, refuse, USERNAME, USERNAME_WORDS } from '../rules.js';
import { googleButton } from './google.js';
import { codeStep } from './mfa.js';

/** "alice" / "alice@example.com" / "+15551234567" -> the login field it is. */
function identifierField(text) {
  if (text.includes('@')) return 'email';
  if (text.startsWith('+')) return 'phone';
  return 'username';
}

function afterSignIn(query) {
  const next = query.get('next');
  navigate(next && isPage(next) ? next : '/wallets'); // never next=/logout: that would sign the person out again
}

function loginPage(page, _params, query) {
  if (signedIn()) return afterSignIn(query);
  const form = h(
    'form',
    { class: 'card narrow', novalidate: true },
    field({ label: 'Username, e-mail or phone', name: 'identifier', autocomplete: 'username', required: true }),
    field({ label: 'Password', name: 'password', type: 'password', autocomplete: 'current-password', required: true }),
    formAlert(),
    h('button', { type: 'submit', class: 'primary' }, 'Sign in'),
    h('p', { class: 'muted' }, 'New here? ', h('a', { href: '#/register' }, 'Create an account')),
  );
  onSubmit(form, async (data) => {
    const identifier = data.get('identifier').trim();
    const kind = identifierField(identifier);
    try {
      await logIn({ [kind]: identifier, password: data.get('password') });
    } catch (error) {
      if (error.code === 'MFA_REQUIRED') return codeStep(page, error.mfaToken, () => afterSignIn(query));
      // The identifier is typed into one field whatever its kind: show its errors there.
      if (error.details?.[kind]) error.details = { ...error.details, identifier: error.details[kind] };
      throw error;
    }
    afterSignIn(query);
  });
  page.append(h('h1', {}, 'Sign in'), form, googleButton());
}

function registerPage(page) {
  const form = h(
    'form',
    { class: 'card narrow', novalidate: true },
    field({
      label: 'Username',
      name: 'username',
      autocomplete: 'username',
      required: true,
      hint: '3 to 32 letters, digits, _ . or -',
    }),
    field({
      label: 'Password',
      name: 'password',
      type: 'password',
      autocomplete: 'new-password',
      required: true,
      hint: 'At least 8 characters, not only digits.',
    }),
    field({ label: 'E-mail (optional)', name: 'email', type: 'email', autocomplete: 'email' }),
    field({
      label: 'Phone (optional)',
      name: 'phone',
      type: 'tel',
      autocomplete: 'tel',
      hint: 'International form, such as +15551234567.',
    }),
    field({
      label: 'Currency of your first wallet (optional)',
      name: 'currency',
      autocomplete: 'off',
      hint: 'An ISO code such as USD, EUR or NGN; the server default when empty.',
    }),
    formAlert(),
    h('button', { type: 'submit', class: 'primary' }, 'Create account'),
    h('p', { class: 'muted' }, 'Already registered? ', h('a', { href: '#/login' }, 'Sign in')),
  );
  onSubmit(form, async (data) => {
    const body = { username: data.get('username').trim(), password: data.get('password') };
    for (const name of ['email', 'phone', 'currency']) {
      const value = data.get(name).trim();
      if (value) body[name] = value;
    }
    refuse({
      username: USERNAME.test(body.username) ? [] : [USERNAME_WORDS],
      password: passwordProblems(body.password, body.username),
      currency: body.currency && currencyError(body.currency) ? [currencyError(body.currency)] : [],
    });
    await request('POST', 'auth/register', { body });
    await logIn({ username: body.username, password: body.password });
    toast(`Welcome, ${body.username}.`);
    navigate('/wallets');
  });
  page.append(h('h1', {}, 'Create an account'), form);
}

async function logoutPage() {
  // The sign-out takes its own place in the history: Back from the sign-in page never signs out again.
  history.replaceState(null, '', '#/login');
  await logOut().catch(() => {});
  toast('Signed out.');
}

route('/login', loginPage, { public: true });
route('/register', registerPage, { public: true });
route('/logout', logoutPage, { action: true });
navEntry('Sign out', '/logout');
