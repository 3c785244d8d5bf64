// Wallets: every wallet with its balance, totals per currency, opening a wallet; one wallet's deposit and withdraw.
import { enabled, request } from '../api.js';
import { facts, field, fmtTime, formAlert, h, idempotencyKeys, messageFor, onSubmit, shareCode, toast } from '../dom.js';
import { amountError, digitsOf, formatMoney, typedAmount } from '../money.js';
import { navEntry, navigate, route } from '../router.js';
import { currencyError, refuse } from '../rules.js';
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

// A wallet's link and QR code never change: asked once per load, not at each live redraw of the page.
const links = new Map();

function walletLink(wallet) {
  if (!links.has(wallet.id)) {
    links.set(wallet.id, request('GET', `wallets/${wallet.id}/link`).catch((error) => {
      links.delete(wallet.id); // asked again next time
      throw error;
    }));
  }
  return links.get(wallet.id);
}

/** "Share your wallet number": a wallet's number, and the link that pays it with its QR code, which arrive after
 * the page is drawn (the server makes them); a choice of wallet when there are several. */
function shareCard(wallets) {
  const shown = h('div', { class: 'share-wallet' });
  const show = (wallet) => {
    const code = h('div', { class: 'muted' }, 'Making the code…');
    shown.replaceChildren(
      h('p', {}, 'Anyone can pay you with the number ', h('strong', { class: 'mono' }, wallet.number), ', or by scanning the code: it opens the send form with your number in it.'),
      code,
    );
    walletLink(wallet)
      .then((shared) => code.replaceWith(shareCode(shared, `QR code to pay ${walletLabel(wallet)}`)))
      .catch((error) => code.replaceChildren(`No code now: ${messageFor(error)}`));
  };
  const choice =
    wallets.length > 1
      ? field({ label: 'Wallet to share', name: 'share_wallet', options: wallets.map((w) => [w.id, walletLabel(w)]) })
      : null;
  choice?.querySelector('select').addEventListener('change', (event) => show(wallets.find((w) => w.id === event.target.value)));
  show(wallets[0]);
  return h('section', { class: 'card', 'aria-labelledby': 'share-title' }, h('h2', { id: 'share-title' }, 'Share your wallet number'), choice, shown);
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
      field({ label: 'Currency', name: 'currency', required: true, autocomplete: 'off', hint: 'e.g. EUR' }),
      field({ label: 'Name (optional)', name: 'name', maxlength: '64', autocomplete: 'off', hint: 'e.g. Savings' }),
    ),
    formAlert(),
    h('button', { type: 'submit' }, 'Open wallet'),
  );
  onSubmit(form, async (data) => {
    const body = { currency: data.get('currency').trim() };
    refuse({ currency: currencyError(body.currency) ? [currencyError(body.currency)] : [] });
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
    ...(items.length ? [shareCard(items)] : []), // append() would write a null as text
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
    const amount = typedAmount(data.get('amount'));
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

/** Download a wallet's statement (CSV or PDF) for a period: fetched with the session's token, saved as a file. */
function statementForm(wallet) {
  const form = h(
    'form',
    { class: 'card', novalidate: true, 'aria-label': 'Statement' },
    h('h2', {}, 'Statement'),
    h(
      'div',
      { class: 'row' },
      field({ label: 'From', name: 'from', type: 'date', hint: 'Empty: since the wallet opened.' }),
      field({ label: 'To', name: 'to', type: 'date', hint: 'Empty: until now.' }),
      field({ label: 'Format', name: 'format', options: [['csv', 'CSV (spreadsheet)'], ['pdf', 'PDF']] }),
    ),
    formAlert(),
    h('button', { type: 'submit' }, 'Download statement'),
  );
  onSubmit(form, async (data) => {
    const [from, to] = [data.get('from'), data.get('to')];
    if (from && to && from >= to) throw { code: 'VALIDATION_ERROR', details: { to: ['The end date must be after the start date.'] } };
    const response = await request('GET', `wallets/${wallet.id}/statement`, {
      query: { from, to, format: data.get('format') },
      raw: true,
    });
    const named = /filename="([^"]+)"/.exec(response.headers.get('Content-Disposition') || '');
    const url = URL.createObjectURL(await response.blob());
    h('a', { href: url, download: named ? named[1] : `statement.${data.get('format')}` }).click();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
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
      enabled('self_deposit')
        ? moneyForm(wallet, { title: 'Deposit', action: 'deposit', button: 'Deposit', done: 'Deposited' })
        : null,
      moneyForm(wallet, { title: 'Withdraw', action: 'withdraw', button: 'Withdraw', done: 'Withdrew' }),
      paystackForm(wallet),
    ),
    statementForm(wallet),
  );
}

route('/wallets', walletsPage, { live: true });
route('/wallets/:id', walletPage, { live: true });
navEntry('Wallets', '/wallets');
