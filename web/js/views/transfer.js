// Send money: to a wallet number, a username or a phone, reviewed on a confirmation step before it is sent.
import { request } from '../api.js';
import { facts, field, formAlert, h, idempotencyKeys, onSubmit, showError, toast } from '../dom.js';
import { amountError, digitsOf, formatMoney } from '../money.js';
import { navEntry, navigate, route } from '../router.js';
import { walletLabel } from './wallets.js';

const RECIPIENTS = [
  ['to_username', 'Username'],
  ['to_wallet_number', 'Wallet number'],
  ['to_phone', 'Phone'],
];
const HINTS = {
  to_username: 'Their username; the money goes to their wallet in the same currency.',
  to_wallet_number: 'The 10-digit number of their wallet.',
  to_phone: 'Their phone in international form, such as +15551234567.',
};

async function transferPage(page, _params, query) {
  const { items } = await request('GET', 'wallets');
  const byId = new Map(items.map((w) => [w.id, w]));
  const recipientKind = field({ label: 'Send to', name: 'recipient_kind', options: RECIPIENTS });
  const recipient = field({ label: 'Username', name: 'recipient', autocomplete: 'off', required: true, hint: HINTS.to_username });
  const kindSelect = recipientKind.querySelector('select');
  const relabel = () => {
    recipient.querySelector('label').textContent = RECIPIENTS.find(([v]) => v === kindSelect.value)[1];
    recipient.querySelector('.hint').textContent = HINTS[kindSelect.value];
  };
  kindSelect.addEventListener('change', relabel);

  const form = h(
    'form',
    { class: 'card narrow', novalidate: true },
    field({
      label: 'From',
      name: 'from_wallet_id',
      options: items.map((w) => [w.id, `${walletLabel(w)} · ${formatMoney(w.balance, w.currency)}`]),
      value: byId.has(query.get('from')) ? query.get('from') : items[0]?.id,
    }),
    recipientKind,
    recipient,
    field({ label: 'Amount', name: 'amount', inputmode: 'decimal', autocomplete: 'off', required: true }),
    field({ label: 'Description (optional)', name: 'description', maxlength: '255', autocomplete: 'off' }),
    formAlert(),
    h('button', { type: 'submit', class: 'primary' }, 'Review'),
  );
  const review = h('section', { class: 'card narrow review', hidden: true, 'aria-label': 'Confirm the transfer' });
  const once = idempotencyKeys(form); // the key belongs to the values in the form: editing them makes a new one

  const toForm = (error) => {
    review.hidden = true;
    form.hidden = false;
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
    const amount = data.get('amount').trim();
    const to = data.get('recipient').trim();
    const details = {};
    if (!from) details.from_wallet_id = ['Open a wallet first.'];
    else if (amountError(amount, digitsOf(from.balance))) details.amount = [amountError(amount, digitsOf(from.balance))];
    if (!to) details.recipient = ['Say who receives the money.'];
    if (Object.keys(details).length) throw { code: 'VALIDATION_ERROR', details };

    const body = { from_wallet_id: from.id, [data.get('recipient_kind')]: to, amount };
    if (data.get('description').trim()) body.description = data.get('description').trim();
    const kindLabel = RECIPIENTS.find(([v]) => v === data.get('recipient_kind'))[1].toLowerCase();
    const confirm = h('button', { type: 'button', class: 'primary' }, `Send ${formatMoney(amount, from.currency)}`);
    const back = h('button', { type: 'button' }, 'Edit');
    review.replaceChildren(
      h('h2', {}, 'Check and confirm'),
      facts([
        ['To', `${to} (${kindLabel})`],
        ['Amount', h('strong', { class: 'amount-confirm' }, formatMoney(amount, from.currency))],
        ['From', walletLabel(from)],
        body.description ? ['Description', body.description] : null,
      ]),
      h('div', { class: 'actions' }, confirm, back),
    );
    back.addEventListener('click', () => toForm());
    confirm.addEventListener('click', async () => {
      confirm.disabled = back.disabled = true; // a double click sends once; the key makes a retry safe too
      try {
        const tx = await once((key) => request('POST', 'transfers', { body, headers: { 'Idempotency-Key': key } }));
        toast(`Sent ${formatMoney(tx.amount, tx.currency)} to ${tx.counterparty?.username || to}.`);
        navigate(`/transactions/${tx.id}`);
      } catch (error) {
        if (!error.code) throw error;
        toForm(error);
      } finally {
        confirm.disabled = back.disabled = false;
      }
    });
    form.hidden = true;
    review.hidden = false;
    confirm.focus();
  });
  page.append(h('h1', {}, 'Send money'), form, review);
}

route('/transfer', transferPage);
navEntry('Send', '/transfer');
