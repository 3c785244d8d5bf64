// Payment requests: ask someone for money, the requests asked of you and by you (by status), pay one from a wallet
// in its currency (its shareable page #/pay/{id}), decline one asked of you, cancel one you asked.
import { currentUser, loadUser, request } from '../api.js';
import { askFirst, facts, field, fmtTime, formAlert, h, idempotencyKeys, onSubmit, shareCode, toast } from '../dom.js';
import { amountError, digitsOf, formatMoney, typedAmount } from '../money.js';
import { pagedList } from '../paging.js';
import { navEntry, navigate, route } from '../router.js';
import { refuse } from '../rules.js';
import { normalised, recipientError, recipientFields } from './transfer.js';
import { walletLabel } from './wallets.js';

const STATUSES = ['OPEN', 'PAID', 'DECLINED', 'CANCELLED', 'EXPIRED'];
const LIFETIMES = [
  ['604800', '7 days'],
  ['86400', '1 day'],
  ['2592000', '30 days'],
];
const HINTS = {
  to_username: 'The username of who you ask; they pay from their wallet in the currency you choose.',
  to_wallet_number: 'The 10-digit number of one of their wallets.',
  to_phone: 'Their phone in international form, such as +15551234567.',
  to_email: 'The e-mail address of their account.',
};

function badge(status) {
  return h('span', { class: `badge badge-${status}` }, status);
}

/** Who asked whom, from the caller's side: "bob asks you" or "You ask carol". */
function headline(r, mine) {
  const amount = formatMoney(r.amount, r.currency);
  return mine ? `You ask ${r.payer.username} for ${amount}` : `${r.payee.username} asks you for ${amount}`;
}

/** Decline (the payer) or cancel (the payee) a request, after a second "Yes"; `first`: an action shown before. */
function closeAction(r, mine, done, first = null) {
  const [verb, action] = mine ? ['Cancel request', 'cancel'] : ['Decline', 'decline'];
  const actions = h('div', { class: 'row-actions' });
  const ask = () =>
    askFirst(actions, {
      question: `${mine ? 'Cancel' : 'Decline'} this request? It can no longer be paid.`,
      yes: `Yes, ${action}`,
      no: 'Keep it',
      run: async () => {
        await request('POST', `payment-requests/${r.id}/${action}`);
        toast(mine ? 'Request cancelled.' : 'Request declined.');
        done();
      },
    });
  const buttons = [first, h('button', { type: 'button', onclick: ask }, verb)].filter(Boolean);
  actions.replaceChildren(...buttons);
  return actions;
}

function requestItem(r, mine, done) {
  return h(
    'li',
    { class: 'card', dataset: { requestId: r.id } },
    h('div', { class: 'page-head' }, h('a', { href: `#/pay/${r.id}` }, h('strong', {}, headline(r, mine))), badge(r.status)),
    r.description ? h('p', {}, r.description) : null,
    h('p', { class: 'muted' }, `Asked ${fmtTime(r.created_at)} · ${r.status === 'OPEN' ? 'expires' : 'was due'} ${fmtTime(r.expires_at)}`),
    r.status === 'OPEN'
      ? closeAction(r, mine, done, mine ? null : h('a', { class: 'button primary', href: `#/pay/${r.id}` }, 'Pay'))
      : null,
  );
}

/** Ask someone for money into the caller's wallet of the currency chosen. */
function askForm(wallets) {
  const currencies = [...new Set(wallets.map((w) => w.currency))];
  const { recipientKind, recipient, kindSelect } = recipientFields('Ask', HINTS);
  const form = h(
    'form',
    { class: 'card', novalidate: true, 'aria-label': 'Ask for money' },
    h('h2', {}, 'Ask for money'),
    h('div', { class: 'row' }, recipientKind, recipient),
    h(
      'div',
      { class: 'row' },
      field({ label: 'Amount', name: 'amount', inputmode: 'decimal', autocomplete: 'off', required: true }),
      field({ label: 'Currency', name: 'currency', options: currencies.map((c) => [c, c]) }),
      field({ label: 'Expires after', name: 'expires_in', options: LIFETIMES }),
    ),
    field({ label: 'Description (optional)', name: 'description', maxlength: '255', autocomplete: 'off' }),
    formAlert(),
    h('button', { type: 'submit', class: 'primary' }, 'Send request'),
  );
  form.fieldFor = { NOT_FOUND: 'recipient', CURRENCY_MISMATCH: 'currency' };
  onSubmit(form, async (data) => {
    const kind = kindSelect.value;
    const to = normalised(kind, data.get('recipient').trim());
    const currency = data.get('currency');
    const wallet = wallets.find((w) => w.currency === currency);
    const amount = typedAmount(data.get('amount'));
    const amountProblem = wallet ? amountError(amount, digitsOf(wallet.balance)) : 'Open a wallet first.';
    const self = kind === 'to_username' && to.toLowerCase() === currentUser()?.username.toLowerCase();
    refuse({
      recipient: [recipientError(kind, to) || (self ? 'You cannot ask yourself.' : null)].filter(Boolean),
      amount: amountProblem ? [amountProblem] : [],
    });
    const body = { [kind]: to, amount, currency, expires_in: JSON.parse(data.get('expires_in')) };
    if (data.get('description').trim()) body.description = data.get('description').trim();
    const made = await request('POST', 'payment-requests', { body });
    toast(`Asked ${made.payer.username} for ${formatMoney(made.amount, made.currency)}.`);
    navigate(`/pay/${made.id}`);
  });
  form.words = { NOT_FOUND: 'No one has this name, number, phone or e-mail.' };
  return form;
}

