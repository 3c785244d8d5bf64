// Send money: to a username, wallet number, phone or e-mail, checked as it is typed and reviewed on a confirmation
// step that names who receives it (GET /recipients: a masked name and wallet number) before it is sent.
import { request } from '../api.js';
import { facts, field, formAlert, h, idempotencyKeys, onSubmit, showError, toast } from '../dom.js';
import { amountError, digitsOf, formatMoney, typedAmount } from '../money.js';
import { navEntry, navigate, route } from '../router.js';
import { USERNAME, USERNAME_WORDS } from '../rules.js';
import { walletLabel } from './wallets.js';

const RECIPIENTS = [
  ['to_username', 'Username'],
  ['to_wallet_number', 'Wallet number'],
  ['to_phone', 'Phone'],
  ['to_email', 'E-mail'],
];
const HINTS = {
  to_username: 'Their username; the money goes to their wallet in the same currency.',
  to_wallet_number: 'The 10-digit number of their wallet.',
  to_phone: 'Their phone in international form, such as +15551234567.',
  to_email: 'The e-mail address of their account; the money goes to their wallet in the same currency.',
};
// What each kind of recipient looks like (the API's own rules), checked before the review step: [test, words].
const FORMATS = {
  to_username: [USERNAME, USERNAME_WORDS],
  to_wallet_number: [/^[0-9]{10}$/, 'A wallet number is 10 digits.'],
  to_phone: [/^\+[1-9][0-9]{6,14}$/, 'Enter the phone in international form, such as +15551234567.'],
  to_email: [/^[^@\s]+@[^@\s]+\.[^@\s]+$/, 'Enter an e-mail address such as name@example.com.'],
};
const LOOKUP = { to_username: 'username', to_wallet_number: 'wallet_number', to_phone: 'phone', to_email: 'email' };

/** The recipient as typed, in the form the API takes (a phone without its spaces and dashes). */
export function normalised(kind, text) {
  return kind === 'to_phone' ? text.replace(/[\s-]/g, '') : text;
}

/** Why `to` (normalised) is not a `kind` of recipient (to_username, ...), or null. */
export function recipientError(kind, to) {
  if (!to) return 'Say who it is.';
  return FORMATS[kind][0].test(to) ? null : FORMATS[kind][1];
}

/** A person named by username, wallet number, phone or e-mail: the kind (`recipient_kind`, labelled `kindLabel`)
 * and the value (`recipient`), whose label and hint follow the kind chosen; `hints` (by kind) are the kinds offered. */
export function recipientFields(kindLabel, hints = HINTS) {
  const kinds = RECIPIENTS.filter(([kind]) => kind in hints);
  const recipientKind = field({ label: kindLabel, name: 'recipient_kind', options: kinds });
  const recipient = field({ label: 'Username', name: 'recipient', autocomplete: 'off', required: true, hint: hints.to_username });
  const kindSelect = recipientKind.querySelector('select');
  const relabel = () => {
    recipient.querySelector('label').textContent = RECIPIENTS.find(([v]) => v === kindSelect.value)[1];
    recipient.querySelector('.hint').textContent = hints[kindSelect.value];
  };
  kindSelect.addEventListener('change', relabel);
  return { recipientKind, recipient, kindSelect, relabel };
}

/** Who the money would reach, as the server knows them ("bo•••h · wallet ••••2061"); null when the lookup is
 * throttled (the transfer itself still checks). A recipient the server does not know throws NOT_FOUND. */
async function whoReceives(kind, value, currency) {
  const query = { [LOOKUP[kind]]: value, currency: kind === 'to_wallet_number' ? undefined : currency };
  try {
    const found = await request('GET', 'recipients', { query });
    return `${found.display_name} · wallet ${found.wallet_number_masked}`;
  } catch (error) {
    if (error.code === 'RATE_LIMITED') return null;
    throw error;
  }
}

/** The people the caller sent money to lately, newest first, from their transfer history (no list is stored). */
function recentRecipients(transactions) {
  const names = transactions
    .filter((t) => t.direction === 'out' && t.status === 'COMPLETED' && t.counterparty?.username)
    .map((t) => t.counterparty.username);
  return [...new Set(names)].slice(0, 5);
}

