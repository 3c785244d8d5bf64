// Payouts: money out of a wallet to a bank account through Paystack. The user's bank accounts (add one from the
// banks of its currency, as the bank resolves the holder's name; delete one), a payout from a wallet to one of them
// (an Idempotency-Key per try), and the payouts with their status. Where the server has no Paystack, the page says so.
import { enabled, request } from '../api.js';
import { askFirst, field, fmtTime, formAlert, h, idempotencyKeys, onSubmit, toast } from '../dom.js';
import { amountError, digitsOf, formatMoney, typedAmount } from '../money.js';
import { pagedList } from '../paging.js';
import { navEntry, navigate, route } from '../router.js';
import { refuse } from '../rules.js';
import { walletLabel } from './wallets.js';

const CURRENCIES = ['NGN', 'GHS', 'ZAR', 'KES']; // the currencies Paystack pays out in (docs/payouts.md)

function accountLabel(a) {
  return `${a.bank_name} · ${a.account_number_masked} · ${a.account_name}`;
}

/** Fill the bank <select> with the banks of `currency` (GET /banks); a refusal shows in the form's alert. */
async function loadBanks(form, currency) {
  const select = form.elements.bank_code;
  select.replaceChildren(h('option', { value: '' }, 'Loading banks…'));
  const { items } = await request('GET', 'banks', { query: { currency } });
  select.replaceChildren(h('option', { value: '' }, 'Choose a bank'), ...items.map((b) => h('option', { value: b.code }, b.name)));
}

function addAccountForm(wallets) {
  const held = CURRENCIES.filter((c) => wallets.some((w) => w.currency === c));
  const form = h(
    'form',
    { class: 'card', novalidate: true, 'aria-label': 'Add a bank account' },
    h('h2', {}, 'Add a bank account'),
    h(
      'div',
      { class: 'row' },
      field({ label: 'Currency', name: 'currency', options: [...held, ...CURRENCIES.filter((c) => !held.includes(c))].map((c) => [c, c]) }),
      field({ label: 'Bank', name: 'bank_code', options: [] }),
      field({ label: 'Account number', name: 'account_number', inputmode: 'numeric', autocomplete: 'off', required: true, hint: '6 to 20 digits.' }),
    ),
    formAlert(),
    h('button', { type: 'submit', class: 'primary' }, 'Add account'),
  );
  form.words = { PAYOUT_ACCOUNT_INVALID: 'The bank could not find this account: check the bank and the number.' };
  form.fieldFor = { PAYOUT_ACCOUNT_INVALID: 'account_number' };
  const banks = () =>
    loadBanks(form, form.elements.currency.value).catch((error) => {
      form.elements.bank_code.replaceChildren(h('option', { value: '' }, 'No banks: try again later'));
      const alert = form.querySelector('.form-alert');
      alert.textContent = error.message;
      alert.hidden = false;
    });
  form.elements.currency.addEventListener('change', banks);
  onSubmit(form, async (data) => {
    const body = { currency: data.get('currency'), bank_code: data.get('bank_code'), account_number: data.get('account_number').replace(/\s/g, '') };
    refuse({
      bank_code: body.bank_code ? [] : ['Choose the bank.'],
      account_number: /^[0-9]{6,20}$/.test(body.account_number) ? [] : ['An account number is 6 to 20 digits.'],
    });
    const account = await request('POST', 'payout-accounts', { body });
    toast(`Added ${accountLabel(account)}.`);
    navigate('/payouts');
  });
  return { form, banks };
}