async function requestsPage(page, _params, query) {
  const status = STATUSES.includes(query.get('status')) ? query.get('status') : '';
  const again = () => navigate(`/requests${status ? `?status=${status}` : ''}`);
  const list = (role, own, label, empty) =>
    pagedList(
      (at) => request('GET', 'payment-requests', { query: { role, status, ...at } }),
      (r) => requestItem(r, own, again),
      { label, empty: status ? 'None with this status.' : empty },
    );
  const [wallets, asked, mine] = await Promise.all([
    request('GET', 'wallets'),
    list('payer', false, 'Asked of you', 'No one has asked you for money yet.'),
    list('payee', true, 'Asked by you', [
      'You have not asked anyone yet: ask with the form above, or ',
      h('a', { href: '#/wallets' }, 'share your wallet number'),
      '.',
    ]),
  ]);
  const filter = h(
    'form',
    { class: 'inline-form', novalidate: true, 'aria-label': 'Filter requests' },
    h(
      'div',
      { class: 'row' },
      field({ label: 'Status', name: 'status', value: status, options: [['', 'Any'], ...STATUSES.map((s) => [s, s])] }),
    ),
    formAlert(),
    h('button', { type: 'submit' }, 'Apply'),
  );
  onSubmit(filter, async (data) => navigate(`/requests${data.get('status') ? `?status=${data.get('status')}` : ''}`));
  page.append(
    h('h1', {}, 'Payment requests'),
    askForm(wallets.items),
    filter,
    h('h2', {}, 'Asked of you'),
    ...asked,
    h('h2', {}, 'Asked by you'),
    ...mine,
  );
}

/** The payer's form: a wallet in the request's currency and "Pay"; one Idempotency-Key per try, kept for a retry. */
function payForm(r, wallets) {
  const usable = wallets.filter((w) => w.currency === r.currency);
  const amount = formatMoney(r.amount, r.currency);
  if (!usable.length) {
    return h('p', { class: 'form-alert' }, `You have no ${r.currency} wallet to pay from: open one under Wallets first.`);
  }
  const form = h(
    'form',
    { class: 'card narrow', novalidate: true, 'aria-label': 'Pay this request' },
    field({
      label: 'Pay from',
      name: 'from_wallet_id',
      options: usable.map((w) => [w.id, `${walletLabel(w)} · ${formatMoney(w.available_balance ?? w.balance, w.currency)}`]),
    }),
    formAlert(),
    h('button', { type: 'submit', class: 'primary' }, `Pay ${amount}`),
  );
  form.fieldFor = { INSUFFICIENT_FUNDS: 'from_wallet_id', DAILY_LIMIT_EXCEEDED: 'from_wallet_id' };
  const once = idempotencyKeys(form);
  const button = form.querySelector('button[type=submit]');
  onSubmit(form, async (data) => {
    button.textContent = 'Paying…';
    try {
      const body = { from_wallet_id: data.get('from_wallet_id') };
      const tx = await once((key) =>
        request('POST', `payment-requests/${r.id}/pay`, { body, headers: { 'Idempotency-Key': key } }),
      );
      toast(`Paid ${formatMoney(tx.amount, tx.currency)} to ${r.payee.username}.`, 'ok', { key: tx.id });
      navigate(`/pay/${r.id}`);
    } finally {
      button.textContent = `Pay ${amount}`;
    }
  });
  return form;
}

async function payPage(page, { id }) {
  const [r, wallets, me] = await Promise.all([
    request('GET', `payment-requests/${id}`),
    request('GET', 'wallets'),
    currentUser() ? Promise.resolve(currentUser()) : loadUser(),
  ]);
  const mine = r.payee.username === me.username;
  // The link anyone may be sent (they sign in first when they are not) and its QR code, for the payee to share.
  const shared = mine && r.status === 'OPEN' ? await request('GET', `payment-requests/${r.id}/link`) : null;
  const again = () => navigate(`/pay/${r.id}`);
  const parts = [
    h('p', { class: 'crumbs' }, h('a', { href: '#/requests' }, '← Payment requests')),
    h('div', { class: 'page-head' }, h('h1', {}, headline(r, mine)), badge(r.status)),
    h(
      'section',
      { class: 'card' },
      facts([
        ['From', mine ? 'You' : r.payee.username],
        ['To', mine ? r.payer.username : 'You'],
        ['Amount', h('strong', {}, formatMoney(r.amount, r.currency))],
        r.description ? ['Description', r.description] : null,
        ['Status', r.status],
        ['Asked', fmtTime(r.created_at)],
        ['Expires', fmtTime(r.expires_at)],
        r.transaction_id ? ['Payment', h('a', { href: `#/transactions/${r.transaction_id}` }, 'The transfer that paid it')] : null,
      ]),
    ),
    shared
      ? h(
          'section',
          { class: 'card', 'aria-label': 'Share' },
          h('h2', {}, 'Share this request'),
          h('p', {}, `Send ${r.payer.username} this link, or let them scan the code: it opens the request with its Pay button.`),
          shareCode(shared, `QR code of the link to this request for ${formatMoney(r.amount, r.currency)}`),
        )
      : null,
    !mine && r.status === 'OPEN' ? payForm(r, wallets.items) : null,
    r.status === 'OPEN' ? closeAction(r, mine, again) : null,
  ];
  page.append(...parts.filter(Boolean)); // append() would write a part left out (null) as the text "null"
}

route('/requests', requestsPage, { live: true });
route('/pay/:id', payPage, { live: true });
navEntry('Requests', '/requests');
