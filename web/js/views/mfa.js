// Codes and confirmations: the sign-in's second step (a code from the authenticator app, or a recovery code) and
// the "confirm it is you" dialog a step-up asks for, which leaves the page and its forms as they were.
import { currentUser, finishSignIn, onStepUp, stepUp } from '../api.js';
import { field, formAlert, h, onSubmit } from '../dom.js';

const CODE = { label: 'Code from your authenticator app', name: 'code', inputmode: 'numeric', autocomplete: 'one-time-code', maxlength: '6', pattern: '[0-9]{6}', required: true };
const RECOVERY = { label: 'Recovery code', name: 'recovery_code', autocomplete: 'off', maxlength: '20', hint: 'One of the codes you saved when you turned two-factor sign-in on. Each works once.', required: true };

/** A code field and a button that swaps it for a recovery-code field (and back); `proof(data)` is what was typed,
 * as the API takes it. */
export function codeOrRecovery() {
  const slot = h('div', {});
  const toggle = h('button', { type: 'button', class: 'link-button' });
  let recovery = false;
  const show = () => {
    slot.replaceChildren(field(recovery ? RECOVERY : CODE));
    toggle.textContent = recovery ? 'Use a code from the app instead' : 'Use a recovery code instead';
  };
  toggle.addEventListener('click', () => {
    recovery = !recovery;
    show();
    slot.querySelector('input').focus();
  });
  show();
  return { slot, toggle, proof: (data) => (recovery ? { recovery_code: data.get('recovery_code').trim() } : { code: data.get('code').trim() }) };
}

/** The second step of a sign-in (password or Google) of an account with two-factor sign-in: `mfaToken` and a code
 * give the session; `done()` goes on from there. */
export function codeStep(page, mfaToken, done) {
  const codes = codeOrRecovery();
  const form = h(
    'form',
    { class: 'card narrow', novalidate: true },
    h('p', {}, 'Your account has two-factor sign-in: enter the 6-digit code your authenticator app shows.'),
    codes.slot,
    formAlert(),
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Verify'), codes.toggle),
  );
  form.fieldFor = { INVALID_CREDENTIALS: 'code' };
  form.words = {
    INVALID_CREDENTIALS: 'That code is wrong, expired or was already used.',
    INVALID_TOKEN: 'The sign-in took too long. Start again.',
    TOKEN_EXPIRED: 'The sign-in took too long. Start again.',
  };
  onSubmit(form, async (data) => {
    await finishSignIn(mfaToken, codes.proof(data));
    done();
  });
  page.replaceChildren(h('h1', {}, 'Enter your code'), form);
  form.querySelector('input').focus();
}

/** The step-up dialog: the password, or a code when two-factor sign-in is on. Resolves true once the server has
 * given a fresh token, false when the person cancels. */
function confirmItIsYou() {
  return new Promise((resolve) => {
    const twoFactor = Boolean(currentUser()?.two_factor);
    const form = h(
      'form',
      { novalidate: true },
      h('h2', {}, 'Confirm it is you'),
      h('p', {}, twoFactor
        ? 'For this, enter the code your authenticator app shows now. What you were doing is kept.'
        : 'For this, enter your password again. What you were doing is kept.'),
      twoFactor
        ? field(CODE)
        : field({ label: 'Password', name: 'password', type: 'password', autocomplete: 'current-password', required: true }),
      formAlert(),
      h('div', { class: 'actions' },
        h('button', { type: 'submit', class: 'primary' }, 'Confirm'),
        h('button', { type: 'button', onclick: () => dialog.close('cancel') }, 'Cancel')),
    );
    const dialog = h('dialog', { class: 'step-up', 'aria-labelledby': 'step-up-title' }, form);
    form.querySelector('h2').id = 'step-up-title';
    form.fieldFor = { INVALID_CREDENTIALS: twoFactor ? 'code' : 'password' };
    form.words = { INVALID_CREDENTIALS: twoFactor ? 'That code is wrong or was already used.' : 'That password is wrong.' };
    let confirmed = false;
    onSubmit(form, async (data) => {
      await stepUp(twoFactor ? { code: data.get('code').trim() } : { password: data.get('password') });
      confirmed = true;
      dialog.close('ok');
    });
    dialog.addEventListener('close', () => {
      dialog.remove();
      resolve(confirmed);
    });
    document.body.append(dialog);
    dialog.showModal();
    form.querySelector('input').focus();
  });
}

onStepUp(confirmItIsYou);
