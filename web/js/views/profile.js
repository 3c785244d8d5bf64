// Profile: e-mail, phone, password, the ways to sign in (linking Google); closing the account after a confirmation.
import { endSession, loadUser, request } from '../api.js';
import { facts, field, fmtTime, formAlert, h, onSubmit, toast } from '../dom.js';
import { navEntry, navigate, route } from '../router.js';
import { passwordProblems, refuse } from '../rules.js';
import { linkGoogleButton } from './google.js';

const PROVIDERS = { password: 'Password', google: 'Google' };

async function profilePage(page) {
  const me = await loadUser(); // fresh: the ways to sign in change under this page (Google linked)
  const contact = h(
    'form',
    { class: 'card', novalidate: true },
    h('h2', {}, 'Contact'),
    field({ label: 'E-mail', name: 'email', type: 'email', autocomplete: 'email', value: me.email || '' }),
    field({
      label: 'Phone',
      name: 'phone',
      type: 'tel',
      autocomplete: 'tel',
      value: me.phone || '',
      hint: 'International form, such as +15551234567. Empty removes it.',
    }),
    formAlert(),
    h('button', { type: 'submit', class: 'primary' }, 'Save'),
  );
  onSubmit(contact, async (data) => {
    const body = {};
    for (const name of ['email', 'phone']) {
      const value = data.get(name).trim() || null;
      if (value !== (me[name] || null)) body[name] = value;
    }
    if (!Object.keys(body).length) return toast('Nothing changed.');
    await request('PATCH', 'users/me', { body });
    toast('Saved.');
    navigate('/profile');
  });

  const password = h(
    'form',
    { class: 'card', novalidate: true },
    h('h2', {}, 'Password'),
    field({ label: 'Current password', name: 'current_password', type: 'password', autocomplete: 'current-password' }),
    field({
      label: 'New password',
      name: 'password',
      type: 'password',
      autocomplete: 'new-password',
      hint: 'Signs out your other sessions.',
    }),
    formAlert(),
    h('button', { type: 'submit', class: 'primary' }, 'Change password'),
  );
  password.words = { INVALID_CREDENTIALS: 'The current password is wrong.' }; // not "wrong username or password"
  password.fieldFor = { INVALID_CREDENTIALS: 'current_password' };
  onSubmit(password, async (data) => {
    refuse({ password: passwordProblems(data.get('password'), me.username) });
    await request('PATCH', 'users/me', {
      body: { current_password: data.get('current_password'), password: data.get('password') },
    });
    password.reset();
    toast('Password changed; other sessions are signed out.');
  });

  const close = h(
    'form',
    { class: 'card danger', novalidate: true },
    h('h2', {}, 'Close account'),
    h(
      'p',
      {},
      'Your account is deactivated: you cannot sign in again, and your history stays for the records. ' +
        'Move your money out first.',
    ),
    field({ label: `Type your username (${me.username}) to confirm`, name: 'confirm', autocomplete: 'off' }),
    formAlert(),
    h('button', { type: 'submit', class: 'danger' }, 'Close my account'),
  );
  onSubmit(close, async (data) => {
    if (data.get('confirm').trim() !== me.username) {
      throw { code: 'VALIDATION_ERROR', details: { confirm: ['Type your username exactly to confirm.'] } };
    }
    await request('DELETE', 'users/me');
    endSession();
    toast('Your account is closed.');
  });

  page.append(
    h('h1', {}, 'Profile'),
    h(
      'section',
      { class: 'card' },
      facts([
        ['Username', me.username],
        ['Role', me.role],
        ['Status', me.status],
        ['Member since', fmtTime(me.created_at)],
        ['Sign in with', me.auth_providers.map((p) => PROVIDERS[p] || p).join(', ')],
      ]),
      me.auth_providers.includes('google') ? null : linkGoogleButton(),
    ),
    h('div', { class: 'grid two' }, contact, password),
    close,
  );
}

route('/profile', profilePage);
navEntry('Profile', '/profile');
