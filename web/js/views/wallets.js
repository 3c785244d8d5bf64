// Wallets: every wallet with its balance, totals per currency, opening a wallet; one wallet's deposit and withdraw.
import { request } from '../api.js';
import { facts, field, fmtTime, formAlert, h, idempotencyKeys, onSubmit, toast } from '../dom.js';
import { amountError, digitsOf, formatMoney } from '../money.js';
import { navEntry, navigate, route } from '../router.js';
import { paystackForm } from './paystack.js';

export function walletLabel(w) {
  return `${w.name || w.currency + ' wallet'} · ${w.number}`;
}

function walletCard(w) {
  return h(
    'a',
    { class: 'card wallet-card', href: `#/wallets/${w.id}` },
    h('span', { class: 'wallet-name' }, w.name || `${w.currency} wallet`),
    h('span', { class: 'balance' }, formatMoney(w.balance, w.currency)),
    w.available_balance !== undefined && w.available_balance !== w.balance
      ? h('span', { class: 'muted' }, `Available ${formatMoney(w.available_balance, w.currency)}`)
      : null,
    h('span', { class: 'muted mono' }, `No. ${w.number}`),
    w.status !== 'active' ? h('span', { class: 'badge badge-FAILED' }, w.status) : null,
  );
}

async function walletsPage(page) {
  const { items, totals } = await request('GET', 'wallets');
  const form = h(
    'form',
    { class: 'card inline-form', novalidate: true },
    h('h2', {}, 'Open a wallet'),
    h(
      'div',
      { class: 'row' },
      field({ label: 'Currency', name: 'currency', required: true, maxlength: '3', autocomplete: 'off', hint: 'e.g. EUR' }),
      field({ label: 'Name (optional)', name: 'name', maxlength: '64', autocomplete: 'off', hint: 'e.g. Savings' }),
    ),
    formAlert(),
    h('button', { type: 'submit' }, 'Open wallet'),
  );
  onSubmit(form, async (data) => {
    const body = { currency: data.get('currency').trim() };
    if (data.get('name').trim()) body.name = data.get('name').trim();
    const wallet = await request('POST', 'wallets', { body });
    toast(`Opened ${walletLabel(wallet)}.`);
    navigate(`/wallets/${wallet.id}`);
  });
  page.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Wallets'), h('a', { class: 'button primary', href: '#/transfer' }, 'Send money')),
    h(
      'section',
      { class: 'totals', 'aria-label': 'Totals per currency' },
      totals.map((t) => h('div', { class: 'total' }, h('span', { class: 'muted' }, `Total ${t.currency}`), h('strong', {}, formatMoney(t.balance, t.currency)))),
    ),
    h('section', { class: 'grid', 'aria-label': 'Your wallets' }, items.map(walletCard)),
    form,
  );
}

/** A deposit or withdraw form for one wallet, with its Idempotency-Key per submission. */
function moneyForm(wallet, { title, action, button, done }) {
  const digits = digitsOf(wallet.balance);
  const form = h(
    'form',
    { class: 'card', novalidate: true },
    h('h2', {}, title),
    field({ label: `Amount (${wallet.currency})`, name: 'amount', inputmode: 'decimal', autocomplete: 'off', required: true }),
    field({ label: 'Description (optional)', name: 'description', maxlength: '255', autocomplete: 'off' }),
    formAlert(),
    h('button', { type: 'submit', class: 'primary' }, button),
  );
  form.fieldFor = { INSUFFICIENT_FUNDS: 'amount', DAILY_LIMIT_EXCEEDED: 'amount' };
  const once = idempotencyKeys(form);
  onSubmit(form, async (data) => {
    const amount = data.get('amount').trim();
    const invalid = amountError(amount, digits);
    if (invalid) throw { code: 'VALIDATION_ERROR', details: { amount: [invalid] } };
    const body = { amount };
    if (data.get('description').trim()) body.description = data.get('description').trim();
    const tx = await once((key) =>
      request('POST', `wallets/${wallet.id}/${action}`, { body, headers: { 'Idempotency-Key': key } }),
    );
    toast(`${done} ${formatMoney(tx.amount, tx.currency)}.`, 'ok', { key: tx.id }); // its event says no more
    navigate(`/wallets/${wallet.id}`);
  });
  return form;
}

async function walletPage(page, { id }) {
  const wallet = await request('GET', `wallets/${id}`);
  page.append(
    h('p', { class: 'crumbs' }, h('a', { href: '#/wallets' }, '← Wallets')),
    h(
      'div',
      { class: 'page-head' },
      h('h1', {}, wallet.name || `${wallet.currency} wallet`),
      h('a', { class: 'button primary', href: `#/transfer?from=${wallet.id}` }, 'Send from this wallet'),
    ),
    h(
      'section',
      { class: 'card' },
      h('span', { class: 'balance big' }, formatMoney(wallet.balance, wallet.currency)),
      facts([
        ['Number', h('span', { class: 'mono' }, wallet.number)],
        ['Currency', wallet.currency],
        wallet.available_balance !== undefined ? ['Available', formatMoney(wallet.available_balance, wallet.currency)] : null,
        ['Status', wallet.status],
        ['Opened', fmtTime(wallet.created_at)],
      ]),
      h('a', { href: `#/history?wallet_id=${wallet.id}` }, 'History of this wallet →'),
    ),
    h(
      'div',
      { class: 'grid two' },
      moneyForm(wallet, { title: 'Deposit', action: 'deposit', button: 'Deposit', done: 'Deposited' }),
      moneyForm(wallet, { title: 'Withdraw', action: 'withdraw', button: 'Withdraw', done: 'Withdrew' }),
      paystackForm(wallet),
    ),
  );
}

route('/wallets', walletsPage, { live: true });
route('/wallets/:id', walletPage, { live: true });
navEntry('Wallets', '/wallets');
