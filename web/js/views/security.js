// Security: two-factor sign-in (enrol with a QR code, confirm, the recovery codes shown once, turn off) and the
// sessions of the account with their sign-out buttons.
import { endSession, loadUser, request } from '../api.js';
import { facts, field, fmtTime, formAlert, h, onSubmit, toast } from '../dom.js';
import { navEntry, navigate, route } from '../router.js';
import { codeOrRecovery } from './mfa.js';

/** The recovery codes, on screen until the person says they have kept them; never stored, never shown again. */
function showRecoveryCodes(card, codes) {
  const copy = h('button', { type: 'button' }, 'Copy');
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(codes.join('\n'));
      toast('Copied.');
    } catch {
      toast('Copying was refused: select the codes and copy them by hand.', 'bad');
    }
  });
  card.replaceChildren(
    h('h2', {}, 'Two-factor sign-in is on'),
    h('p', {}, 'Keep these recovery codes somewhere safe. Each signs you in once if you lose your phone; they are shown only now.'),
    h('ul', { class: 'recovery-codes mono', 'aria-label': 'Recovery codes' }, codes.map((c) => h('li', {}, c))),
    h('div', { class: 'actions' }, copy, h('button', { type: 'button', class: 'primary', onclick: () => navigate('/security') }, 'I have kept them')),
  );
  card.focus();
}

/** Enrolment: the QR code (and the secret, for typing), then the first code turns it on. */
async function enrol(card) {
  const enrolment = await request('POST', 'users/me/2fa');
  const form = h(
    'form',
    { novalidate: true },
    field({ label: 'Code from the app', name: 'code', inputmode: 'numeric', autocomplete: 'one-time-code', maxlength: '6', required: true }),
    formAlert(),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Turn on'), h('button', { type: 'button', onclick: () => navigate('/security') }, 'Cancel')),
  );
  form.fieldFor = { INVALID_CREDENTIALS: 'code' };
  form.words = { INVALID_CREDENTIALS: 'That code is wrong or expired: check the time on your phone and try the next one.' };
  onSubmit(form, async (data) => {
    const { recovery_codes: codes } = await request('POST', 'users/me/2fa/confirm', { body: { code: data.get('code').trim() } });
    showRecoveryCodes(card, codes);
  });
  card.replaceChildren(
    h('h2', {}, 'Turn on two-factor sign-in'),
    h('p', {}, 'Scan this QR code with an authenticator app (such as Google Authenticator, Authy or 1Password), then enter the code it shows.'),
    h('img', { class: 'qr', src: enrolment.qr_code, alt: 'QR code to add this account to an authenticator app', width: '220', height: '220' }),
    h('p', { class: 'muted' }, 'Cannot scan? Type this key into the app: ', h('code', { class: 'mono secret' }, enrolment.secret)),
    form,
  );
  form.querySelector('input').focus();
}

function twoFactorCard(me) {
  const card = h('section', { class: 'card', tabindex: '-1', 'aria-label': 'Two-factor sign-in' });
  if (!me.two_factor) {
    const start = h('button', { type: 'button', class: 'primary' }, 'Turn on');
    const note = formAlert();
    start.addEventListener('click', async () => {
      start.disabled = true;
      try {
        await enrol(card);
      } catch (error) {
        if (!error.code) throw error;
        start.disabled = false;
        note.textContent = error.message;
        note.hidden = false;
      }
    });
    card.append(
      h('h2', {}, 'Two-factor sign-in'),
      h('p', {}, 'Off. With it on, signing in also asks for a code from an app on your phone.'),
      note,
      start,
    );
    return card;
  }
  const codes = codeOrRecovery();
  const hasPassword = me.auth_providers.includes('password');
  const form = h(
    'form',
    { novalidate: true },
    hasPassword ? field({ label: 'Password', name: 'password', type: 'password', autocomplete: 'current-password', required: true }) : null,
    codes.slot,
    formAlert(),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'danger' }, 'Turn off'), codes.toggle),
  );
  form.words = { INVALID_CREDENTIALS: 'The password or the code is wrong.' };
  onSubmit(form, async (data) => {
    const body = codes.proof(data);
    if (hasPassword) body.password = data.get('password');
    await request('DELETE', 'users/me/2fa', { body });
    toast('Two-factor sign-in is off.');
    navigate('/security');
  });
  card.append(h('h2', {}, 'Two-factor sign-in'), h('p', {}, 'On: signing in asks for a code from your authenticator app.'), form);
  return card;
}

function sessionItem(session) {
  const end = h('button', { type: 'button' }, session.current ? 'Sign out' : 'Sign out this session');
  end.addEventListener('click', async () => {
    end.disabled = true;
    await request('DELETE', `users/me/sessions/${session.id}`);
    if (session.current) return endSession();
    toast('Signed out that session.');
    navigate('/security');
  });
  return h(
    'li',
    { class: 'card session', dataset: { sessionId: session.id } },
    h('div', { class: 'page-head' }, h('strong', {}, session.user_agent || 'Unknown device'), session.current ? h('span', { class: 'badge badge-active' }, 'This device') : null),
    facts([
      ['Address', session.ip || '—'],
      ['Signed in', fmtTime(session.created_at)],
      ['Last active', fmtTime(session.last_used_at)],
    ]),
    end,
  );
}

async function securityPage(page) {
  const [{ items }, me] = await Promise.all([
    request('GET', 'users/me/sessions', { query: { limit: 200 } }),
    loadUser(), // fresh: two-factor sign-in was just turned on or off
  ]);
  const others = h('button', { type: 'button', hidden: items.length < 2 }, 'Sign out everywhere else');
  others.addEventListener('click', async () => {
    others.disabled = true;
    await request('POST', 'users/me/sessions/revoke-others');
    toast('Signed out everywhere else.');
    navigate('/security');
  });
  page.append(
    h('h1', {}, 'Security'),
    twoFactorCard(me),
    h('div', { class: 'page-head' }, h('h2', {}, 'Where you are signed in'), others),
    h('ul', { class: 'plain-list', 'aria-label': 'Sessions' }, items.map(sessionItem)),
  );
}

route('/security', securityPage);
navEntry('Security', '/security');