async function transferPage(page, _params, query) {
  const [{ items }, history] = await Promise.all([
    request('GET', 'wallets'),
    request('GET', 'transactions', { query: { type: 'TRANSFER', limit: 50 } }),
  ]);
  const byId = new Map(items.map((w) => [w.id, w]));
  const { recipientKind, recipient, kindSelect, relabel } = recipientFields('Send to');
  const recent = recentRecipients(history.items);
  const recentList = recent.length
    ? h(
        'section',
        { class: 'recent', 'aria-label': 'Recent recipients' },
        h('h2', {}, 'Recent recipients'),
        h(
          'ul',
          { class: 'chips' },
          recent.map((name) =>
            h(
              'li',
              {},
              h(
                'button',
                {
                  type: 'button',
                  class: 'chip',
                  onclick: () => {
                    kindSelect.value = 'to_username';
                    relabel();
                    recipient.querySelector('input').value = name;
                    form.elements.amount.focus();
                  },
                },
                name,
              ),
            ),
          ),
        ),
      )
    : null;

  const form = h(
    'form',
    { class: 'card narrow', novalidate: true },
    field({
      label: 'From',
      name: 'from_wallet_id',
      options: items.map((w) => [w.id, `${walletLabel(w)} · ${formatMoney(w.balance, w.currency)}`]),
      value: byId.has(query.get('from')) ? query.get('from') : items[0]?.id,
    }),
    recentList,
    recipientKind,
    recipient,
    field({ label: 'Amount', name: 'amount', inputmode: 'decimal', autocomplete: 'off', required: true }),
    field({ label: 'Description (optional)', name: 'description', maxlength: '255', autocomplete: 'off' }),
    formAlert(),
    h('button', { type: 'submit', class: 'primary' }, 'Review'),
  );
  // A shared wallet's link (its QR code) names the wallet to pay: #/transfer?to_wallet_number=...
  if (query.get('to_wallet_number')) {
    kindSelect.value = 'to_wallet_number';
    relabel();
    form.elements.recipient.value = query.get('to_wallet_number');
  }
  const review = h('section', { class: 'card narrow review', hidden: true, 'aria-label': 'Confirm the transfer' });
  const once = idempotencyKeys(form); // the key belongs to the values in the form: editing them makes a new one

  const toForm = (error) => {
    review.hidden = true;
    form.hidden = false;
    if (!error) form.elements.recipient.focus(); // Edit: back where the person left, not on <body>
    if (error) {
      // Recipient problems belong under the recipient; refusals about money under the amount.
      if (error.details) {
        error.details = Object.fromEntries(
          Object.entries(error.details).map(([k, v]) => [RECIPIENTS.some(([r]) => r === k) ? 'recipient' : k, v]),
        );
      }
      showError(form, error, {
        INSUFFICIENT_FUNDS: 'amount',
        DAILY_LIMIT_EXCEEDED: 'amount',
        NOT_FOUND: 'recipient',
        SAME_WALLET: 'recipient',
        CURRENCY_MISMATCH: 'recipient',
      });
    }
  };

  onSubmit(form, async (data) => {
    const from = byId.get(data.get('from_wallet_id'));
    const amount = typedAmount(data.get('amount'));
    const kind = data.get('recipient_kind');
    const to = normalised(kind, data.get('recipient').trim());
    const details = {};
    if (!from) details.from_wallet_id = ['Open a wallet first.'];
    else if (amountError(amount, digitsOf(from.balance))) details.amount = [amountError(amount, digitsOf(from.balance))];
    if (!to) details.recipient = ['Say who receives the money.'];
    else if (recipientError(kind, to)) details.recipient = [recipientError(kind, to)];
    if (Object.keys(details).length) throw { code: 'VALIDATION_ERROR', details };
    let receiver;
    try {
      receiver = await whoReceives(kind, to, from.currency);
    } catch (error) {
      if (error.code === 'NOT_FOUND') {
        throw { code: 'VALIDATION_ERROR', details: { recipient: [`No one with a ${from.currency} wallet has this ${kindOf(kind)}.`] } };
      }
      throw error;
    }

    const body = { from_wallet_id: from.id, [kind]: to, amount };
    if (data.get('description').trim()) body.description = data.get('description').trim();
    const kindLabel = kindOf(kind);
    const sendLabel = `Send ${formatMoney(amount, from.currency)}`;
    const confirm = h('button', { type: 'button', class: 'primary' }, sendLabel);
    const back = h('button', { type: 'button' }, 'Edit');
    review.replaceChildren(
      h('h2', {}, 'Check and confirm'),
      facts([
        ['To', h('strong', { class: 'receiver' }, receiver ?? `${to} (not checked now: too many lookups)`)],
        [`Their ${kindLabel}`, to],
        ['Amount', h('strong', { class: 'amount-confirm' }, formatMoney(amount, from.currency))],
        ['From', walletLabel(from)],
        body.description ? ['Description', body.description] : null,
      ]),
      h('div', { class: 'actions' }, confirm, back),
    );
    back.addEventListener('click', () => toForm());
    confirm.addEventListener('click', async () => {
      confirm.disabled = back.disabled = true; // a double click sends once; the key makes a retry safe too
      confirm.textContent = 'Sending…';
      review.setAttribute('aria-busy', 'true');
      try {
        const tx = await once((key) => request('POST', 'transfers', { body, headers: { 'Idempotency-Key': key } }));
        toast(`Sent ${formatMoney(tx.amount, tx.currency)} to ${tx.counterparty?.username || to}.`);
        navigate(`/transactions/${tx.id}`);
      } catch (error) {
        if (!error.code) throw error;
        toForm(error);
      } finally {
        confirm.disabled = back.disabled = false;
        confirm.textContent = sendLabel;
        review.removeAttribute('aria-busy');
      }
    });
    form.hidden = true;
    review.hidden = false;
    confirm.focus();
  });
  page.append(h('h1', {}, 'Send money'), form, review);
}

function kindOf(kind) {
  return RECIPIENTS.find(([v]) => v === kind)[1].toLowerCase();
}

route('/transfer', transferPage);
navEntry('Send', '/transfer');