function payoutForm(wallets, accounts) {
  const form = h(
    'form',
    { class: 'card', novalidate: true, 'aria-label': 'Pay out' },
    h('h2', {}, 'Pay out to a bank account'),
    h(
      'div',
      { class: 'row' },
      field({ label: 'From', name: 'wallet_id', options: wallets.map((w) => [w.id, `${walletLabel(w)} · ${formatMoney(w.available_balance ?? w.balance, w.currency)}`]) }),
      field({ label: 'To', name: 'payout_account_id', options: accounts.map((a) => [a.id, `${accountLabel(a)} (${a.currency})`]) }),
    ),
    field({ label: 'Amount', name: 'amount', inputmode: 'decimal', autocomplete: 'off', required: true }),
    field({ label: 'Description (optional)', name: 'description', maxlength: '255', autocomplete: 'off' }),
    formAlert(),
    h('button', { type: 'submit', class: 'primary' }, 'Pay out'),
  );
  form.fieldFor = { INSUFFICIENT_FUNDS: 'amount', DAILY_LIMIT_EXCEEDED: 'amount', CURRENCY_MISMATCH: 'payout_account_id' };
  const once = idempotencyKeys(form);
  onSubmit(form, async (data) => {
    const wallet = wallets.find((w) => w.id === data.get('wallet_id'));
    const account = accounts.find((a) => a.id === data.get('payout_account_id'));
    const amount = typedAmount(data.get('amount'));
    const invalid = amountError(amount, digitsOf(wallet.balance));
    refuse({
      amount: invalid ? [invalid] : [],
      payout_account_id: account.currency === wallet.currency ? [] : [`This account is in ${account.currency}: pay out from a ${account.currency} wallet.`],
    });
    const body = { payout_account_id: account.id, amount };
    if (data.get('description').trim()) body.description = data.get('description').trim();
    const payout = await once((key) =>
      request('POST', `wallets/${wallet.id}/payouts`, { body, headers: { 'Idempotency-Key': key } }),
    );
    toast(`Payout of ${formatMoney(payout.amount, payout.currency)}: ${payout.status.toLowerCase()}.`);
    navigate('/payouts');
  });
  return form;
}

/** A bank account with its Delete, after a second "Yes". */
function accountItem(a) {
  const actions = h('div', { class: 'row-actions' });
  const ask = () =>
    askFirst(actions, {
      question: 'Delete this account? Payouts already made to it keep naming it.',
      yes: 'Yes, delete',
      no: 'Keep it',
      run: async () => {
        await request('DELETE', `payout-accounts/${a.id}`);
        toast('Bank account deleted.');
        navigate('/payouts');
      },
    });
  const remove = h('button', { type: 'button', onclick: ask }, 'Delete');
  actions.replaceChildren(remove);
  return h('li', { class: 'card' }, h('strong', {}, accountLabel(a)), h('p', { class: 'muted' }, a.currency), actions);
}

function payoutItem(p, accounts) {
  const account = accounts.find((a) => a.id === p.payout_account_id);
  return h(
    'li',
    { class: 'card', dataset: { payoutId: p.id } },
    h('div', { class: 'page-head' }, h('strong', {}, formatMoney(p.amount, p.currency)), h('span', { class: `badge badge-${p.status}` }, p.status)),
    h('p', { class: 'muted' }, `${account ? accountLabel(account) : 'A deleted account'} · ${fmtTime(p.created_at)}`),
    p.description ? h('p', {}, p.description) : null,
    p.failure_reason ? h('p', { class: 'error' }, `Not sent: ${p.failure_reason}`) : null,
  );
}

async function payoutsPage(page) {
  page.append(h('h1', {}, 'Payouts'));
  if (!enabled('paystack') || !enabled('payouts')) {
    page.append(h('p', {}, 'Payouts to a bank account are not available on this server.'));
    return;
  }
  const [wallets, accounts] = await Promise.all([request('GET', 'wallets'), request('GET', 'payout-accounts')]);
  const payouts = await pagedList(
    (query) => request('GET', 'payouts', { query }),
    (p) => payoutItem(p, accounts.items),
    { label: 'Your payouts', empty: 'No payouts yet: add a bank account, then pay out to it from a wallet.' },
  );
  const adding = addAccountForm(wallets.items);
  await adding.banks();
  page.append(
    accounts.items.length
      ? payoutForm(wallets.items, accounts.items)
      : h('p', { class: 'muted' }, 'Add a bank account below to pay out to it.'),
    h('h2', {}, 'Your payouts'),
    ...payouts,
    h('h2', {}, 'Your bank accounts'),
    h(
      'ul',
      { class: 'plain-list', 'aria-label': 'Your bank accounts' },
      accounts.items.length ? accounts.items.map(accountItem) : h('li', { class: 'muted' }, 'No bank accounts yet.'),
    ),
    adding.form,
  );
}

route('/payouts', payoutsPage, { live: true });
navEntry('Payouts', '/payouts');
